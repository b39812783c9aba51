"""Export localisations to files other tools read: ThunderSTORM-style CSV, or HDF5.

CSV: a quoted header line ``"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]",
"offset [photon]","uncertainty [nm]"`` (ThunderSTORM's names and units), one localisation per line.
Frames are numbered from 1 as ThunderSTORM numbers them (PYME's ``tIndex`` + 1).
HDF5: one table ``/localisations`` with the readable columns of :data:`rules.localisations.COLUMNS`
(frame as PYME's 0-based index), each column's unit as an attribute ``<key>_unit``.

Files are written to a temporary name next to the target and moved into place when complete, so an
error never leaves a half-written file; an existing file is only replaced with ``overwrite=True``.
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable, Iterable

import numpy as np

from .dataserver_client import DataClient
from .files import atomic_path
from .localisations import COLUMNS, PhotonConversion, localisation_columns
from .results_reader import IncrementalTable

FORMATS = ("csv", "hdf5")
#: ThunderSTORM's header names for our columns, in its order (``id`` is added in front).
THUNDERSTORM_COLUMNS = (("frame", "frame"), ("x", "x [nm]"), ("y", "y [nm]"),
                        ("sigma", "sigma [nm]"), ("intensity", "intensity [photon]"),
                        ("background", "offset [photon]"), ("uncertainty", "uncertainty [nm]"))


def format_for(path: str | os.PathLike) -> str:
    """``csv`` or ``hdf5`` from a file name's extension (ValueError for anything else)."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix in (".csv", ".txt"):
        return "csv"
    if suffix in (".h5", ".hdf5", ".hdf"):
        return "hdf5"
    raise ValueError(f"cannot tell the export format from {suffix or 'no extension'!r}: "
                     "use .csv, or .h5/.hdf5")


def export_localisations(batches: Iterable[dict[str, np.ndarray]], path: str | os.PathLike, *,
                         fmt: str | None = None, overwrite: bool = False) -> int:
    """Write batches of readable columns to ``path``; return the number of localisations."""
    target = pathlib.Path(path)
    fmt = fmt or format_for(target)
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"folder {target.parent} does not exist")
    writer: Callable = _write_csv if fmt == "csv" else _write_hdf5
    with atomic_path(target) as temporary:
        count = writer(batches, temporary)
    return count


def _write_csv(batches: Iterable[dict[str, np.ndarray]], path: pathlib.Path) -> int:
    count = 0
    header = ",".join(f'"{label}"' for label in ["id"] + [lab for _, lab in THUNDERSTORM_COLUMNS])
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(header + "\n")
        for columns in batches:
            n = len(columns["frame"])
            if not n:
                continue
            table = np.column_stack([np.arange(count + 1, count + n + 1)]
                                    + [columns[key] + (1 if key == "frame" else 0)
                                       for key, _ in THUNDERSTORM_COLUMNS])
            np.savetxt(out, table, delimiter=",",
                       fmt=["%d", "%d"] + ["%.6g"] * (len(THUNDERSTORM_COLUMNS) - 1))
            count += n
    return count


def _write_hdf5(batches: Iterable[dict[str, np.ndarray]], path: pathlib.Path) -> int:
    import tables  # PyTables: imported only when HDF5 is asked for

    dtype = np.dtype([(c.key, np.int32 if c.key == "frame" else np.float64) for c in COLUMNS])
    count = 0
    with tables.open_file(str(path), "w") as h5:
        table = h5.create_table("/", "localisations", description=dtype,
                                filters=tables.Filters(complevel=5, complib="zlib", shuffle=True))
        for column in COLUMNS:
            table.attrs[f"{column.key}_unit"] = column.unit
        for columns in batches:
            n = len(columns["frame"])
            if not n:
                continue
            rows = np.empty(n, dtype)
            for column in COLUMNS:
                rows[column.key] = columns[column.key]
            table.append(rows)
            count += n
    return count


def cluster_batches(data: DataClient, results_path: str, *,
                    table: str = "FitResults") -> Iterable[dict[str, np.ndarray]]:
    """Readable columns of a results file on the cluster, chunk by chunk (its metadata gives the
    photon conversion). FileNotFoundError when the file or table does not exist."""
    reader = IncrementalTable(data, results_path, table)
    conversion = PhotonConversion.from_metadata(reader.metadata())
    first = True
    while True:
        rows = reader.read_new(reader.chunk_rows)
        if rows is None:
            if first:
                raise FileNotFoundError(f"no table {table!r} in {results_path}")
            return
        first = False
        yield localisation_columns(rows, conversion)
