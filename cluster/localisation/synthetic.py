"""Simulated single-molecule frames for tests and the benchmark.

Isolated emitters, a Gaussian PSF integrated over square pixels, Poisson shot noise on spot and
background photons, optional EM gain (gamma-distributed multiplication), Gaussian read noise,
gain to ADU and a dark offset; frames are uint16 with PYME's axes (axis 0 = x).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy.special import erf


@dataclasses.dataclass(frozen=True)
class SimCamera:
    ad_offset: float = 100.0
    electrons_per_count: float = 0.5
    em_gain: float = 1.0
    read_noise: float = 1.5
    noise_factor: float = 1.0

    def metadata(self) -> dict[str, Any]:
        return {"Camera.ADOffset": self.ad_offset,
                "Camera.ElectronsPerCount": self.electrons_per_count,
                "Camera.TrueEMGain": self.em_gain, "Camera.ReadNoise": self.read_noise,
                "Camera.NoiseFactor": self.noise_factor}


def integrated_psf(centres: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Fraction of each emitter's photons in each pixel along one axis: ``(n, size)``."""
    edges = np.arange(size + 1) - 0.5
    cdf = 0.5 * erf((edges[None, :] - centres[:, None]) / (np.sqrt(2.0) * sigma))
    return np.diff(cdf, axis=1)


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
                    pixel_nm: float = 100.0, camera: SimCamera = SimCamera(),
                    min_distance_px: float = 8.0, margin_px: float = 3.0, seed: int = 0):
    """Simulate frames with new isolated emitters in each frame.

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
        ex = integrated_psf(pos[:, 0], sigma_px, shape[0])
        ey = integrated_psf(pos[:, 1], sigma_px, shape[1])
        expected = photons * ex.T @ ey + background
        electrons = rng.poisson(expected).astype(np.float64)
        if camera.em_gain > 1:
            hit = electrons > 0
            electrons[hit] = rng.gamma(electrons[hit], camera.em_gain)
        else:
            electrons *= camera.em_gain
        electrons += rng.normal(0.0, camera.read_noise, size=electrons.shape)
        adu = np.round(electrons / camera.electrons_per_count + camera.ad_offset)
        frames[t] = np.clip(adu, 0, 65535).astype(np.uint16)
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
    from scipy.spatial import cKDTree

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
