"""What flows through a recipe's namespace: tables of localisations/measurements and images.

Conventions (PYME's): image axis 0 is x, axis 1 is y; ``voxelsize`` is in nm; ``origin`` is the
position in nm of the *corner* of pixel (0, 0), so pixel ``i`` covers
``[origin + i * voxel, origin + (i + 1) * voxel)`` and its centre is at ``origin + (i + 0.5) * voxel``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import numpy as np

#: The aliases PYME's results reader adds to a flattened ``LatGaussFitFR`` table.
PYME_ALIASES = {
    "x": "fitResults_x0",
    "y": "fitResults_y0",
    "A": "fitResults_A",
    "sig": "fitResults_sigma",
    "error_x": "fitError_x0",
    "error_y": "fitError_y0",
    "t": "tIndex",
}


def flatten_records(records: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten a (nested) structured array into ``{name_sub: 1-D array}`` as PYME's readers do."""
    columns: dict[str, np.ndarray] = {}
    for name in records.dtype.names or ():
        field = records[name]
        full = f"{prefix}{name}"
        if field.dtype.names:
            columns.update(flatten_records(field, full + "_"))
        elif field.ndim > 1:
            for i in range(field.shape[1]):
                columns[f"{full}_{i}"] = np.ascontiguousarray(field[:, i])
        else:
            columns[full] = np.ascontiguousarray(field)
    return columns


class Table:
    """An ordered dict of equal-length 1-D columns, plus ``metadata`` and column aliases."""

    def __init__(self, columns: Mapping[str, Any] | None = None, *,
                 metadata: Mapping[str, Any] | None = None,
                 aliases: Mapping[str, str] | None = None):
        self.columns: dict[str, np.ndarray] = {}
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.aliases: dict[str, str] = {}
        length = None
        for name, values in (columns or {}).items():
            array = np.asarray(values)
            if array.ndim != 1:
                array = array.reshape(-1) if array.ndim == 0 else array
            if array.ndim != 1:
                raise ValueError(f"column {name!r} is not 1-D (shape {array.shape})")
            if length is not None and len(array) != length:
                raise ValueError(f"column {name!r} has {len(array)} rows, expected {length}")
            length = len(array)
            self.columns[str(name)] = array
        self._length = length or 0
        for alias, target in (aliases or {}).items():
            if target in self.columns and alias not in self.columns:
                self.aliases[alias] = target

    @classmethod
    def from_records(cls, records: np.ndarray, *, metadata: Mapping[str, Any] | None = None) -> Table:
        """Table of a structured array, flattened with ``_`` and given PYME's aliases."""
        return cls(flatten_records(np.asarray(records)), metadata=metadata, aliases=PYME_ALIASES)

    def __len__(self) -> int:
        return self._length

    def __contains__(self, name: object) -> bool:
        return name in self.columns or name in self.aliases

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.columns:
            return self.columns[name]
        if name in self.aliases:
            return self.columns[self.aliases[name]]
        raise KeyError(name)

    def keys(self) -> list[str]:
        """The real columns, in order (aliases excluded)."""
        return list(self.columns)

    def names(self) -> list[str]:
        """Every name that can be looked up: columns, then aliases."""
        return list(self.columns) + [a for a in self.aliases if a not in self.columns]

    def take(self, selection: np.ndarray) -> Table:
        """A new table of the rows picked by a boolean mask or index array."""
        return Table({k: v[selection] for k, v in self.columns.items()},
                     metadata=self.metadata, aliases=self.aliases)

    def with_columns(self, new: Mapping[str, Any]) -> Table:
        """A new table with extra (or replaced) columns; scalars are broadcast."""
        columns = dict(self.columns)
        for name, values in new.items():
            array = np.asarray(values)
            if array.ndim == 0:
                array = np.full(len(self), array)
            columns[name] = array
        aliases = {a: t for a, t in self.aliases.items() if a not in new}
        return Table(columns, metadata=self.metadata, aliases=aliases)

    def to_records(self) -> np.ndarray:
        """The real columns as a flat structured array."""
        dtype = [(name, values.dtype) for name, values in self.columns.items()]
        records = np.empty(len(self), dtype=dtype)
        for name, values in self.columns.items():
            records[name] = values
        return records

    def __repr__(self) -> str:
        return f"Table({len(self)} rows, columns={self.keys()})"


@dataclasses.dataclass
class Image:
    """An image (axis 0 = x, axis 1 = y, then z, t) with voxel size and origin in nm."""

    data: np.ndarray
    voxelsize: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def derived(self, data: np.ndarray, **metadata: Any) -> Image:
        """An image on the same grid (voxel size, origin, metadata) holding new data."""
        md = dict(self.metadata)
        md.update(metadata)
        return Image(np.asarray(data), self.voxelsize, self.origin, md)

    def pixel_centres_nm(self, axis: int, index: Iterable[float] | np.ndarray) -> np.ndarray:
        """Positions in nm of (fractional) pixel indices along ``axis`` (0 = x, 1 = y)."""
        return self.origin[axis] + (np.asarray(index, dtype=float) + 0.5) * self.voxelsize[axis]
