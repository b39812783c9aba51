"""The compiled loops of :mod:`rules.render` (numba): each touches only what it must, with no
canvas-sized temporaries, so a live render's update costs little more than its new points.

- :func:`add_points`: count new localisations in their pixels and, optionally, splat each as a
  normalised Gaussian into a blurred canvas (edges reflected, as ``scipy.ndimage``'s ``reflect``).
- :func:`nonzero_sample`: every k-th non-empty pixel, at most ``size`` of them (for contrast).
- :func:`colour_pooled`: look-up-table colouring and max-pooled overviews in one pass.

Compiled on first use and cached on disk (``cache=True``); :func:`preload` runs each once on tiny
inputs so that happens off the first real update.
"""
from __future__ import annotations

import time

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _reflect(index: int, n: int) -> int:
    """``index`` folded into ``0 .. n-1`` by mirroring at the edges (``d c b a | a b c d | d c``)."""
    period = 2 * n
    index %= period
    return period - 1 - index if index >= n else index


@njit(cache=True, nogil=True)
def add_points(x, y, pixel_nm, counts, blurred, kernel) -> int:
    """Add each finite, non-negative ``x``, ``y`` (nm) that falls on ``counts`` to its pixel, and
    ``outer(kernel, kernel)`` centred there to ``blurred`` (an empty ``kernel``: no splat);
    returns how many were added."""
    height, width = counts.shape
    radius = (len(kernel) - 1) // 2
    added = 0
    for k in range(len(x)):
        col_f = x[k] / pixel_nm
        row_f = y[k] / pixel_nm
        # NaN fails every comparison, so it is skipped here too
        if not (col_f >= 0.0 and row_f >= 0.0 and col_f < width and row_f < height):
            continue
        row, col = int(row_f), int(col_f)
        counts[row, col] += 1.0
        added += 1
        if radius < 0:
            continue
        if radius <= row < height - radius and radius <= col < width - radius:
            for a in range(2 * radius + 1):
                weight = kernel[a]
                r = row - radius + a
                for b in range(2 * radius + 1):
                    blurred[r, col - radius + b] += weight * kernel[b]
        else:
            for a in range(2 * radius + 1):
                weight = kernel[a]
                r = _reflect(row - radius + a, height)
                for b in range(2 * radius + 1):
                    blurred[r, _reflect(col - radius + b, width)] += weight * kernel[b]
    return added


@njit(cache=True, nogil=True)
def _count_nonzero(image) -> int:
    n = 0
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            if image[i, j] > 0:
                n += 1
    return n


@njit(cache=True, nogil=True)
def nonzero_sample(image, size):
    """Values of the pixels > 0 of 2-D ``image``, every k-th in raster order so that at most
    ``size`` are returned (all of them when there are no more)."""
    total = _count_nonzero(image)
    step = max(1, -(-total // size))
    out = np.empty(min(total, size), np.float64)
    kept = 0
    skip = 0  # non-empty pixels to pass before the next one kept
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            value = image[i, j]
            if value > 0:
                if skip == 0 and kept < len(out):
                    out[kept] = value
                    kept += 1
                    skip = step
                skip -= 1
    return out[:kept]


@njit(cache=True, nogil=True)
def colour_pooled(image, packed, low, scale, full, pooled, factors) -> None:
    """Colour 2-D float32 ``image`` into ``full`` (same shape, uint32) through ``packed`` (uint32
    ARGB table): index ``clip((value - low) * scale, 0, n - 1)`` in float32, truncated. Each
    ``pooled[p]`` (uint32, ``image`` shape // ``factors[p]``) gets the colour of its block's largest
    index — the same as colouring the block's maximum, as the index grows with the value."""
    height, width = image.shape
    top = len(packed) - 1
    row = np.empty(width, np.uint32)
    for p in range(len(pooled)):
        pooled[p][:, :] = 0
    for i in range(height):
        for j in range(width):
            v = (image[i, j] - low) * scale
            if v >= top:
                index = top
            elif v > 0:
                index = int(v)
            else:  # also NaN
                index = 0
            row[j] = index
            full[i, j] = packed[index]
        for p in range(len(pooled)):
            block = pooled[p]
            factor = factors[p]
            bi = i // factor
            if bi >= block.shape[0]:
                continue
            target = block[bi]
            for bj in range(block.shape[1]):
                largest = target[bj]
                for j in range(bj * factor, (bj + 1) * factor):
                    if row[j] > largest:
                        largest = row[j]
                target[bj] = largest
    for p in range(len(pooled)):
        block = pooled[p]
        for i in range(block.shape[0]):
            for j in range(block.shape[1]):
                block[i, j] = packed[block[i, j]]


def preload() -> float:
    """Load (or compile, the first time) every loop with the argument types the render uses;
    returns the CPU seconds it took."""
    start = time.process_time()
    counts = np.zeros((8, 8), np.float32)
    for dtype in (np.float32, np.float64):
        points = np.array([1.0, 30.0], dtype)
        add_points(points, points, 10.0, counts, counts.copy(), np.ones(3) / 3)
    nonzero_sample(counts, 10)
    packed = np.zeros(4, np.uint32)
    colour_pooled(counts, packed, np.float32(0), np.float32(1), np.zeros((8, 8), np.uint32),
                  (np.zeros((4, 4), np.uint32), np.zeros((2, 2), np.uint32)), (2, 4))
    return time.process_time() - start
