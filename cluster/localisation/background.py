"""Background estimates: from the ``Analysis.BGRange`` frames, or from the frame itself.

The mean over the ``BGRange`` frames leaves out each frame's spot pixels (:func:`without_spots`),
so a blinking emitter that was on in an earlier frame does not raise the background, and dim,
the spots of the frames after it; a pixel that is a spot in every background frame gets the plain
mean.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from numba import njit

#: A background frame's pixel is part of a spot when it exceeds the frame's own smooth background
#: by this many σ of its noise; spot pixels, grown by ``SPOT_GROW`` px, stay out of the mean.
SPOT_SIGMA = 4.0
SPOT_GROW = 2


def bg_frame_indices(index: int, bg_range: Sequence[int], laser_on: int = 0) -> range:
    """Frames ``index+lo … index+hi−1`` used for the background of ``index``, none before
    ``laser_on`` (``EstimatedLaserOnFrameNo``)."""
    lo, hi = int(bg_range[0]), int(bg_range[1])
    return range(max(index + lo, laser_on, 0), max(index + hi, laser_on, 0))


def from_frames(frames: Sequence[np.ndarray], percentile: float = 0.0) -> np.ndarray:
    """Mean (``percentile`` 0) or percentile (0 < p ≤ 1, PYME's ``PCTBackground``) of frames."""
    stack = np.asarray(frames, dtype=np.float32)
    if percentile > 0:
        return np.percentile(stack, 100.0 * percentile, axis=0).astype(np.float32)
    return stack.mean(axis=0)


@functools.lru_cache(maxsize=16)
def _interpolation(size: int, tiles: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation from tile centres to the ``size`` pixels of an axis: for each pixel
    the tiles below and above it and the weight of the one above, clamped at the borders (a
    pixel beyond the first or last tile centre takes that tile's value)."""
    centre = np.clip((np.arange(size) + 0.5) / block - 0.5, 0, tiles - 1)
    lo = np.floor(centre).astype(np.int64)
    return lo, np.minimum(lo + 1, tiles - 1), (centre - lo).astype(np.float32)


@njit(cache=True, nogil=True)
def _tile_medians(stack, nbx, nby, bx, by, pairs):
    """Median of each ``bx``×``by`` tile of each frame ``(n, nbx, nby)``, over its 2×2-pixel
    means when ``pairs`` (which halves the median's Poisson bias and its cost)."""
    n = stack.shape[0]
    step = 2 if pairs else 1
    values = np.empty((bx // step) * (by // step), np.float32)
    med = np.empty((n, nbx, nby), np.float32)
    for f in range(n):
        for tx in range(nbx):
            for ty in range(nby):
                k = 0
                for i in range(tx * bx, (tx + 1) * bx, step):
                    for j in range(ty * by, (ty + 1) * by, step):
                        if pairs:
                            values[k] = (stack[f, i, j] + stack[f, i, j + 1] + stack[f, i + 1, j]
                                         + stack[f, i + 1, j + 1]) * np.float32(0.25)
                        else:
                            values[k] = stack[f, i, j]
                        k += 1
                med[f, tx, ty] = _median(values)
    return med


@njit(cache=True, nogil=True)
def _select(values, k):
    """The ``k``-th smallest of ``values`` (reordered in place; Hoare's selection)."""
    lo, hi = 0, values.shape[0] - 1
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return values[k]


@njit(cache=True, nogil=True)
def _median(values):
    """Median of ``values`` (reordered in place): the middle value, or the mean of the two."""
    n = values.shape[0]
    upper = _select(values, n // 2)
    if n % 2:
        return upper
    lower = values[0]
    for i in range(1, n // 2):          # the largest of the lower half
        lower = max(lower, values[i])
    return (lower + upper) * np.float32(0.5)


@njit(cache=True, nogil=True)
def _interpolate(med, x_lo, x_hi, x_frac, y_lo, y_hi, y_frac):
    """Bilinear interpolation of each frame's tile values ``med`` ``(n, tiles x, tiles y)`` to
    pixels (see :func:`_interpolation`), along H first, then whole rows along W."""
    n, nbx, nby = med.shape
    w, h = x_lo.shape[0], y_lo.shape[0]
    out = np.empty((n, w, h), np.float32)
    cols = np.empty((nbx, h), np.float32)
    for f in range(n):
        for t in range(nbx):
            m = med[f, t]
            c = cols[t]
            for j in range(h):
                c[j] = m[y_lo[j]] + y_frac[j] * (m[y_hi[j]] - m[y_lo[j]])
        for i in range(w):
            o, lo, hi, fx = out[f, i], cols[x_lo[i]], cols[x_hi[i]], x_frac[i]
            for j in range(h):
                o[j] = lo[j] + fx * (hi[j] - lo[j])
    return out


def from_frame(frames: np.ndarray, block: int = 16) -> np.ndarray:
    """Smooth background map of each frame (``(W, H)`` or ``(n, W, H)``): medians of
    ``block``×``block`` tiles (of 2×2-pixel means), bilinearly interpolated between tile
    centres.

    Sparse spots barely move a tile median, so this suits single-molecule frames without
    background frames; it is computed for a whole batch of frames at once.
    """
    stack = np.ascontiguousarray(frames, np.float32)
    single = stack.ndim == 2
    if single:
        stack = stack[None]
    n, w, h = stack.shape
    nbx, nby = max(1, w // block), max(1, h // block)
    bx, by = min(block, w), min(block, h)
    med = _tile_medians(stack, nbx, nby, bx, by, bx % 2 == 0 and by % 2 == 0)
    out = _interpolate(med, *_interpolation(w, nbx, block), *_interpolation(h, nby, block))
    return out[0] if single else out


@njit(cache=True, nogil=True)
def _spot_free(frames, smooth, read_variance, sigmas, grow):
    """1/0 masks ``(n, W, H)`` (uint8) of the pixels that are not part of a spot: a pixel is a
    spot when it exceeds ``smooth`` by ``sigmas`` σ of its noise; spots are grown by ``grow`` px
    (a square: running counts of spots along H, then along W)."""
    n, w, h = frames.shape
    keep = np.empty((n, w, h), np.uint8)
    per_pixel = read_variance.shape[0] > 1
    s2 = sigmas * sigmas
    spot = np.zeros((w, h + 2 * grow), np.int32)      # zero-padded along H
    near = np.zeros((w + 2 * grow, h), np.int32)      # spots within grow along H; padded along W
    hits = np.empty(h, np.int32)
    for f in range(n):
        for i in range(w):
            row, fr, sm = spot[i], frames[f, i], smooth[f, i]
            for j in range(h):
                v = read_variance[i, j] if per_pixel else read_variance[0, 0]
                d = fr[j] - sm[j]
                row[j + grow] = (d > 0) & (d * d > s2 * (max(sm[j], 0.0) + v + 1.0))
            count = 0
            for k in range(2 * grow):
                count += row[k]
            out = near[i + grow]
            for j in range(h):
                count += row[j + 2 * grow]
                out[j] = count
                count -= row[j]
        for i in range(w):
            hits[:] = near[i]
            for k in range(1, 2 * grow + 1):
                other = near[i + k]
                for j in range(h):
                    hits[j] += other[j]
            kp = keep[f, i]
            for j in range(h):
                kp[j] = hits[j] == 0
    return keep


def spot_free_mask(frames: np.ndarray, read_variance=0.0) -> np.ndarray:
    """1/0 masks (uint8) of the pixels of ``(n, W, H)`` frames (photon units) outside spots:
    a spot pixel exceeds the frame's own smooth background (:func:`from_frame`) by
    ``SPOT_SIGMA`` σ of its noise (``read_variance``: one value or a ``(W, H)`` map); spots are
    grown by ``SPOT_GROW`` px."""
    frames = np.ascontiguousarray(frames, np.float32)
    variance = np.asarray(read_variance, np.float32)
    if variance.ndim == 0:
        variance = variance.reshape(1, 1)
    return _spot_free(frames, from_frame(frames), variance, np.float32(SPOT_SIGMA), SPOT_GROW)


def without_spots(frames: np.ndarray, read_variance=0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(frames with spot pixels zeroed, 1/0 float masks of the pixels kept)``, see
    :func:`spot_free_mask`."""
    frames = np.asarray(frames, np.float32)
    keep = spot_free_mask(frames, read_variance).astype(np.float32)
    return frames * keep, keep


@njit(cache=True, nogil=True)
def _window_means(frames, keep, starts, stops):
    """For each window ``starts[k]:stops[k]`` of the rows of ``frames`` ``(m, W, H)``: the mean
    of each pixel over the frames where ``keep`` marks it outside spots, or the plain mean where
    it is a spot in every frame.  Running sums (float64) carried from window to window."""
    m, w, h = frames.shape
    out = np.empty((starts.shape[0], w, h), np.float32)
    total = np.zeros((w, h))
    count = np.zeros((w, h), np.int64)
    plain = np.zeros((w, h))
    lo = hi = 0                                      # the rows summed now
    for k in range(starts.shape[0]):
        s, e = starts[k], stops[k]
        if s < lo or s >= hi:                        # no overlap with the last window: restart
            total.fill(0.0)
            count.fill(0)
            plain.fill(0.0)
            lo = hi = s
        for r in range(lo, hi):                      # rows leaving the window, rows entering it
            if r < s or r >= e:
                _accumulate(total, count, plain, frames[r], keep[r], -1)
        for r in range(max(hi, s), e):
            _accumulate(total, count, plain, frames[r], keep[r], 1)
        lo, hi = s, e
        for i in range(w):
            for j in range(h):
                c = count[i, j]
                out[k, i, j] = total[i, j] / c if c >= 1 else plain[i, j] / (e - s)
    return out


@njit(cache=True, nogil=True)
def _accumulate(total, count, plain, frame, keep, sign):
    w, h = frame.shape
    for i in range(w):
        for j in range(h):
            v = frame[i, j]
            plain[i, j] += sign * v
            if keep[i, j]:
                total[i, j] += sign * v
                count[i, j] += sign


def window_means(frames: np.ndarray, read_variance, starts, stops) -> np.ndarray:
    """Background maps from the frames ``starts[k]:stops[k]`` of ``frames`` ``(m, W, H)``
    (photon units; each window non-empty, windows in ascending order): the mean over each
    window of every pixel's values outside spots (:func:`spot_free_mask`), or the plain mean
    where the pixel is a spot in every frame of the window."""
    frames = np.ascontiguousarray(frames, np.float32)
    keep = spot_free_mask(frames, read_variance)
    return _window_means(frames, keep, np.asarray(starts, np.int64), np.asarray(stops, np.int64))
