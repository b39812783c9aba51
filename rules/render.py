"""Super-resolution density images of localisations, built incrementally (no Qt).

:class:`DensityCanvas` accumulates localisations batch by batch into a 2-D histogram at a fixed pixel
size (growing when localisations fall outside it). Its ``gaussian`` render (each localisation a
Gaussian of the typical precision, i.e. the histogram blurred) is kept up to date the same way: each
new localisation adds its small Gaussian to a blurred canvas, which is rebuilt from the counts only
when the precision has moved by more than :data:`SIGMA_TOLERANCE` or the canvas grew. So an update
costs its new points, not the canvas. :func:`contrast_levels` and :func:`colourise` turn an image
into 32-bit ARGB pixels (and max-pooled overviews) with a colour look-up table and percentile
contrast, into buffers the caller may reuse, so a GUI only has to show them. The loops are compiled
(:mod:`rules.render_kernels`).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .render_kernels import add_points, colour_pooled, nonzero_sample

RENDERS = ("histogram", "gaussian")
#: Largest canvas side (pixels): beyond it localisations are dropped and counted in ``outside``.
MAX_SIDE = 8192
#: A canvas sized from its first localisations grows to at most this many times their extent, so a
#: few wild fits far outside the field cannot make it (and its pictures) gigabytes large.
MAX_GROWTH = 2.0
#: The field's extent is the farthest of the first positions within :data:`MAX_GROWTH` times this
#: percentile of them (not simply the farthest: one wild fit would coarsen the whole render).
EXTENT_PERCENTILE = 99.5
_GROW_STEP = 256
#: Gaussian kernels reach this many σ (as ``scipy.ndimage.gaussian_filter``'s ``truncate``).
TRUNCATE = 3.0
#: The blurred canvas keeps its σ while the wanted one is within this fraction of it.
SIGMA_TOLERANCE = 0.15


def pixel_size_for(extent_nm: float, *, max_side: int = 2048, finest_nm: float = 10.0) -> float:
    """A render pixel size (nm) that shows ``extent_nm`` in at most ``max_side`` pixels."""
    return max(finest_nm, float(extent_nm) / max_side)


def gaussian_kernel(sigma_px: float) -> np.ndarray:
    """The normalised 1-D Gaussian weights ``gaussian_filter`` blurs with at ``sigma_px`` (radius
    ``int(TRUNCATE * sigma + 0.5)`` pixels)."""
    radius = int(TRUNCATE * sigma_px + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma_px) ** 2)
    return weights / weights.sum()


class DensityCanvas:
    """Localisation counts on a grid of ``pixel_nm`` pixels whose pixel (0, 0) starts at 0 nm.

    Axis 0 of :attr:`counts` is y, axis 1 is x (image rows and columns). Once the ``gaussian``
    render has been asked for, :attr:`blurred` is the counts blurred with :attr:`sigma_px`, kept
    up to date by :meth:`add`.
    """

    def __init__(self, pixel_nm: float, shape: tuple[int, int] = (_GROW_STEP, _GROW_STEP),
                 max_side: int = MAX_SIDE):
        if not pixel_nm > 0:
            raise ValueError(f"pixel size must be > 0 nm, got {pixel_nm}")
        self.pixel_nm = float(pixel_nm)
        self.max_side = max(_GROW_STEP, min(MAX_SIDE, int(max_side)))
        self.counts = np.zeros(shape, np.float32)
        self.total = 0
        self.outside = 0
        self.blurred: np.ndarray | None = None
        self.sigma_px = float("nan")
        self._kernel = np.zeros(0)
        self._blur_stale = True
        self.rebuilds = 0  # full blurs so far (the rest were splats of the new points)

    @classmethod
    def for_points(cls, x_nm: np.ndarray, y_nm: np.ndarray) -> "DensityCanvas":
        """A canvas for a field whose first localisations are ``x_nm``, ``y_nm``: the pixel size
        shows their extent (wild fits left out, :data:`EXTENT_PERCENTILE`) in at most 2048 pixels,
        and the canvas grows to at most :data:`MAX_GROWTH` times that extent (what falls beyond
        is counted in ``outside``)."""
        positions = np.concatenate([np.asarray(x_nm, np.float64), np.asarray(y_nm, np.float64)])
        positions = positions[np.isfinite(positions) & (positions >= 0)]
        extent = 0.0
        if len(positions):  # the farthest position that is not a wild fit
            typical = float(np.percentile(positions, EXTENT_PERCENTILE))
            extent = float(positions[positions <= MAX_GROWTH * typical].max(initial=0.0))
        extent = max(extent, 1.0) * 1.05
        pixel_nm = pixel_size_for(extent)
        return cls(pixel_nm, max_side=math.ceil(MAX_GROWTH * extent / pixel_nm / _GROW_STEP)
                   * _GROW_STEP)

    @property
    def extent_nm(self) -> tuple[float, float]:
        """Width and height of the canvas in nm."""
        return self.counts.shape[1] * self.pixel_nm, self.counts.shape[0] * self.pixel_nm

    def add(self, x_nm: np.ndarray, y_nm: np.ndarray) -> None:
        """Count localisations at ``x_nm``, ``y_nm`` (NaN and negative positions are skipped)."""
        x_nm, y_nm = np.asarray(x_nm), np.asarray(y_nm)
        if len(x_nm) != len(y_nm):
            raise ValueError(f"{len(x_nm)} x but {len(y_nm)} y positions")
        if not len(x_nm):
            return
        reach = self.max_side * self.pixel_nm  # beyond it a point grows nothing: it is dropped
        within = (x_nm < reach) & (y_nm < reach)  # (NaN compares false)
        if within.any():
            self._grow_to(int(y_nm[within].max() / self.pixel_nm) + 1,
                          int(x_nm[within].max() / self.pixel_nm) + 1)
        kernel = self._kernel
        if not self._blur_stale and not self._splat_is_cheaper(len(x_nm)):
            self._blur_stale = True  # so many points that blurring the whole canvas is cheaper
        if self._blur_stale:
            kernel = np.zeros(0)
        added = add_points(x_nm, y_nm, self.pixel_nm, self.counts,
                           self.blurred if self.blurred is not None else self.counts, kernel)
        self.total += added
        self.outside += len(x_nm) - added

    def _splat_is_cheaper(self, points: int) -> bool:
        side = len(self._kernel)
        return points * side * side <= 2 * self.counts.size * side

    def _grow_to(self, rows: int, cols: int) -> None:
        height, width = self.counts.shape
        if rows <= height and cols <= width:
            return
        new_h = min(self.max_side, max(height, -(-rows // _GROW_STEP) * _GROW_STEP))
        new_w = min(self.max_side, max(width, -(-cols // _GROW_STEP) * _GROW_STEP))
        if (new_h, new_w) == (height, width):
            return
        grown = np.zeros((new_h, new_w), np.float32)
        grown[:height, :width] = self.counts
        self.counts = grown
        self.blurred = None
        self._blur_stale = True

    def image(self, render: str = "histogram", precision_nm: float = float("nan")) -> np.ndarray:
        """The density image: counts, or with ``gaussian`` the counts blurred by the typical
        precision (at least half a pixel; within :data:`SIGMA_TOLERANCE` of it). The canvas' own
        array: valid until the next :meth:`add`."""
        if render not in RENDERS:
            raise ValueError(f"unknown render {render!r} (known: {', '.join(RENDERS)})")
        if render == "histogram":
            return self.counts
        sigma = max(0.5, precision_nm / self.pixel_nm if math.isfinite(precision_nm) else 0.0)
        if self._blur_stale or not abs(sigma / self.sigma_px - 1.0) <= SIGMA_TOLERANCE:
            self._rebuild_blur(sigma)
        assert self.blurred is not None
        return self.blurred

    def _rebuild_blur(self, sigma: float) -> None:
        if self.blurred is None or self.blurred.shape != self.counts.shape:
            self.blurred = np.empty_like(self.counts)
        ndimage.gaussian_filter(self.counts, sigma, truncate=TRUNCATE, output=self.blurred)
        self.sigma_px = sigma
        self._kernel = gaussian_kernel(sigma)
        self._blur_stale = False
        self.rebuilds += 1


def contrast_levels(image: np.ndarray, percentile: float = 99.5,
                    sample: int = 200_000) -> tuple[float, float]:
    """``(0, high)`` with ``high`` the ``percentile`` of the non-empty pixels (at most ``sample``
    of them, evenly spread); ``(0, 1)`` for an empty image."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    values = nonzero_sample(image, sample)
    if not len(values):
        return 0.0, 1.0
    high = float(np.percentile(values, min(max(percentile, 0.0), 100.0)))
    return 0.0, high if high > 0 else float(values.max())


def packed_lut(lut: np.ndarray) -> np.ndarray:
    """``(n, 3)`` uint8 RGB look-up table → ``n`` opaque ARGB32 values (``uint32``)."""
    lut = np.asarray(lut, np.uint8)
    if lut.ndim != 2 or lut.shape[1] < 3 or not len(lut):
        raise ValueError("lut must be (n, 3) RGB values")
    return (np.uint32(0xFF000000) | lut[:, 0].astype(np.uint32) << 16
            | lut[:, 1].astype(np.uint32) << 8 | lut[:, 2].astype(np.uint32))


def pooled_shape(shape: tuple[int, ...], factor: int) -> tuple[int, int]:
    """The shape of an overview of an image of ``shape`` shrunk by ``factor`` (whole blocks)."""
    return shape[0] // factor, shape[1] // factor


def colourise(image: np.ndarray, lut: np.ndarray, levels: tuple[float, float],
              out: np.ndarray | None = None,
              overviews: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """ARGB32 pixels (``uint32``, shape of ``image``) through ``lut`` (``(n, 3)`` uint8 RGB),
    scaling ``levels`` to the ends of the table; written to ``out`` if given.

    ``overviews`` maps a factor to a ``uint32`` array of :func:`pooled_shape`: each gets the colour
    of the brightest pixel of its ``factor × factor`` block (thin structures stay visible zoomed
    out, unlike sampling every ``factor``-th pixel).
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    packed = packed_lut(lut)
    low, high = levels
    scale = (len(packed) - 1) / (high - low) if high > low else 0.0
    if out is None:
        out = np.empty(image.shape, np.uint32)
    overviews = overviews or {}
    for factor, array in overviews.items():
        if factor < 1 or array.shape != pooled_shape(image.shape, factor):
            raise ValueError(f"an overview of factor {factor} must have shape "
                             f"{pooled_shape(image.shape, factor)}, not {array.shape}")
    if out.shape != image.shape or out.dtype != np.uint32:
        raise ValueError(f"out must be uint32 of shape {image.shape}")
    factors = tuple(overviews)
    colour_pooled(np.asarray(image, np.float32), packed, np.float32(low), np.float32(scale), out,
                  tuple(overviews[f] for f in factors) or (np.zeros((0, 0), np.uint32),),
                  factors or (1,))
    return out
