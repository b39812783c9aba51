"""The camera: its ``Camera.*`` metadata (pyme-protocol.md §5.3), noise model and ADU → photo-electron
conversion, and (for the simulators) photo-electrons → noisy ADU frames.

Fits work in *effective photon units*: ``d = (ADU − offset) · ElectronsPerCount / (TrueEMGain ·
NoiseFactor²)``.  In these units shot noise has variance ``d`` (EM excess noise folded in) and read
noise adds a constant variance ``gamma``, so ``d + gamma`` is close to Poisson with mean
``μ + gamma`` (the sCMOS approximation of Huang et al. 2013), which the MLE fit uses.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rules.metadata import MetadataLike


class CameraError(ValueError):
    """Camera metadata missing or out of range."""


@dataclasses.dataclass(frozen=True)
class CameraModel:
    """A camera as PYME's metadata describes it (offset and read noise in ADU and e-)."""

    ad_offset: float = 0.0
    electrons_per_count: float = 1.0
    em_gain: float = 1.0
    read_noise: float = 0.0
    noise_factor: float = 1.0

    @classmethod
    def from_metadata(cls, md: MetadataLike) -> "CameraModel":
        def num(key, default):
            value = md.get(key, default)
            try:
                return float(value)
            except (TypeError, ValueError) as exc:
                raise CameraError(f"metadata {key} = {value!r} is not a number") from exc

        model = cls(ad_offset=num("Camera.ADOffset", 0.0),
                    electrons_per_count=num("Camera.ElectronsPerCount", 1.0),
                    em_gain=num("Camera.TrueEMGain", 1.0),
                    read_noise=num("Camera.ReadNoise", 0.0),
                    noise_factor=num("Camera.NoiseFactor", 1.0))
        for name in ("electrons_per_count", "em_gain", "noise_factor"):
            if not getattr(model, name) > 0:
                raise CameraError(f"camera {name} must be > 0, got {getattr(model, name)}")
        if model.read_noise < 0:
            raise CameraError(f"camera read noise must be >= 0, got {model.read_noise}")
        return model

    def metadata(self) -> dict[str, Any]:
        """The ``Camera.*`` metadata entries that :meth:`from_metadata` reads back."""
        return {"Camera.ADOffset": self.ad_offset,
                "Camera.ElectronsPerCount": self.electrons_per_count,
                "Camera.TrueEMGain": self.em_gain, "Camera.ReadNoise": self.read_noise,
                "Camera.NoiseFactor": self.noise_factor}

    def expose(self, photons: np.ndarray, rng: np.random.Generator, *,
               offset: np.ndarray | None = None,
               read_variance: np.ndarray | None = None) -> np.ndarray:
        """A uint16 ADU frame from expected photo-electrons per pixel: Poisson shot noise, EM
        multiplication (gamma-distributed when ``em_gain > 1``), Gaussian read noise, gain, offset.
        An sCMOS camera has a per-pixel ``offset`` (ADU) and ``read_variance`` (e⁻²) instead of
        ``ad_offset`` and ``read_noise``."""
        return self.read_out(rng.poisson(photons), rng, offset=offset, read_variance=read_variance)

    def read_out(self, electrons: np.ndarray, rng: np.random.Generator, *,
                 offset: np.ndarray | None = None,
                 read_variance: np.ndarray | None = None) -> np.ndarray:
        """:meth:`expose` after the shot noise: photo-electron counts → uint16 ADU."""
        electrons = np.asarray(electrons).astype(np.float64)
        if self.em_gain > 1:
            hit = electrons > 0
            electrons[hit] = rng.gamma(electrons[hit], self.em_gain)
        else:
            electrons *= self.em_gain
        read_sigma = self.read_noise if read_variance is None else np.sqrt(read_variance)
        electrons += rng.normal(0.0, 1.0, size=electrons.shape) * read_sigma
        adu = np.round(electrons / self.electrons_per_count
                       + (self.ad_offset if offset is None else offset))
        return np.clip(adu, 0, 65535).astype(np.uint16)

    @property
    def adu_per_unit(self) -> float:
        """ADU per effective photon unit."""
        return self.em_gain * self.noise_factor ** 2 / self.electrons_per_count

    @property
    def gamma(self) -> float:
        """Read-noise variance in effective photon units."""
        return (self.read_noise / (self.em_gain * self.noise_factor ** 2)) ** 2

    def to_units(self, adu: np.ndarray) -> np.ndarray:
        """Offset-subtract and convert ADU to effective photon units (float32)."""
        return (np.asarray(adu, np.float32) - np.float32(self.ad_offset)) / np.float32(
            self.adu_per_unit)

    def noise_sigma_adu(self, data_adu: np.ndarray) -> np.ndarray:
        """Per-pixel noise σ in ADU for offset-subtracted data (PYME's noise model, §5.3)."""
        g, epc, nf = self.em_gain, self.electrons_per_count, self.noise_factor
        data = np.maximum(data_adu, 1.0)
        return np.sqrt(self.read_noise ** 2 + nf ** 2 * (epc * g * data + g ** 2)) / epc

    def noise_sigma_units(self, data_units: np.ndarray) -> np.ndarray:
        """The same noise σ, taking and returning effective photon units."""
        return self.noise_sigma_adu(np.asarray(data_units) * self.adu_per_unit) / self.adu_per_unit
