"""Simulated single-molecule frames for tests and the benchmark.

Isolated emitters, a Gaussian PSF integrated over square pixels (:func:`expected_image`, also used
by ``cluster.simulator``) and the camera's noise and gain (:meth:`CameraModel.expose`); frames are
uint16 with PYME's axes (axis 0 = x).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import erf

from .camera import CameraModel
from .camera_maps import CameraMaps

#: The sCMOS-like camera both simulators (these frames and ``cluster.simulator``) default to.
SIMULATED_CAMERA = CameraModel(ad_offset=100.0, electrons_per_count=0.5, em_gain=1.0,
                               read_noise=1.5, noise_factor=1.0)


def simulate_scmos_maps(shape: tuple[int, int], rng: np.random.Generator, *,
                        median_read_noise: float = 2.0, log_spread: float = 0.4,
                        hot_fraction: float = 0.002, hot_read_noise: tuple = (10.0, 50.0),
                        offset: float = 100.0, offset_spread: float = 3.0) -> CameraMaps:
    """sCMOS camera maps like a real sensor's: read noise (e⁻) lognormal around
    ``median_read_noise``, a ``hot_fraction`` of hot pixels with read noise log-uniform in
    ``hot_read_noise``, and a per-pixel offset (ADU) around ``offset``."""
    noise = median_read_noise * np.exp(rng.normal(0.0, log_spread, shape))
    hot = rng.random(shape) < hot_fraction
    lo, hi = np.log(hot_read_noise[0]), np.log(hot_read_noise[1])
    noise[hot] = np.exp(rng.uniform(lo, hi, int(hot.sum())))
    dark = offset + rng.normal(0.0, offset_spread, shape)
    return CameraMaps(dark=dark.astype(np.float32), variance=(noise ** 2).astype(np.float32))


def integrated_psf(centres: np.ndarray, sigma: float, size: int, pixel: float = 1.0) -> np.ndarray:
    """Fraction of each emitter's photons in each pixel along one axis: ``(n, size)``.

    ``centres`` and ``sigma`` are in the unit of ``pixel`` (the pixel size); pixel ``i`` is centred
    at ``i × pixel`` (PYME's convention).
    """
    edges = (np.arange(size + 1) - 0.5) * pixel
    cdf = 0.5 * erf((edges[None, :] - centres[:, None]) / (np.sqrt(2.0) * sigma))
    return np.diff(cdf, axis=1)


def expected_image(positions: np.ndarray, photons, sigma: float, shape: tuple[int, int],
                   pixel: float = 1.0, background: float = 0.0) -> np.ndarray:
    """Expected photons per pixel (axis 0 = x) of emitters at ``positions`` ``(n, 2)`` with
    Gaussian PSFs of ``sigma`` integrated over square pixels, over a uniform ``background``.

    ``photons`` is one number or one per emitter; lengths are in the unit of ``pixel``.
    """
    ex = integrated_psf(positions[:, 0], sigma, shape[0], pixel)
    ey = integrated_psf(positions[:, 1], sigma, shape[1], pixel)
    return (ex * np.asarray(photons)[..., None]).T @ ey + background


def place_isolated(rng: np.random.Generator, n: int, shape: tuple[int, int], *,
                   min_distance: float, margin: float) -> np.ndarray:
    """Up to ``n`` random positions (px) at least ``min_distance`` apart and ``margin`` from the
    border."""
    points: list[np.ndarray] = []
    for _ in range(50 * n):
        p = rng.uniform([margin, margin], [shape[0] - 1 - margin, shape[1] - 1 - margin])
        if all(np.hypot(*(p - q)) >= min_distance for q in points):
            points.append(p)
            if len(points) == n:
                break
    return np.array(points).reshape(-1, 2)


def simulate_frames(n_frames: int, *, shape: tuple[int, int] = (256, 256),
                    emitters_per_frame: int = 30, photons: float = 1000.0,
                    background: float = 50.0, psf_sigma_nm: float = 130.0,
                    pixel_nm: float = 100.0, camera: CameraModel = SIMULATED_CAMERA,
                    min_distance_px: float = 8.0, margin_px: float = 3.0, seed: int = 0,
                    maps: CameraMaps | None = None):
    """Simulate frames with new isolated emitters in each frame (an sCMOS camera's per-pixel
    offset and read noise from ``maps``, when given).

    Returns ``(frames, truth, metadata)``: uint16 ``(n_frames, W, H)`` ADU, a ``(k, 3)`` array of
    ``frame, x_nm, y_nm`` (PYME's convention: pixel ``i`` centred at ``i × pixel_nm``) and
    matching flat metadata (camera, voxel size, ``Analysis.*`` for ``LatGaussFitFR``).
    """
    rng = np.random.default_rng(seed)
    sigma_px = psf_sigma_nm / pixel_nm
    frames = np.empty((n_frames,) + tuple(shape), np.uint16)
    truth = []
    for t in range(n_frames):
        pos = place_isolated(rng, emitters_per_frame, shape, min_distance=min_distance_px,
                             margin=margin_px)
        expected = expected_image(pos, photons, sigma_px, shape, background=background)
        frames[t] = camera.expose(expected, rng,
                                  offset=None if maps is None else maps.dark,
                                  read_variance=None if maps is None else maps.variance)
        truth.append(np.column_stack([np.full(len(pos), t), pos * pixel_nm]))
    md = {**camera.metadata(), "voxelsize.x": pixel_nm / 1000.0, "voxelsize.y": pixel_nm / 1000.0,
          "voxelsize.units": "um", "Analysis.FitModule": "LatGaussFitFR",
          "Analysis.DetectionThreshold": 1.0, "Analysis.StartAt": 0,
          "Analysis.PSFSigmaGuess": psf_sigma_nm, "EstimatedLaserOnFrameNo": 0}
    return frames, np.concatenate(truth), md


def match_to_truth(results: np.ndarray, truth: np.ndarray, radius_nm: float):
    """Match localisations to truth per frame (nearest first, one-to-one, within ``radius_nm``).

    Returns ``(pairs, n_loc, n_truth)`` with ``pairs`` an ``(m, 2)`` array of (result row, truth
    row) indices.
    """
    pairs = []
    t_frames = truth[:, 0].astype(int)
    r_frames = results["tIndex"]
    for t in np.unique(t_frames):
        ti = np.nonzero(t_frames == t)[0]
        ri = np.nonzero(r_frames == t)[0]
        if ri.size == 0:
            continue
        xy = np.column_stack([results["fitResults"]["x0"][ri], results["fitResults"]["y0"][ri]])
        dist, idx = cKDTree(truth[ti, 1:3]).query(xy, k=1, distance_upper_bound=radius_nm)
        order = np.argsort(dist)
        used_t: set[int] = set()
        for k in order:
            if not np.isfinite(dist[k]) or idx[k] in used_t:
                continue
            used_t.add(int(idx[k]))
            pairs.append((ri[k], ti[idx[k]]))
    return np.array(pairs, int).reshape(-1, 2), len(results), len(truth)
