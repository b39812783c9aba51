"""Crowded frames: one localisation per emitter, and fits not pulled between neighbours.

After the first fit of every candidate:

- a fit that ran out of its ROI, or lies within ``Analysis.DebounceRadius`` (px) of a brighter fit
  in the same frame, is dropped (two candidates of one emitter converge to the same place);
- each remaining fit's ROI gets the fitted light of its neighbours (every other fit whose PSF
  reaches into the ROI) subtracted, and the fits whose ROI had a noticeable share of such light are
  fitted again from where they were (one round: the neighbours' estimates are already close).

Fits are in ROI coordinates (:mod:`.fitting`); candidates are indexed by frame ``f`` and ROI
centre ``ix, iy``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from numba import njit
from scipy.spatial import cKDTree

from .fitting import _axis_terms

#: Default ``Analysis.DebounceRadius`` (px): fits closer than this are one emitter.
DEBOUNCE_RADIUS_PX = 1.5
#: Change of a fit's neighbour light (per pixel, in σ of the pixel noise) that calls for a refit.
CROWDED_SIGMA = 0.5
#: Rounds of refitting with the neighbours' light subtracted (it settles in two or three).
REFIT_ROUNDS = 6
#: A fit this much wider than the PSF may be two emitters ...
WIDE_FIT = 1.2
#: ... when wider by this many standard errors of its σ (not a faint spot's noisy σ).
WIDE_SIGNIFICANCE = 4.0
#: Fits closer than this (in PSF σ) may hide a third emitter: their frame is searched again.
CLOSE_PAIR = 4.0
#: The two halves of a split closer than this (in PSF σ) are one emitter after all.
SPLIT_MIN_SEPARATION = 1.5


@dataclasses.dataclass
class Fits:
    """Candidates and their fits: frame ``f``, ROI centre ``ix, iy``, ROI pixel indices ``gx,
    gy`` and ``mask`` (inside the frame), ROI data ``rois``, read-noise variance ``gamma`` (one
    value or per ROI pixel), the fit (``theta``, ``cov``, ``converged``, ``nchi2``, as
    :func:`.fitting.fit_rois` returns it) and ``group`` (the halves of a split share one)."""

    f: np.ndarray
    ix: np.ndarray
    iy: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    mask: np.ndarray
    rois: np.ndarray
    gamma: Any
    theta: np.ndarray
    cov: np.ndarray
    converged: np.ndarray
    nchi2: np.ndarray
    group: np.ndarray

    _PER_FIT = ("f", "ix", "iy", "gx", "gy", "mask", "rois", "theta", "cov", "converged",
                "nchi2", "group")

    def __len__(self) -> int:
        return len(self.f)

    @property
    def half(self) -> int:
        return (self.rois.shape[1] - 1) // 2

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Fitted positions in frame pixels."""
        return self.ix - self.half + self.theta[:, 1], self.iy - self.half + self.theta[:, 2]

    def gamma_of(self, keep) -> Any:
        return self.gamma[keep] if np.ndim(self.gamma) else self.gamma

    def subset(self, keep) -> "Fits":
        return dataclasses.replace(self, gamma=self.gamma_of(keep),
                                   **{k: getattr(self, k)[keep] for k in self._PER_FIT})

    def extend(self, other: "Fits") -> "Fits":
        gamma = (np.concatenate([self.gamma, other.gamma]) if np.ndim(self.gamma)
                 else self.gamma)
        return dataclasses.replace(self, gamma=gamma, **{
            k: np.concatenate([getattr(self, k), getattr(other, k)]) for k in self._PER_FIT})

    def set_fit(self, which, fit) -> None:
        self.theta[which], self.cov[which], self.converged[which], self.nchi2[which] = fit


def _frame_keys(f: np.ndarray, x: np.ndarray, y: np.ndarray, reach: float) -> np.ndarray:
    """Points for a KD-tree where different frames are far apart (``reach`` never bridges them)."""
    spread = float(np.max(y, initial=0.0) - np.min(y, initial=0.0)) + 4.0 * reach + 1.0
    return np.column_stack([x, y + f * spread])


def debounce(f, px, py, brightness, radius: float) -> np.ndarray:
    """Mask of fits to keep: of fits closer than ``radius`` in one frame, only the brightest."""
    keep = np.ones(len(f), bool)
    if radius <= 0 or len(f) < 2:
        return keep
    pairs = cKDTree(_frame_keys(f, px, py, radius)).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return keep
    # visit the brightest first; a kept fit removes its dimmer partners
    order = np.argsort(-np.asarray(brightness))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    partners: dict[int, list[int]] = {}
    for a, b in pairs:
        partners.setdefault(int(a), []).append(int(b))
        partners.setdefault(int(b), []).append(int(a))
    for i in sorted(partners, key=lambda k: rank[k]):
        if keep[i]:
            for j in partners[i]:
                if rank[j] > rank[i]:
                    keep[j] = False
    return keep


@njit(cache=True, nogil=True)
def _draw(theta, size, dest, ox, oy, out):
    """Add the photons (``N · Ex · Ey``, no background) of each fit of ``theta`` ``(m, 5)``,
    evaluated on a ``size``×``size`` grid, to ``out[dest]`` at offset ``(ox, oy)``; pixels of the
    grid outside ``out`` are dropped."""
    _, w, h = out.shape
    ax = np.empty((6, size))
    ay = np.empty((6, size))
    for r in range(theta.shape[0]):
        _axis_terms(theta[r, 1], theta[r, 3], size, ax, False)
        _axis_terms(theta[r, 2], theta[r, 3], size, ay, False)
        for i in range(size):
            x = ox[r] + i
            if 0 <= x < w:
                for j in range(size):
                    y = oy[r] + j
                    if 0 <= y < h:
                        out[dest[r], x, y] += theta[r, 0] * ax[0, i] * ay[0, j]


def neighbour_light(theta: np.ndarray, f: np.ndarray, ix: np.ndarray, iy: np.ndarray,
                    half: int, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Expected photons from every other fit in each fit's ROI: ``(n, 2·half+1, 2·half+1)``,
    and a mask of the fits that have any neighbour within ``reach`` px."""
    n = len(theta)
    size = 2 * half + 1
    light = np.zeros((n, size, size))
    has = np.zeros(n, bool)
    if n < 2:
        return light, has
    px = ix - half + theta[:, 1]
    py = iy - half + theta[:, 2]
    pairs = cKDTree(_frame_keys(f, px, py, reach)).query_pairs(reach, output_type="ndarray")
    if len(pairs) == 0:
        return light, has
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    shifted = np.array(theta[src], np.float64)
    shifted[:, 1] = px[src] - (ix[dst] - half)      # source centre in the target's ROI
    shifted[:, 2] = py[src] - (iy[dst] - half)
    zero = np.zeros(len(dst), np.int64)
    _draw(shifted, size, dst.astype(np.int64), zero, zero, light)
    has[dst] = True
    return light, has


def render(theta: np.ndarray, f: np.ndarray, ix: np.ndarray, iy: np.ndarray, half: int,
           n_frames: int, shape: tuple[int, int]) -> np.ndarray:
    """The fits' photons (no background) drawn into ``n_frames`` frames of ``shape``, each over
    its ROI: ``(n_frames, W, H)`` float32."""
    out = np.zeros((n_frames,) + tuple(shape), np.float32)
    _draw(np.ascontiguousarray(theta, np.float64), 2 * half + 1, np.asarray(f, np.int64),
          np.asarray(ix - half, np.int64), np.asarray(iy - half, np.int64), out)
    return out


def split_wide(theta: np.ndarray, excess: np.ndarray, psf_px: float) -> np.ndarray:
    """Two starting points for each fit that may be two emitters fitted as one: ``(2, n, 5)``.

    ``excess`` ``(n, W, H)`` is each ROI's light above the fitted background.  The pair is placed
    along the main axis of the light's second moments, ``±sqrt(s² − psf²)`` from the fitted
    centre (for two equal spots that far apart, the spread is that of the fit), each with half
    the photons and the PSF's σ.
    """
    n, w, h = excess.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float), indexing="ij")
    weight = np.clip(excess, 0.0, None)
    total = np.maximum(weight.sum(axis=(1, 2)), 1e-9)
    dx = gx[None] - theta[:, 1, None, None]
    dy = gy[None] - theta[:, 2, None, None]
    cxx = (weight * dx * dx).sum(axis=(1, 2)) / total
    cyy = (weight * dy * dy).sum(axis=(1, 2)) / total
    cxy = (weight * dx * dy).sum(axis=(1, 2)) / total
    angle = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)          # main axis of the light
    half = np.sqrt(np.maximum(theta[:, 3] ** 2 - psf_px ** 2, 0.25))
    out = np.repeat(theta[None], 2, axis=0)
    for k, sign in enumerate((1.0, -1.0)):
        out[k, :, 0] = theta[:, 0] / 2.0
        out[k, :, 1] = theta[:, 1] + sign * half * np.cos(angle)
        out[k, :, 2] = theta[:, 2] + sign * half * np.sin(angle)
        out[k, :, 3] = psf_px
    return out


FitFunction = Callable[..., tuple]


def resolve_crowding(fits: Fits, candidates: Callable[..., Fits],
                     search: Callable[[np.ndarray, np.ndarray], tuple],
                     fit: FitFunction, *, psf_px: float, frame_shape: tuple[int, int],
                     debounce_px: float) -> Fits:
    """One fit per emitter, hidden neighbours found, no fit pulled between neighbours.

    ``candidates(f, ix, iy, minus=None)`` fits new candidates (their ROIs minus ``minus(f, gx,
    gy)`` when given); ``search(frames, model)`` finds candidates in those frames with the fits'
    ``model`` subtracted; ``fit(rois, mask, gamma, theta0=...)`` refits.
    """
    half = fits.half
    reach = half + 3.0 * psf_px

    def plausible(fits: Fits) -> np.ndarray:
        inside = ((fits.theta[:, 1:3] >= -0.5) & (fits.theta[:, 1:3] <= 2 * half + 0.5)).all(1)
        px, py = fits.centres()
        keep = inside & debounce(fits.f, px, py, fits.theta[:, 0], debounce_px)
        return keep & debounce(fits.group, px, py, fits.theta[:, 0],
                               SPLIT_MIN_SEPARATION * psf_px)

    fits = fits.subset(plausible(fits))
    # frames with close fits, or fits wider than the PSF (two spots fitted as one), are searched
    # again in what the fits leave unexplained: emitters hidden by a brighter neighbour
    px, py = fits.centres()
    close = np.zeros(len(fits), bool)
    pairs = cKDTree(_frame_keys(fits.f, px, py, reach)).query_pairs(
        CLOSE_PAIR * psf_px, output_type="ndarray")
    close[pairs.ravel()] = True
    busy = np.unique(fits.f[close | _wide(fits, psf_px)])
    if busy.size:
        fits = _search_hidden(fits, busy, candidates, search, plausible, frame_shape)
    fits = _split_wide(fits, psf_px, reach)
    return _refit_with_neighbours(fits, fit, plausible, reach)


def _wide(fits: Fits, psf_px: float) -> np.ndarray:
    """Fits significantly wider than the PSF."""
    s_err = np.sqrt(np.abs(np.nan_to_num(fits.cov[:, 3, 3], nan=np.inf)))
    return ((fits.theta[:, 3] > WIDE_FIT * psf_px)
            & (fits.theta[:, 3] - psf_px > WIDE_SIGNIFICANCE * s_err))


def _search_hidden(fits: Fits, busy: np.ndarray, candidates, search, plausible,
                   frame_shape) -> Fits:
    """Fits plus those of the candidates found in frames ``busy`` once the fits are subtracted."""
    half = fits.half
    listed = np.isin(fits.f, busy)
    model = render(fits.theta[listed], np.searchsorted(busy, fits.f[listed]), fits.ix[listed],
                   fits.iy[listed], half, busy.size, frame_shape)
    nf, nx, ny = search(busy, model)
    if not nf.size:
        return fits

    def minus(f: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        return model[np.asarray(np.searchsorted(busy, f))[:, None, None], gx, gy]

    new = candidates(busy[nf], nx, ny, minus=minus)
    new.group = new.group + int(fits.group.max(initial=-1)) + 1
    fits = fits.extend(new)
    return fits.subset(plausible(fits))


def _split_wide(fits: Fits, psf_px: float, reach: float) -> Fits:
    """A fit significantly wider than the PSF starts again as two emitters."""
    half = fits.half
    wide = np.nonzero(_wide(fits, psf_px))[0]
    if wide.size:
        light, _ = neighbour_light(fits.theta, fits.f, fits.ix, fits.iy, half, reach)
        pair = split_wide(fits.theta[wide], fits.rois[wide] - light[wide]
                          - fits.theta[wide, 4, None, None], psf_px)
        twin = fits.subset(wide)
        fits.theta[wide], twin.theta = pair[0], pair[1]
        fits = fits.extend(twin)
    return fits


def _refit_with_neighbours(fits: Fits, fit: FitFunction, plausible, reach: float) -> Fits:
    """Refit every fit whose neighbours' light (subtracted from its ROI) is out of date."""
    half = fits.half
    used = np.zeros_like(fits.rois)
    for _ in range(REFIT_ROUNDS):
        light, _ = neighbour_light(fits.theta, fits.f, fits.ix, fits.iy, half, reach)
        level = np.sqrt(np.maximum(fits.theta[:, 4] + np.mean(fits.gamma), 1e-6))
        stale = np.abs(light - used).max(axis=(1, 2)) > CROWDED_SIGMA * level
        if not stale.any():
            break
        fits.set_fit(stale, fit(fits.rois[stale] - light[stale], fits.mask[stale],
                                fits.gamma_of(stale), theta0=fits.theta[stale]))
        used[stale] = light[stale]
        keep = plausible(fits)
        fits, used = fits.subset(keep), used[keep]
    return fits
