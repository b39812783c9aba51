"""Super-resolution density images of localisations, built incrementally (numpy only, no Qt).

:class:`DensityCanvas` accumulates localisations batch by batch into a 2-D histogram at a fixed pixel
size (growing when localisations fall outside it), so each update costs only the new points.
:meth:`DensityCanvas.image` gives the histogram, or the ``gaussian`` render (each localisation a
Gaussian of the typical precision, i.e. the histogram blurred). :func:`contrast_levels` and
:func:`colourise` turn it into 32-bit ARGB pixels with a colour look-up table and percentile
contrast, so a GUI only has to show them.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

RENDERS = ("histogram", "gaussian")
#: Largest canvas side (pixels): beyond it localisations are dropped and counted in ``outside``.
MAX_SIDE = 8192
_GROW_STEP = 256


def pixel_size_for(extent_nm: float, *, max_side: int = 2048, finest_nm: float = 10.0) -> float:
    """A render pixel size (nm) that shows ``extent_nm`` in at most ``max_side`` pixels."""
    return max(finest_nm, float(extent_nm) / max_side)


class DensityCanvas:
    """Localisation counts on a grid of ``pixel_nm`` pixels whose pixel (0, 0) starts at 0 nm.

    Axis 0 of :attr:`counts` is y, axis 1 is x (image rows and columns).
    """

    def __init__(self, pixel_nm: float, shape: tuple[int, int] = (_GROW_STEP, _GROW_STEP)):
        if not pixel_nm > 0:
            raise ValueError(f"pixel size must be > 0 nm, got {pixel_nm}")
        self.pixel_nm = float(pixel_nm)
        self.counts = np.zeros(shape, np.float32)
        self.total = 0
        self.outside = 0

    @property
    def extent_nm(self) -> tuple[float, float]:
        """Width and height of the canvas in nm."""
        return self.counts.shape[1] * self.pixel_nm, self.counts.shape[0] * self.pixel_nm

    def add(self, x_nm: np.ndarray, y_nm: np.ndarray) -> None:
        """Count localisations at ``x_nm``, ``y_nm`` (NaN and negative positions are skipped)."""
        keep = np.isfinite(x_nm) & np.isfinite(y_nm) & (x_nm >= 0) & (y_nm >= 0)
        col = (x_nm[keep] / self.pixel_nm).astype(np.int64)
        row = (y_nm[keep] / self.pixel_nm).astype(np.int64)
        self.outside += int(len(x_nm) - np.count_nonzero(keep))
        if not len(col):
            return
        self._grow_to(int(row.max()) + 1, int(col.max()) + 1)
        height, width = self.counts.shape
        inside = (row < height) & (col < width)
        self.outside += int(len(row) - np.count_nonzero(inside))
        flat = row[inside] * width + col[inside]
        self.counts += np.bincount(flat, minlength=height * width).reshape(height, width)
        self.total += int(np.count_nonzero(inside))

    def _grow_to(self, rows: int, cols: int) -> None:
        height, width = self.counts.shape
        if rows <= height and cols <= width:
            return
        new_h = min(MAX_SIDE, max(height, -(-rows // _GROW_STEP) * _GROW_STEP))
        new_w = min(MAX_SIDE, max(width, -(-cols // _GROW_STEP) * _GROW_STEP))
        grown = np.zeros((new_h, new_w), np.float32)
        grown[:height, :width] = self.counts
        self.counts = grown

    def image(self, render: str = "histogram", precision_nm: float = float("nan")) -> np.ndarray:
        """The density image: counts, or with ``gaussian`` the counts blurred by the typical
        precision (at least half a pixel)."""
        if render not in RENDERS:
            raise ValueError(f"unknown render {render!r} (known: {', '.join(RENDERS)})")
        if render == "histogram":
            return self.counts
        sigma_px = precision_nm / self.pixel_nm if math.isfinite(precision_nm) else 0.0
        return ndimage.gaussian_filter(self.counts, max(0.5, sigma_px), truncate=3.0)


def contrast_levels(image: np.ndarray, percentile: float = 99.5,
                    sample: int = 200_000) -> tuple[float, float]:
    """``(0, high)`` with ``high`` the ``percentile`` of the non-empty pixels (a random sample of
    at most ``sample`` of them); ``(0, 1)`` for an empty image."""
    values = image[image > 0]
    if not len(values):
        return 0.0, 1.0
    if len(values) > sample:
        values = values[np.random.default_rng(0).integers(0, len(values), sample)]
    high = float(np.percentile(values, min(max(percentile, 0.0), 100.0)))
    return 0.0, high if high > 0 else float(values.max())


def colourise(image: np.ndarray, lut: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    """ARGB32 pixels (``uint32``, shape of ``image``) through ``lut`` (``(n, 3)`` uint8 RGB),
    scaling ``levels`` to the ends of the table."""
    lut = np.asarray(lut, np.uint8)
    if lut.ndim != 2 or lut.shape[1] < 3:
        raise ValueError("lut must be (n, 3) RGB values")
    packed = (np.uint32(0xFF000000) | lut[:, 0].astype(np.uint32) << 16
              | lut[:, 1].astype(np.uint32) << 8 | lut[:, 2].astype(np.uint32))
    low, high = levels
    scale = (len(lut) - 1) / (high - low) if high > low else 0.0
    index = np.clip((image - low) * scale, 0, len(lut) - 1).astype(np.intp)
    return packed[index]


def max_pool(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` shrunk by an integer ``factor`` keeping each block's maximum (thin structures stay
    visible in an overview, unlike sampling every ``factor``-th pixel)."""
    if factor <= 1:
        return image
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.max(axis=(1, 3))
