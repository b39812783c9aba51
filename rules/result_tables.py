"""Results tables for people: readable column names with units, the row count of a table on the
cluster, and a table read page by page into plain columns (no Qt).

A ``FitResults`` table (PYME's ``LatGaussFitFR`` records) is shown as the readable localisation
columns of :mod:`rules.localisations` (x, y in nm, intensity in photons, ...). Any other table
(a recipe's output, a blob table ``.csv``) keeps its columns, nested ones flattened ``outer_inner``
as PYME flattens them, each labelled from :data:`KNOWN_COLUMNS` (``area_nm2`` → ``area [nm²]``).

:class:`ResultTable` reads ``.h5r`` tables with the data server's ``from=``/``to=`` reads: the
first page and the row count (Spoolside's data server sends it with the page; on PYME's,
:func:`table_length` finds it with one-row reads), then the rest in chunks into columns allocated
once, so a window shows the first rows of a million-row table at once and sorts or plots all of
them when the rest has arrived.
"""
from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass, field

import numpy as np

from .dataserver_client import DataClient
from .errors import ProtocolError
from .localisations import COLUMNS, Column, PhotonConversion, check_records, localisation_columns
from .metadata import MetaDataHandler
from .uris import parse_cluster_uri

#: Rows read first (what a window shows at once).
FIRST_PAGE_ROWS = 1000
#: Rows per read after the first page.
CHUNK_ROWS = 100_000
#: Most rows held in memory for sorting and plots (about 45 bytes a row for localisations).
MAX_HELD_ROWS = 5_000_000
#: Largest ``.csv`` read (bytes).
MAX_CSV_BYTES = 200_000_000

#: Label and unit of columns found in PYME's and our recipes' tables, by column name.
KNOWN_COLUMNS: dict[str, tuple[str, str]] = {
    "x": ("x", "nm"), "y": ("y", "nm"), "z": ("z", "nm"), "t": ("frame", ""),
    "tIndex": ("frame", ""), "A": ("amplitude", "ADU"), "sig": ("sigma", "nm"),
    "bg": ("background", "ADU"), "error_x": ("error x", "nm"), "error_y": ("error y", "nm"),
    "error_z": ("error z", "nm"), "error_A": ("error amplitude", "ADU"),
    "error_sig": ("error sigma", "nm"), "error_bg": ("error background", "ADU"),
    "nPhotons": ("photons", "photon"), "nchi2": ("chi2 (reduced)", ""),
    "fitResults_x0": ("x", "nm"), "fitResults_y0": ("y", "nm"),
    "fitResults_A": ("amplitude", "ADU"), "fitResults_sigma": ("sigma", "nm"),
    "fitResults_background": ("background", "ADU"), "fitError_x0": ("error x", "nm"),
    "fitError_y0": ("error y", "nm"), "fitError_A": ("error amplitude", "ADU"),
    "fitError_sigma": ("error sigma", "nm"), "fitError_background": ("error background", "ADU"),
    "label": ("label", ""), "area": ("area", "px²"), "area_nm2": ("area", "nm²"),
    "centroid_x": ("centroid x", "px"), "centroid_y": ("centroid y", "px"),
    "bbox_x0": ("box x0", "px"), "bbox_y0": ("box y0", "px"), "bbox_x1": ("box x1", "px"),
    "bbox_y1": ("box y1", "px"), "major_axis_length": ("major axis", "px"),
    "minor_axis_length": ("minor axis", "px"), "orientation": ("orientation", "rad"),
    "equivalent_diameter": ("equivalent diameter", "px"),
    "x_weighted": ("weighted x", "nm"), "y_weighted": ("weighted y", "nm"),
}


def known_column(name: str) -> Column:
    """The readable :class:`~rules.localisations.Column` of a table column called ``name``
    (unknown names are their own label, without a unit)."""
    label, unit = KNOWN_COLUMNS.get(name, (name, ""))
    return Column(name, f"{label} [{unit}]" if unit else label, unit)


def _flatten(records: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for name in records.dtype.names or ():
        values = records[name]
        key = f"{prefix}{name}"
        if values.dtype.names is not None:
            columns.update(_flatten(values, key + "_"))
        elif values.ndim == 1:
            columns[key] = values
        # sub-arrays (e.g. slicesUsed) say nothing a person reads in a table
    return columns


def is_fit_results(records: np.ndarray) -> bool:
    try:
        check_records(records)
    except ValueError:
        return False
    return True


def readable_columns(records: np.ndarray, conversion: PhotonConversion = PhotonConversion()
                     ) -> tuple[list[Column], dict[str, np.ndarray]]:
    """The columns of a structured array a person reads, in order, and their values by key:
    fit results become the localisation columns, other tables keep theirs, labelled."""
    if records.dtype.names is None:
        raise ValueError("a table needs named columns")
    if is_fit_results(records):
        return list(COLUMNS), localisation_columns(records, conversion)
    flat = _flatten(records)
    return [known_column(name) for name in flat], flat


def table_length(data: DataClient, path: str, table: str) -> int:
    """Rows in ``table`` of ``.h5r`` file ``path``, found with one-row ``from=``/``to=`` reads
    (doubling, then halving: about 2·log₂ n requests). FileNotFoundError if there is none."""
    def has_row(index: int) -> bool:
        return len(data.read_table(path, table, index, index + 1)) > 0

    if not has_row(0):
        return 0
    low, high = 0, 1  # row ``low`` exists; find the first missing one
    while has_row(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if has_row(middle):
            low = middle
        else:
            high = middle
    return high


def _held_dtype(values: np.ndarray) -> np.dtype:
    # float32 is plenty to read, sort and plot (x to 0.01 nm), and halves the memory
    return np.dtype(np.float32) if values.dtype.kind == "f" else values.dtype


@dataclass
class TableColumns:
    """Columns of a table, allocated for ``held`` rows and filled up to ``loaded``."""

    columns: list[Column]
    values: dict[str, np.ndarray]
    total: int
    held: int
    loaded: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def allocate(cls, columns: list[Column], first: dict[str, np.ndarray], total: int,
                 max_rows: int = MAX_HELD_ROWS) -> "TableColumns":
        held = min(total, max_rows)
        values = {c.key: np.empty(held, _held_dtype(first[c.key])) for c in columns}
        return cls(columns, values, total, held)

    def append(self, chunk: dict[str, np.ndarray]) -> int:
        """Add the next rows (as many as fit in ``held``); the number added."""
        n = min(len(next(iter(chunk.values()))) if chunk else 0, self.held - self.loaded)
        for key, array in self.values.items():
            array[self.loaded:self.loaded + n] = chunk[key][:n]
        self.loaded += n
        return n

    @property
    def complete(self) -> bool:
        return self.loaded >= self.held

    def caption(self) -> str:
        """``"1,000,000 rows"``, or how far reading has got."""
        if self.complete and self.held == self.total:
            return f"{self.total:,} rows"
        if self.complete:
            return f"{self.total:,} rows (the first {self.held:,} held)"
        return f"{self.total:,} rows ({self.loaded:,} read so far)"


class ResultTable:
    """A table on the cluster (``.h5r`` table or ``.csv``), read into :class:`TableColumns`.

    :meth:`open` reads the row count and the first page; :meth:`read_more` the next chunk, until
    it returns False. ``uri`` is a ``PYME-CLUSTER://`` URI or bare path (``?table=`` picks an
    ``.h5r`` table, default ``FitResults``).
    """

    def __init__(self, data: DataClient, uri: str, *, first_rows: int = FIRST_PAGE_ROWS,
                 chunk_rows: int = CHUNK_ROWS, max_rows: int = MAX_HELD_ROWS):
        parsed = parse_cluster_uri(uri)
        self.data = data
        self.path = parsed.path.strip("/")
        self.table = parsed.query.get("table", "FitResults")
        self.first_rows, self.chunk_rows, self.max_rows = first_rows, chunk_rows, max_rows
        self.is_csv = posixpath.splitext(self.path)[1].lower() == ".csv"
        self.conversion = PhotonConversion()
        self.fit_results = False
        self.columns: TableColumns | None = None
        self._notes: list[str] = []
        self._next_row = 0

    def open(self) -> TableColumns:
        """Row count and first page. FileNotFoundError, ValueError (not a table), ClusterError."""
        if self.is_csv:
            return self._open_csv()
        first, total = self.data.read_table_page(self.path, self.table, 0, self.first_rows)
        if total is None:  # not said (PYME's data server)
            total = len(first) if len(first) < self.first_rows else \
                table_length(self.data, self.path, self.table)
        if first.dtype.names is None:
            raise ProtocolError(f"table {self.table!r} of {self.path} has no named columns")
        self.fit_results = is_fit_results(first)
        if self.fit_results:
            try:
                md = MetaDataHandler.from_JSON(self.data.get_file(f"{self.path}/MetaData"))
                self.conversion = PhotonConversion.from_metadata(md)
            except (FileNotFoundError, ValueError) as exc:
                self._notes.append(f"no metadata ({exc}): photons assume 1 e⁻/ADU, 100 nm pixels")
        columns, values = readable_columns(first, self.conversion)
        self.columns = TableColumns.allocate(columns, values, total, self.max_rows)
        self.columns.notes.extend(self._notes)
        self.columns.append(values)
        self._next_row = len(first)
        return self.columns

    def _open_csv(self) -> TableColumns:
        data = self.data.get_file(self.path)
        if len(data) > MAX_CSV_BYTES:
            raise ValueError(f"{self.path} is {len(data) / 1e6:.0f} MB; tables over "
                             f"{MAX_CSV_BYTES / 1e6:.0f} MB are not shown")
        if not data.strip():
            raise ValueError(f"{self.path} is empty")
        try:
            records = np.genfromtxt(io.BytesIO(data), delimiter=",", names=True, dtype=None,
                                    encoding="utf-8", deletechars="")
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{self.path} is not a CSV table: {exc}") from exc
        records = np.atleast_1d(records)
        if records.dtype.names is None:
            raise ValueError(f"{self.path} has no header row of column names")
        columns, values = readable_columns(records)
        self.columns = TableColumns.allocate(columns, values, len(records), self.max_rows)
        self.columns.append(values)
        return self.columns

    def read_more(self) -> bool:
        """Read the next chunk into :attr:`columns`; False when everything held has been read."""
        columns = self.columns
        if columns is None:
            raise RuntimeError("open() first")
        if columns.complete:
            return False
        stop = min(self._next_row + self.chunk_rows, columns.held)
        rows = self.data.read_table(self.path, self.table, self._next_row, stop)
        if not len(rows):  # the table shrank? nothing more to read
            columns.held = columns.loaded
            return False
        _, values = readable_columns(rows, self.conversion)
        columns.append(values)
        self._next_row += len(rows)
        return not columns.complete
