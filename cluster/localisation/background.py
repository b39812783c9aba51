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
from scipy import ndimage

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
def _interpolation_matrix(size: int, tiles: int, block: int) -> np.ndarray:
    """``(size, tiles)`` weights of linear interpolation from tile centres to pixels, clamped
    at the borders (a pixel beyond the first or last tile centre takes that tile's value)."""
    centre = np.clip((np.arange(size) + 0.5) / block - 0.5, 0, tiles - 1)
    lo = np.floor(centre).astype(int)
    hi = np.minimum(lo + 1, tiles - 1)
    frac = centre - lo
    weights = np.zeros((size, tiles), np.float32)
    np.add.at(weights, (np.arange(size), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(size), hi), frac)
    return weights


def from_frame(frames: np.ndarray, block: int = 16) -> np.ndarray:
    """Smooth background map of each frame (``(W, H)`` or ``(n, W, H)``): medians of
    ``block``×``block`` tiles (of 2×2-pixel means, which halves the median's Poisson bias and its
    cost), bilinearly interpolated between tile centres.

    Sparse spots barely move a tile median, so this suits single-molecule frames without
    background frames; it is computed for a whole batch of frames at once.
    """
    stack = np.asarray(frames, np.float32)
    single = stack.ndim == 2
    if single:
        stack = stack[None]
    n, w, h = stack.shape
    nbx, nby = max(1, w // block), max(1, h // block)
    bx, by = min(block, w), min(block, h)
    tiles = stack[:, :nbx * bx, :nby * by]
    if bx % 2 == 0 and by % 2 == 0:
        tiles = tiles[:, 0::2] + tiles[:, 1::2]
        tiles = (tiles[:, :, 0::2] + tiles[:, :, 1::2]) * np.float32(0.25)
        bx, by = bx // 2, by // 2
    tiles = tiles.reshape(n, nbx, bx, nby, by).transpose(0, 1, 3, 2, 4).reshape(n, nbx, nby, -1)
    med = np.median(tiles, axis=3).astype(np.float32)
    out = _interpolation_matrix(w, nbx, block) @ med @ _interpolation_matrix(h, nby, block).T
    return out[0] if single else out


def without_spots(frames: np.ndarray, read_variance=0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(frames with spot pixels zeroed, 1/0 masks of the pixels kept)`` for ``(n, W, H)``
    frames in photon units; ``read_variance`` is one value or a ``(W, H)`` map."""
    frames = np.asarray(frames, np.float32)
    smooth = from_frame(frames)
    sigma = np.sqrt(np.maximum(smooth, 0.0) + read_variance + 1.0)
    spot = frames - smooth > SPOT_SIGMA * sigma
    grown = ndimage.maximum_filter(spot, size=(1, 2 * SPOT_GROW + 1, 2 * SPOT_GROW + 1))
    keep = (~grown).astype(np.float32)
    return frames * keep, keep
