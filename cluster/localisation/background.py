"""Background estimates: from the ``Analysis.BGRange`` frames, or from the frame itself."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


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


def from_frame(frame: np.ndarray, block: int = 16) -> np.ndarray:
    """Smooth background map of one frame: medians of ``block``×``block`` tiles, interpolated.

    Sparse spots barely move a tile median, so this suits single-molecule frames without
    background frames.
    """
    frame = np.asarray(frame, np.float32)
    w, h = frame.shape
    nbx, nby = max(1, w // block), max(1, h // block)
    tiles = frame[:nbx * block, :nby * block].reshape(nbx, block, nby, block)
    med = np.median(tiles.transpose(0, 2, 1, 3).reshape(nbx, nby, -1), axis=2)
    # tile centres → pixel grid (bilinear, clamped at the borders)
    cx = (np.arange(w) + 0.5) / block - 0.5
    cy = (np.arange(h) + 0.5) / block - 0.5
    gx, gy = np.meshgrid(np.clip(cx, 0, nbx - 1), np.clip(cy, 0, nby - 1), indexing="ij")
    return ndimage.map_coordinates(med, [gx, gy], order=1, mode="nearest").astype(np.float32)
