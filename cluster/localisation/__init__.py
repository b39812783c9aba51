"""Single-molecule localisation: PYME's ``LatGaussFitFR`` task, reimplemented and vectorised.

:func:`localise_frames` takes a frame getter, the frame indices of a task and the series metadata
(flat dotted keys) and returns rows of :data:`FIT_RESULTS_DTYPE`.  Steps: camera model (ADU →
effective photons, :mod:`.camera`, with sCMOS dark, variance and flat-field maps from
:mod:`.camera_maps`); background from the ``Analysis.BGRange`` frames (running mean of the
pixels outside spots, or percentile with ``Analysis.PCTBackground``) or, with none, from the
frame itself (:mod:`.background`); candidates where the PSF-matched filter exceeds ``Analysis.
DetectionThreshold`` × 5 σ of its noise, σ from the camera noise model at the local background
plus each pixel's read-noise variance (:mod:`.detection`); a Poisson + read-noise
maximum-likelihood fit of a pixel-integrated Gaussian with flat background, Newton's method
(:mod:`.fitting`).  The per-pixel loops (background, detection filter, fit, drawing fits into
frames) are numba-compiled and cached on disk, so a new worker process loads them (a fraction of a
second, once) rather than compiling them.
In crowded frames (:mod:`.neighbours`) duplicate fits are dropped, frames with close or too wide
fits are searched again in what the fits leave unexplained (hidden neighbours), a significantly
too wide fit is restarted as two emitters, and fits are refitted with their neighbours' fitted
light subtracted until that light stops changing.

Differences from PYME, on purpose:

- the fit runs on the raw (offset-corrected) ROI with a free flat background rather than on the
  background-subtracted ROI, so the background frames' noise and the ghosts of their spots do
  not enter it; ``background`` is still reported as the fitted level minus
  ``subtractedBackground`` (what PYME's fit sees) when ``Analysis.subtractBackground`` is on;
- the background gradient terms ``bx``/``by`` are not fitted (they correlate with the position
  and cost precision): reported as 0 with error −5000 (not estimable);
- a weak prior (25 %) on σ keeps faint spots' σ from running away; positions are unaffected
  (their Cramér–Rao bound is the same with σ known).  It is centred on ``Analysis.PSFSigmaGuess``,
  or on the median σ of a batch's bright spots when that differs (a wrong guess then costs no
  precision);
- ``DetectionThreshold`` is a significance: 1.0 = 5 σ of the matched filter's noise.
- ``Analysis.DebounceRadius`` (px, default 1.5 here, 5 in PYME) applies to the fitted positions
  (the dimmer of two closer fits is dropped), not to the candidates, so it never stops close
  neighbours from being fitted.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable, Sequence

import numpy as np

from rules.metadata import MetadataLike
from rules.settings import FIT_MODULES, SettingError, check_analysis

from . import background as _background
from .camera import CameraError, CameraModel
from .camera_maps import CameraMapError, CameraMaps, load_camera_maps
from .detection import detect, kernel_mean_variance
from .fitting import fit_rois
from .neighbours import DEBOUNCE_RADIUS_PX, Fits, resolve_crowding
from .results import (
    FIT_RESULTS_DTYPE,
    NOT_ESTIMABLE,
    RESULT_NOT_CONVERGED,
    RESULT_OK,
    RESULT_SINGULAR,
    empty_results,
    pack_results,
)

logger = logging.getLogger(__name__)

__all__ = ["localise_frames", "preload", "FIT_RESULTS_DTYPE", "LocalisationError",
           "FitSettings", "CameraModel", "CameraMaps"]

SUPPORTED_FIT_MODULES = FIT_MODULES
#: Pixels detected and fitted together (64 frames of 256×256): larger batches amortise numpy's
#: per-call overhead, this bound keeps the working set to a few hundred MB for any frame size.
BATCH_PIXELS = 64 * 256 * 256
#: Candidates fitted together (bounds the fit's working set to ~100 MB).
FIT_CHUNK = 8192
#: Detection threshold in what the fits leave unexplained, relative to the first search (the
#: fits' own errors add to the noise there).
RESIDUAL_THRESHOLD = 1.3
#: The σ prior is centred on the PSF σ of the batch's bright spots (photon count above this many
#: standard errors, at least ``PSF_LEARN_COUNT`` of them) when that differs from
#: ``Analysis.PSFSigmaGuess`` by more than ``PSF_LEARN_TOLERANCE``.
PSF_LEARN_SNR = 10.0
PSF_LEARN_COUNT = 20
PSF_LEARN_TOLERANCE = 0.05
#: The PSF σ is learned from about this many of a batch's candidates (fitted first).
PSF_LEARN_SAMPLE = 400
#: Tile size (px) over which the background level sets the detection noise σ.
NOISE_BLOCK = 16


class LocalisationError(ValueError):
    """Metadata asks for something this localiser cannot do, or is malformed."""


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """The ``Analysis.*`` settings of a localisation task, parsed and checked."""

    threshold: float
    bg_range: tuple[int, int]
    start_at: int
    laser_on: int
    subtract_background: bool
    roi_half_size: int
    psf_sigma_nm: float
    pct_background: float
    voxel_nm: tuple[float, float]
    debounce_px: float = DEBOUNCE_RADIUS_PX

    @classmethod
    def from_metadata(cls, md: MetadataLike) -> "FitSettings":
        try:
            check_analysis(md)  # the schema the metadata panel and the chain check use
        except SettingError as exc:
            raise LocalisationError(str(exc)) from exc
        module = md.get("Analysis.FitModule", None)
        if module not in SUPPORTED_FIT_MODULES:
            raise LocalisationError(
                f"Analysis.FitModule {module!r} is not supported; Spoolside fits "
                f"{', '.join(SUPPORTED_FIT_MODULES)} only")
        try:
            n_bg = int(md.get("Analysis.NumBGFrames", 10))
            bg_range = md.get("Analysis.BGRange", None)
            bg_range = (-n_bg, 0) if bg_range is None else (int(bg_range[0]), int(bg_range[1]))
            start_at = int(md.get("Analysis.StartAt", 0))
            vx = float(md["voxelsize.x"]) * 1000.0
            vy = float(md.get("voxelsize.y", md["voxelsize.x"])) * 1000.0
            settings = cls(
                threshold=float(md.get("Analysis.DetectionThreshold", 1.0)),
                bg_range=bg_range,
                start_at=start_at,
                laser_on=int(md.get("EstimatedLaserOnFrameNo", start_at)),
                subtract_background=bool(md.get("Analysis.subtractBackground", True)),
                roi_half_size=int(md.get("Analysis.ROISize", 5)),
                psf_sigma_nm=float(md.get("Analysis.PSFSigmaGuess", 250.0 / 2.35)),
                pct_background=float(md.get("Analysis.PCTBackground", 0.0)),
                voxel_nm=(vx, vy),
                debounce_px=float(md.get("Analysis.DebounceRadius", DEBOUNCE_RADIUS_PX)))
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise LocalisationError(f"bad localisation metadata: {exc}") from exc
        if not (vx > 0 and vy > 0):
            raise LocalisationError(f"voxelsize.x/y must be > 0 (µm), got {vx / 1000}, {vy / 1000}")
        if settings.roi_half_size < 2:
            raise LocalisationError(f"Analysis.ROISize must be >= 2, got {settings.roi_half_size}")
        if not settings.threshold > 0:
            raise LocalisationError(
                f"Analysis.DetectionThreshold must be > 0, got {settings.threshold}")
        return settings


class _FrameCache:
    """Frames in effective photon units, loaded once each while a task runs."""

    def __init__(self, get_frame: Callable[[int], np.ndarray], camera: CameraModel):
        self._get = get_frame
        self._camera = camera
        self.maps = CameraMaps()
        self.read_variance: float | np.ndarray = 0.0
        self._frames: dict[int, np.ndarray] = {}

    def raw(self, index: int) -> np.ndarray:
        raw = np.asarray(self._get(index))
        if raw.ndim == 3 and raw.shape[2] == 1:
            raw = raw[:, :, 0]
        if raw.ndim != 2:
            raise LocalisationError(f"frame {index} has shape {raw.shape}, expected 2-D")
        return raw

    def __getitem__(self, index: int) -> np.ndarray:
        frame = self._frames.get(index)
        if frame is None:
            frame = self.maps.to_units(self._camera, self.raw(index))
            self._frames[index] = frame
        return frame

    def forget_before(self, index: int) -> None:
        for key in [k for k in self._frames if k < index]:
            del self._frames[key]


def _block_means(maps: np.ndarray, block: int) -> np.ndarray:
    """Means of the ``block``×``block`` tiles of each map (the last tile of an axis also
    covers any remainder)."""
    n, w, h = maps.shape
    bx, by = max(1, w // block), max(1, h // block)
    if w % block or h % block or w < block or h < block:
        xs = np.minimum(np.arange(w) // block, bx - 1)
        ys = np.minimum(np.arange(h) // block, by - 1)
        sums = np.zeros((n, bx, by))
        np.add.at(sums, (slice(None), xs[:, None], ys[None, :]), maps)  # type: ignore[arg-type]
        counts = np.bincount(xs, minlength=bx)[:, None] * np.bincount(ys, minlength=by)[None, :]
        return (sums / counts).astype(np.float32)
    sums = maps.reshape(n, bx, block, h).sum(axis=2, dtype=np.float32)
    return sums.reshape(n, bx, by, block).sum(axis=3) / np.float32(block * block)


def _background_stack(cache: _FrameCache, batch: Sequence[int], settings: FitSettings,
                      frames: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Background maps of the frames of ``batch`` ``(n, W, H)`` and the variance of each map's
    pixel noise relative to a frame's (0 for maps estimated from the frame itself).
    ``frames`` are the batch's frames stacked, when the caller has them."""
    windows = [_background.bg_frame_indices(index, settings.bg_range, settings.laser_on)
               for index in batch]
    maps: list[np.ndarray | None] = [None] * len(batch)
    rel_var = np.zeros(len(batch), np.float32)
    temporal = [k for k, window in enumerate(windows) if len(window)]
    if temporal and settings.pct_background > 0:
        for k in temporal:
            maps[k] = _background.from_frames([cache[i] for i in windows[k]],
                                              settings.pct_background)
            rel_var[k] = math.pi / 2 / len(windows[k])
    elif temporal:
        # mean of the pixels outside spots over each window, every background frame cleaned once
        needed = sorted({i for k in temporal for i in windows[k]})
        row = {index: r for r, index in enumerate(needed)}
        means = _background.window_means(
            np.stack([cache[i] for i in needed]), cache.read_variance,
            [row[windows[k].start] for k in temporal],
            [row[windows[k].stop - 1] + 1 for k in temporal])
        rel_var[temporal] = [1.0 / len(windows[k]) for k in temporal]
        if len(temporal) == len(batch):
            return means, rel_var
        for k, mean in zip(temporal, means):
            maps[k] = mean
    own = [k for k, window in enumerate(windows) if not len(window)]
    if len(own) == len(batch) and frames is not None:
        return _background.from_frame(frames), rel_var
    if own:
        for k, estimate in zip(own, _background.from_frame(np.stack([cache[batch[k]]
                                                                     for k in own]))):
            maps[k] = estimate
    return np.stack([m for m in maps if m is not None]), rel_var     # every map is set


def localise_frames(get_frame: Callable[[int], np.ndarray], frame_indices: Sequence[int],
                    md: MetadataLike, *,
                    maps: CameraMaps | Callable[[tuple[int, int]], CameraMaps] | None = None
                    ) -> np.ndarray:
    """Localise every spot in the given frames; returns rows of :data:`FIT_RESULTS_DTYPE`.

    ``get_frame(i)`` returns frame ``i`` as a 2-D array in ADU (axis 0 = x); it is also called for
    the background frames of ``Analysis.BGRange``.  Frames before ``Analysis.StartAt`` give no
    results.  ``maps`` are the series' camera maps, or a function of the frame shape returning
    them (a worker's cache); by default the maps ``md`` names are read as local files.
    """
    settings = FitSettings.from_metadata(md)
    try:
        camera = CameraModel.from_metadata(md)
    except CameraError as exc:
        raise LocalisationError(str(exc)) from exc
    indices = sorted({int(i) for i in frame_indices if int(i) >= settings.start_at})
    cache = _FrameCache(get_frame, camera)
    out = []
    if not indices:
        return empty_results(0)
    shape = cache.raw(indices[0]).shape
    try:
        if maps is None:
            maps = load_camera_maps(md, shape)
        elif callable(maps):
            maps = maps(shape)
    except CameraMapError as exc:
        raise LocalisationError(str(exc)) from exc
    cache.maps = maps
    pixel_var = maps.read_variance_units(camera)
    cache.read_variance = camera.gamma if pixel_var is None else pixel_var
    noise = _NoiseModel(camera, pixel_var, settings.psf_sigma_nm / settings.voxel_nm[0])
    batch_frames = max(1, BATCH_PIXELS // cache[indices[0]].size)
    for start in range(0, len(indices), batch_frames):
        batch = indices[start:start + batch_frames]
        cache.forget_before(min(_background.bg_frame_indices(
            batch[0], settings.bg_range, settings.laser_on).start, batch[0]))
        out.append(_localise_batch(cache, batch, settings, camera, noise))
    if not out:
        return empty_results(0)
    return np.concatenate(out)


class _NoiseModel:
    """Noise of the data in effective photon units: shot noise from the camera model, read
    noise uniform (``Camera.ReadNoise``) or per pixel (a variance map)."""

    def __init__(self, camera: CameraModel, pixel_var: np.ndarray | None, psf_px: float):
        self.pixel_var = pixel_var
        self.gamma: float | np.ndarray
        self.detect_var: np.ndarray | None
        if pixel_var is None:
            self.shot = camera
            self.gamma = camera.gamma
            self.detect_var = None
        else:
            self.shot = dataclasses.replace(camera, read_noise=0.0)
            self.gamma = pixel_var
            # matched-filter noise: each pixel's variance weighted by the squared kernel
            self.detect_var = kernel_mean_variance(pixel_var, psf_px)

    def sigma(self, level, xi=None, yi=None):
        """Noise σ of a pixel at background ``level`` (at pixels ``xi, yi`` for a map)."""
        sigma = self.shot.noise_sigma_units(level)
        if self.detect_var is None:
            return sigma
        read = self.detect_var.min() if xi is None else self.detect_var[xi, yi]
        return np.sqrt(sigma * sigma + read)

    def rois(self, gx, gy):
        """Read-noise variance of the fit: one value, or per ROI pixel."""
        return self.gamma if self.pixel_var is None else self.pixel_var[gx, gy]


def _psf_from_fits(theta, cov, converged, psf_px) -> float | None:
    """The PSF σ (px) of the bright, converged fits (median), when there are enough of them and
    it differs from ``psf_px`` (``Analysis.PSFSigmaGuess``) by more than :data:`PSF_LEARN_TOLERANCE`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = theta[:, 0] / np.sqrt(cov[:, 0, 0])
    bright = converged & np.isfinite(snr) & (snr > PSF_LEARN_SNR)
    if bright.sum() < PSF_LEARN_COUNT:
        return None
    sigma = float(np.median(theta[bright, 3]))
    return sigma if abs(sigma / psf_px - 1.0) > PSF_LEARN_TOLERANCE else None


def _fit(rois, mask, gamma, psf_px, theta0=None):
    """:func:`fit_rois` in chunks of :data:`FIT_CHUNK`: ``(theta, cov, converged, nchi2)``."""
    chunks = [fit_rois(rois[i:i + FIT_CHUNK], mask[i:i + FIT_CHUNK],
                       gamma if np.ndim(gamma) == 0 else gamma[i:i + FIT_CHUNK], psf_px,
                       theta0=None if theta0 is None else theta0[i:i + FIT_CHUNK])
              for i in range(0, len(rois), FIT_CHUNK)]
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


def _localise_batch(cache: _FrameCache, batch: Sequence[int], settings: FitSettings,
                    camera: CameraModel, noise: _NoiseModel) -> np.ndarray:
    t0 = time.perf_counter()
    frames = np.stack([cache[i] for i in batch])
    bg, rel_var = _background_stack(cache, batch, settings, frames)
    vx, vy = settings.voxel_nm
    psf_px = settings.psf_sigma_nm / vx
    # noise of (frame − background): camera noise at the local background level (mean over
    # BLOCK×BLOCK tiles), inflated by the noise of the background estimate itself
    levels = _block_means(bg, NOISE_BLOCK)
    inflate = np.sqrt(1.0 + rel_var)
    floor = noise.sigma(np.maximum(levels.min(axis=(1, 2)), 0.0)) * inflate

    def noise_at(fi, xi, yi):
        level = levels[fi, np.minimum(xi // NOISE_BLOCK, levels.shape[1] - 1),
                       np.minimum(yi // NOISE_BLOCK, levels.shape[2] - 1)]
        return noise.sigma(level, xi, yi) * inflate[fi]

    f, ix, iy = detect(frames, bg, floor, noise_at, threshold=settings.threshold,
                       psf_sigma_px=psf_px)
    t1 = time.perf_counter()
    n = f.size
    if n == 0:
        logger.debug("frames %d-%d: 0 candidates (detection %.1f ms)", batch[0], batch[-1],
                     1e3 * (t1 - t0))
        return empty_results(0)

    r = settings.roi_half_size
    _, w, h = frames.shape

    def candidates(fi, xi, yi, minus=None):
        """Fits of candidates at ``(fi, xi, yi)``: of their ROIs of the frames, less
        ``minus(fi, gx, gy)`` when given (the ROIs kept are the frames' data)."""
        off = np.arange(-r, r + 1)
        cgx = xi[:, None, None] + off[None, :, None]
        cgy = yi[:, None, None] + off[None, None, :]
        cmask = (cgx >= 0) & (cgx < w) & (cgy >= 0) & (cgy < h)
        cgx, cgy = np.clip(cgx, 0, w - 1), np.clip(cgy, 0, h - 1)
        crois = frames[fi[:, None, None], cgx, cgy]
        cgamma = noise.rois(cgx, cgy)
        fitted = crois if minus is None else crois - minus(fi, cgx, cgy)
        return Fits(fi, xi, yi, cgx, cgy, cmask, crois, cgamma,
                    *_fit(fitted, cmask, cgamma, psf_px), group=np.arange(len(fi)))

    def search(busy, model):
        """Candidates in frames ``busy`` once the ``model`` of their fits is subtracted."""
        return detect(frames, bg, floor[busy], lambda fi, xi, yi: noise_at(busy[fi], xi, yi),
                      threshold=settings.threshold * RESIDUAL_THRESHOLD, psf_sigma_px=psf_px,
                      rows=busy, model=model)

    # the PSF σ is learned from a sample of the candidates (every k-th: as bright as the rest),
    # refitted when it differs from the guess; the others are then fitted once, with it
    sample = np.zeros(f.size, bool)
    sample[::max(1, f.size // PSF_LEARN_SAMPLE)] = True
    first = candidates(f[sample], ix[sample], iy[sample])
    learned = _psf_from_fits(first.theta, first.cov, first.converged, psf_px)
    if learned is not None:     # refit with the σ prior centred on the series' real PSF
        logger.debug("PSF σ %.2f px from the bright spots (guess %.2f px)", learned, psf_px)
        psf_px = learned
        first.set_fit(slice(None), _fit(first.rois, first.mask, first.gamma, psf_px,
                                        first.theta))
    if not sample.all():        # every candidate, in detection order
        first = first.extend(candidates(f[~sample], ix[~sample], iy[~sample]))
        first = first.subset(np.argsort(np.concatenate([np.flatnonzero(sample),
                                                        np.flatnonzero(~sample)])))
        first.group = np.arange(len(first))
    fits = resolve_crowding(first, candidates, search,
                            lambda rois, mask, gamma, theta0=None: _fit(rois, mask, gamma,
                                                                        psf_px, theta0),
                            psf_px=psf_px, frame_shape=(w, h), debounce_px=settings.debounce_px)
    f, ix, iy, gx, gy, mask = fits.f, fits.ix, fits.iy, fits.gx, fits.gy, fits.mask
    theta, cov, converged, nchi2 = fits.theta, fits.cov, fits.converged, fits.nchi2
    n = f.size
    t2 = time.perf_counter()

    unit = camera.adu_per_unit
    n_ph, x, y, s, b = theta.T
    var = np.einsum("npp->np", cov)
    singular = ~np.isfinite(var).all(axis=1) | (var < 0).any(axis=1)
    err = np.sqrt(np.where(singular[:, None], np.nan, np.abs(var)))
    two_pi_s2 = 2.0 * math.pi * s * s
    amp = n_ph / two_pi_s2
    # delta method for A = N / (2π s²)
    grad = np.stack([1.0 / two_pi_s2, -2.0 * amp / s], axis=1)
    sub = cov[:, [0, 3]][:, :, [0, 3]]
    amp_err = np.sqrt(np.abs(np.einsum("ni,nij,nj->n", grad, sub, grad)))
    bg_roi = bg[f[:, None, None], gx, gy]
    sub_bg = (bg_roi * mask).sum(axis=(1, 2)) / mask.sum(axis=(1, 2)) * unit
    if not settings.subtract_background:
        sub_bg = np.zeros(n)

    def errors(values):
        return np.where(singular, NOT_ESTIMABLE, values)

    code = np.where(singular, RESULT_SINGULAR, np.where(converged, RESULT_OK,
                                                         RESULT_NOT_CONVERGED))
    results = pack_results(
        t_index=np.asarray(batch)[f],
        params={"A": amp * unit, "x0": (ix - r + x) * vx, "y0": (iy - r + y) * vy,
                "sigma": s * vx, "background": b * unit - sub_bg},
        errors={"A": errors(amp_err * unit), "x0": errors(err[:, 1] * vx),
                "y0": errors(err[:, 2] * vy), "sigma": errors(err[:, 3] * vx),
                "background": errors(err[:, 4] * unit)},
        result_code=code,
        x_slice=(np.maximum(ix - r, 0), np.minimum(ix + r + 1, w)),
        y_slice=(np.maximum(iy - r, 0), np.minimum(iy + r + 1, h)),
        subtracted_background=sub_bg, nchi2=nchi2)
    logger.debug("frames %d-%d: %d candidates, detection %.1f ms, fit %.1f ms",
                 batch[0], batch[-1], n, 1e3 * (t1 - t0), 1e3 * (t2 - t1))
    return results


def preload() -> float:
    """Load the compiled loops (numba's on-disk cache, or compile them once when there is none)
    by localising a tiny synthetic series that takes every path (frame and temporal background,
    close neighbours); returns the CPU seconds it took.  A worker calls it as it starts, so its
    first task runs at full speed."""
    from .synthetic import SIMULATED_CAMERA, expected_image

    start = time.process_time()
    rng = np.random.default_rng(0)
    spots = np.array([[10.0, 10.0], [11.6, 10.4], [22.0, 20.0]])        # a close pair
    frames = [SIMULATED_CAMERA.expose(expected_image(spots, 2000.0, 1.3, (32, 32),
                                                     background=20.0), rng) for _ in range(3)]
    md = {**SIMULATED_CAMERA.metadata(), "voxelsize.x": 0.1, "voxelsize.y": 0.1,
          "Analysis.FitModule": SUPPORTED_FIT_MODULES[0], "Analysis.PSFSigmaGuess": 100.0}
    for bg_range in ([0, 0], [-2, 0]):
        localise_frames(frames.__getitem__, [1, 2], {**md, "Analysis.BGRange": bg_range})
    return time.process_time() - start
