"""Fast simulated camera frames for the simulator: a uniform background plus sparse emitters.

Two costs dominate a naive frame (a PSF over the whole frame per emitter, a Poisson draw per
pixel), and both are avoided without changing the statistics:

* each emitter's pixel-integrated Gaussian PSF (``synthetic.integrated_psf``'s model) is rendered
  only into its own window of ±``ceil(4σ) + 1`` pixels (less than 10⁻⁴ of its photons fall
  outside), by a numba loop;
* a pixel no emitter reaches has a fixed distribution (Poisson background → camera), so it is drawn
  from that distribution's table by inverse CDF (one uniform per pixel); for a camera without
  per-pixel maps (sCMOS-like, or EMCCD) the table is of the final ADU value, otherwise of the
  photo-electron count, read out by :meth:`CameraModel.read_out`.  The pixels under emitters are
  drawn exactly by :meth:`CameraModel.expose`.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from numba import njit
from scipy.special import gammaln, ive, ndtr

from cluster.localisation.camera import CameraModel
from cluster.localisation.camera_maps import CameraMaps

GUIDE_SIZE = 4096


@njit(cache=True, nogil=True)
def _render_windows(centres, photons, sigma, half, extra, mask, touched):
    """Add each emitter's pixel-integrated Gaussian (centres in pixels, pixel i centred at i) to
    ``extra`` within ±``half`` pixels; list each pixel first reached in ``touched`` (flat indices,
    ``mask`` marks them). Returns how many were listed."""
    nx, ny = extra.shape
    width = 2 * half + 1
    gx = np.empty(width)
    gy = np.empty(width)
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    count = 0
    for k in range(centres.shape[0]):
        x0 = int(round(centres[k, 0])) - half
        y0 = int(round(centres[k, 1])) - half
        for j in range(width):
            gx[j] = 0.5 * (math.erf((x0 + j + 0.5 - centres[k, 0]) * scale)
                           - math.erf((x0 + j - 0.5 - centres[k, 0]) * scale))
            gy[j] = 0.5 * (math.erf((y0 + j + 0.5 - centres[k, 1]) * scale)
                           - math.erf((y0 + j - 0.5 - centres[k, 1]) * scale))
        for i in range(width):
            x = x0 + i
            if x < 0 or x >= nx:
                continue
            a = photons[k] * gx[i]
            for j in range(width):
                y = y0 + j
                if y < 0 or y >= ny:
                    continue
                extra[x, y] += a * gy[j]
                if not mask[x, y]:
                    mask[x, y] = True
                    touched[count] = x * ny + y
                    count += 1
    return count


@njit(cache=True, nogil=True)
def _inverse_cdf(u, cdf, guide, first, out):
    """``out[i]`` = the value whose CDF step holds ``u[i]`` (values ``first + index``)."""
    m = guide.shape[0]
    for i in range(u.shape[0]):
        x = u[i]
        j = guide[int(x * m)]
        while cdf[j] <= x:
            j += 1
        out[i] = first + j


class TableSampler:
    """Draws integers from a finite distribution ``pmf`` over ``first, first + 1, …`` by inverse
    CDF with a guide table: one uniform per draw."""

    def __init__(self, first: int, pmf: np.ndarray):
        cdf = np.cumsum(np.asarray(pmf, np.float64))
        cdf /= cdf[-1]
        cdf[-1] = 1.0          # every uniform in [0, 1) ends inside the table
        self.first, self.cdf = int(first), cdf
        self.guide = np.searchsorted(cdf, np.arange(GUIDE_SIZE) / GUIDE_SIZE, side="right")

    @property
    def values(self) -> np.ndarray:
        return np.arange(self.first, self.first + len(self.cdf))

    @property
    def pmf(self) -> np.ndarray:
        return np.diff(self.cdf, prepend=0.0)

    def draw(self, rng: np.random.Generator, n: int, dtype=np.int64) -> np.ndarray:
        out = np.empty(n, dtype)
        _inverse_cdf(rng.random(n), self.cdf, self.guide, self.first, out)
        return out


def poisson_table(mean: float) -> TableSampler:
    """A Poisson distribution of ``mean`` (tails beyond 12 σ, < 10⁻²⁰, left out)."""
    spread = 12.0 * math.sqrt(mean + 1.0)
    lo, hi = max(0, int(mean - spread)), int(math.ceil(mean + spread)) + 20
    k = np.arange(lo, hi + 1, dtype=np.float64)
    if mean <= 0:
        return TableSampler(0, np.array([1.0]))
    return TableSampler(lo, np.exp(k * math.log(mean) - mean - gammaln(k + 1.0)))


def adu_table(camera: CameraModel, mean: float) -> TableSampler:
    """The ADU value of a pixel of a uniform camera that receives ``mean`` photons: without EM
    gain ``clip(round((Poisson(mean) + N(0, read_noise²)) / e_per_adu + offset), 0, 65535)``;
    with it (and read noise) the Poisson count goes through the gain first (:func:`_em_cdf`)."""
    if camera.em_gain > 1:
        return _em_adu_table(camera, mean)
    electrons = poisson_table(mean)
    n, p = electrons.values.astype(np.float64), electrons.pmf
    epc, offset, sigma = camera.electrons_per_count, camera.ad_offset, camera.read_noise
    if sigma <= 0:   # no read noise: each electron count maps to one value, as read_out rounds it
        adu = np.clip(np.round(n / epc + offset), 0, 65535).astype(np.int64)
        first = int(adu.min())
        return TableSampler(first, np.bincount(adu - first, weights=p))
    spread = 12.0 * sigma / epc
    first = int(max(0, math.floor(n[0] / epc + offset - spread)))
    last = int(min(65535, math.ceil(n[-1] / epc + offset + spread)))
    k = np.arange(first, last + 1, dtype=np.float64)
    # P(adu <= k) = P(e < (k + 0.5 - offset) * epc), e = n + read noise; clipped at both ends
    cdf = ndtr(((k[:, None] + 0.5 - offset) * epc - n[None, :]) / sigma) @ p
    cdf[-1] = 1.0
    return TableSampler(first, np.diff(cdf, prepend=0.0))


def _em_adu_table(camera: CameraModel, mean: float) -> TableSampler:
    """:func:`adu_table` of an EMCCD: ``n ~ Poisson(mean)`` electrons, each multiplied by the
    gain ``G`` (``Gamma(n, G)``, none for ``n = 0``), plus read noise, to ADU.

    The output of the gain, ``X``, has an atom ``e^-mean`` at 0 and for ``x > 0`` the density
    ``e^(-mean - x/G) √(mean/(xG)) I₁(2√(mean·x/G))`` (the Poisson mixture of gammas); it is
    integrated by the midpoint rule on a grid of at most min(read noise, G)/8 (≤ 4,000 points)
    against the read noise's normal CDF, so the table's mean and variance are the model's to
    ~10⁻⁴ (the tests check them, and draws against :meth:`CameraModel.expose`)."""
    gain, epc = camera.em_gain, camera.electrons_per_count
    offset, sigma = camera.ad_offset, camera.read_noise
    if mean <= 0:
        return adu_table(dataclasses.replace(camera, em_gain=1.0), 0.0)
    top = mean * gain + 15.0 * (math.sqrt(2.0 * mean) * gain + gain)
    step = max(min(sigma, gain) / 8.0, top / 4000.0)
    x = (np.arange(int(math.ceil(top / step))) + 0.5) * step
    z = 2.0 * np.sqrt(mean * x / gain)
    mass = np.exp(-mean - x / gain + z) * np.sqrt(mean / (x * gain)) * ive(1, z) * step
    zero = math.exp(-mean)
    mass *= (1.0 - zero) / mass.sum()           # the grid's small error on the total
    spread = 12.0 * sigma
    first = int(max(0, math.floor(offset - spread / epc)))
    last = int(min(65535, math.ceil((top + spread) / epc + offset)))
    t = (np.arange(first, last + 1, dtype=np.float64) + 0.5 - offset) * epc
    cdf = zero * ndtr(t / sigma)
    for lo in range(0, len(t), 256):            # P(X + read noise < t), in blocks of 256 values
        cdf[lo:lo + 256] += ndtr((t[lo:lo + 256, None] - x[None, :]) / sigma) @ mass
    cdf[-1] = 1.0
    return TableSampler(first, np.diff(cdf, prepend=0.0))


def psf_half_width(sigma_px: float) -> int:
    """Half-width (pixels) of the window an emitter is rendered in."""
    return int(math.ceil(4.0 * sigma_px)) + 1


class FrameRenderer:
    """Noisy uint16 frames (axis 0 = x) of emitters over a uniform ``background`` (photons per
    pixel) seen by ``camera`` (and its sCMOS ``maps``), with the statistics of
    :meth:`CameraModel.expose` applied to the whole expected image."""

    def __init__(self, shape: tuple[int, int], camera: CameraModel, background: float,
                 sigma_px: float, maps: CameraMaps = CameraMaps()):
        self.shape, self.camera, self.background = tuple(shape), camera, float(background)
        self.sigma_px, self.half = float(sigma_px), psf_half_width(sigma_px)
        self.dark, self.variance = maps.dark, maps.variance
        # one table of final ADU values where every pixel is alike (no maps) and it can be built
        self._uniform = (self.dark is None and self.variance is None
                         and (camera.em_gain <= 1 or camera.read_noise > 0))
        self._table = (adu_table(camera, self.background) if self._uniform
                       else poisson_table(self.background))
        # load the compiled loops now, not in the first frame of an acquisition
        _render_windows(np.zeros((1, 2)), np.zeros(1), 1.0, 1, np.zeros((2, 2)),
                        np.zeros((2, 2), np.bool_), np.zeros(9, np.int64))
        self._table.draw(np.random.default_rng(0), 1)

    def render(self, centres_px: np.ndarray, photons: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
        """A frame with emitters at ``centres_px`` ``(n, 2)`` (pixel i centred at i) giving
        ``photons`` each."""
        size = self.shape[0] * self.shape[1]
        if self._uniform:
            frame = self._table.draw(rng, size, np.uint16)
        else:
            electrons = self._table.draw(rng, size)
            frame = self.camera.read_out(
                electrons, rng,
                offset=None if self.dark is None else self.dark.reshape(-1),
                read_variance=None if self.variance is None else self.variance.reshape(-1))
        if len(centres_px):
            extra = np.zeros(self.shape)
            mask = np.zeros(self.shape, np.bool_)
            touched = np.empty(len(centres_px) * (2 * self.half + 1) ** 2, np.int64)
            count = _render_windows(np.ascontiguousarray(centres_px, np.float64),
                                    np.ascontiguousarray(photons, np.float64), self.sigma_px,
                                    self.half, extra, mask, touched)
            idx = touched[:count]
            frame[idx] = self.camera.expose(
                self.background + extra.reshape(-1)[idx], rng,
                offset=None if self.dark is None else self.dark.reshape(-1)[idx],
                read_variance=None if self.variance is None else self.variance.reshape(-1)[idx])
        return frame.reshape(self.shape)
