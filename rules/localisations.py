"""Localisations as readable columns with units, from PYME fit-result records (§5.4).

A ``FitResults`` row (``LatGaussFitFR`` layout) holds ``tIndex``, ``fitResults.{A, x0, y0, sigma,
background, ...}`` and their ``fitError``; :func:`localisation_columns` turns a batch of them into
flat float columns a person (or another tool) can read: positions and widths in nm, intensity and
background in photons, localisation uncertainty in nm.

Photon numbers follow the usual conversion for a Gaussian spot of peak amplitude ``A`` (ADU):
``A · 2π (σ / pixel)² · ElectronsPerCount / TrueEMGain``; background is per pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

#: ``fitError`` value PYME writes for a parameter whose error is not estimable.
NOT_ESTIMABLE = -5000.0


@dataclass(frozen=True)
class Column:
    """One readable column: key, header label (with unit) and unit."""

    key: str
    label: str
    unit: str


#: The readable columns, in export order.
COLUMNS: tuple[Column, ...] = (
    Column("frame", "frame", ""),
    Column("x", "x [nm]", "nm"),
    Column("y", "y [nm]", "nm"),
    Column("sigma", "sigma [nm]", "nm"),
    Column("intensity", "intensity [photon]", "photon"),
    Column("background", "offset [photon]", "photon"),
    Column("uncertainty", "uncertainty [nm]", "nm"),
    Column("error_x", "error x [nm]", "nm"),
    Column("error_y", "error y [nm]", "nm"),
    Column("A", "amplitude [ADU]", "ADU"),
    Column("nchi2", "chi2 (reduced)", ""),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)


@dataclass(frozen=True)
class PhotonConversion:
    """What turns ADU and pixels into photons and nm: pixel size (nm), e⁻ per ADU, EM gain."""

    pixel_nm: float = 100.0
    electrons_per_count: float = 1.0
    em_gain: float = 1.0

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any] | Any) -> "PhotonConversion":
        """From series/results metadata (flat dotted keys); absent or bad entries keep defaults.

        ``voxelsize.x`` is in µm (PYME's unit).
        """
        def number(key: str, default: float) -> float:
            getter = getattr(md, "getOrDefault", None) or md.get
            try:
                value = float(getter(key, default))
            except (TypeError, ValueError):
                return default
            return value if math.isfinite(value) and value > 0 else default

        return cls(pixel_nm=number("voxelsize.x", cls.pixel_nm / 1000.0) * 1000.0,
                   electrons_per_count=number("Camera.ElectronsPerCount", 1.0),
                   em_gain=number("Camera.TrueEMGain", 1.0))

    @property
    def photons_per_adu(self) -> float:
        return self.electrons_per_count / self.em_gain


def _field(records: np.ndarray, group: str, name: str) -> np.ndarray:
    """``records[group][name]`` as float64, NaN when the record type lacks it."""
    names = records.dtype.names or ()
    if group in names and name in (records.dtype[group].names or ()):
        return records[group][name].astype(np.float64)
    return np.full(len(records), np.nan)


def _error(records: np.ndarray, name: str) -> np.ndarray:
    values = _field(records, "fitError", name)
    return np.where(values >= 0, values, np.nan)  # −5000: not estimable


def check_records(records: np.ndarray) -> None:
    """ValueError unless ``records`` are fit results with a frame index and x/y positions."""
    names = records.dtype.names or ()
    if "tIndex" not in names or "fitResults" not in names or not {"x0", "y0"} <= set(
            records.dtype["fitResults"].names or ()):
        raise ValueError("not a table of fit results: it needs tIndex and fitResults.x0/y0 "
                         f"(columns: {', '.join(names) or 'none'})")


def localisation_columns(records: np.ndarray,
                         conversion: PhotonConversion = PhotonConversion()) -> dict[str, np.ndarray]:
    """Readable columns (:data:`COLUMNS`, float64 arrays; NaN where not known) of fit results."""
    check_records(records)
    sigma = _field(records, "fitResults", "sigma")
    amplitude = _field(records, "fitResults", "A")
    error_x, error_y = _error(records, "x0"), _error(records, "y0")
    names = records.dtype.names or ()
    spot_pixels = 2.0 * math.pi * (sigma / conversion.pixel_nm) ** 2
    return {
        "frame": records["tIndex"].astype(np.float64),
        "x": _field(records, "fitResults", "x0"),
        "y": _field(records, "fitResults", "y0"),
        "sigma": sigma,
        "intensity": amplitude * spot_pixels * conversion.photons_per_adu,
        "background": _field(records, "fitResults", "background") * conversion.photons_per_adu,
        "uncertainty": 0.5 * (error_x + error_y),
        "error_x": error_x,
        "error_y": error_y,
        "A": amplitude,
        "nchi2": (records["nchi2"].astype(np.float64) if "nchi2" in names
                  else np.full(len(records), np.nan)),
    }
