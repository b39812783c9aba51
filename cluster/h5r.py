"""PyTables ``.h5r`` results files, laid out as PYME's data server writes them (protocol §5.4).

Tables sit under the root (``/FitResults``, ``/Events``, ...), each created on the first append
from the records' numpy dtype with zlib level 5 + shuffle. Metadata (flat dotted keys) lives as HDF5
attributes under ``/MetaData``, one sub-group per key component: ``Camera.ADOffset`` is the
attribute ``ADOffset`` of ``/MetaData/Camera``. Values that HDF5 cannot hold natively (lists,
dicts) are stored the way PyTables does it, as protocol-0 pickles, which PYME reads back.

PyTables is not thread-safe, so every call here holds one process-wide lock (:data:`HDF5_LOCK`).

Writes are crash-safe and cost the size of the change, not of the file: each append or metadata
merge is written into a hidden shadow copy of the file, flushed to disk and renamed over the
original (:mod:`cluster.h5r_shadow`). A kill, a power cut or a full disk during a write leaves the
previous file, with every row committed before it; a full disk raises :class:`DiskFull`. An
append may carry the identity of the tasks whose rows it holds (:class:`TaskRows`): rows of
tasks already filed to that table are skipped, in the same atomic write that records the new
identities (group ``/_spoolside``, not a table, so PYME's readers ignore it). A re-run or late task
therefore never duplicates rows.

Reading pickled attributes is made safe: this module imports :mod:`rules.hdf5_attrs`, which points
PyTables' attribute unpickling at a data-only unpickler (a crafted ``.h5r`` cannot run code), and
reads ``/MetaData`` with its :func:`~rules.hdf5_attrs.read_metadata_from`.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import pickle
import re
import shutil
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import tables

from cluster import h5r_shadow
from cluster.h5r_shadow import FILE_MODE, TMP_PREFIX  # noqa: F401 - re-exported
from rules.hdf5_attrs import METADATA_GROUP, read_metadata_from
from rules.localisation import EVENTS_DTYPE  # noqa: F401 - PYME's events record, owned by the engine

logger = logging.getLogger(__name__)

#: One lock for all HDF5 access in this process (PyTables/HDF5 are not thread-safe).
HDF5_LOCK = threading.RLock()

#: Filters of every table PYME's data server creates.
FILTERS = tables.Filters(complevel=5, complib="zlib", shuffle=True)

#: ``expectedrows`` that reproduces the fixture's chunk shapes (FitResults 1213, Events 885).
EXPECTED_ROWS = 500_000

#: Where the identities of filed tasks are kept (one int64 (rule key, task ID) array per table).
FILED_GROUP = "_spoolside"

TABLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class H5RError(ValueError):
    """A results file, table name, record batch or metadata value that cannot be used."""


class DiskFull(OSError):
    """The disk holding a results file is full; the file is left as it was before the write."""


@dataclass(frozen=True)
class TaskRows:
    """Which task each row of an append belongs to: the rule and ``(task ID, row count)`` pairs,
    in the order of the rows."""

    rule_id: str
    counts: tuple[tuple[int, int], ...]

    @property
    def key(self) -> int:
        """The rule as a signed 64-bit number (stored with each filed task ID)."""
        digest = hashlib.blake2b(self.rule_id.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little", signed=True)

    @classmethod
    def parse(cls, rule_id: str, text: str) -> "TaskRows":
        """From ``"<task>:<rows>,<task>:<rows>,..."`` (what the worker sends)."""
        counts = []
        for item in filter(None, text.split(",")):
            task, sep, rows = item.partition(":")
            try:
                pair = (int(task), int(rows))
            except ValueError:
                pair = (-1, -1)
            if not sep or pair[0] < 0 or pair[1] < 0:
                raise H5RError(f"task rows must read '<task>:<rows>,...', not {item!r}")
            counts.append(pair)
        if not rule_id or not counts:
            raise H5RError("task rows need a rule ID and at least one task")
        if len({task for task, _ in counts}) != len(counts):
            raise H5RError("a task is listed twice in the task rows")
        return cls(rule_id, tuple(counts))

    def text(self) -> str:
        return ",".join(f"{task}:{rows}" for task, rows in self.counts)


# -- helpers ----------------------------------------------------------------------------------
def _check_table_name(name: str) -> None:
    if not isinstance(name, str) or not TABLE_NAME_RE.match(name) or name == METADATA_GROUP:
        raise H5RError(f"invalid table name {name!r}")


def _open(path: str | os.PathLike, mode: str) -> tables.File:
    try:
        return tables.open_file(os.fspath(path), mode)
    except (tables.HDF5ExtError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise H5RError(f"cannot open {os.fspath(path)!r} as an HDF5 results file: {exc}") from exc


def _no_space(exc: BaseException, directory: str) -> bool:
    """Whether a failed write ran out of disk (HDF5 hides the errno in its message)."""
    for item in (exc, exc.__cause__, exc.__context__):
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return True
    try:
        return shutil.disk_usage(directory).free < (1 << 20)
    except OSError:
        return False


def _apply(path: str, changes: list, new: bool) -> Any:
    """Open the file at ``path`` (a new one when ``new``), apply ``changes`` in order, flush."""
    result = None
    with _open(path, "w" if new else "a") as h5:
        for change in changes:
            result = change(h5)
        h5.flush()
    return result


def _check_readable(path: str) -> None:
    with _open(path, "r"):
        pass


def _write(path: str | os.PathLike, change) -> Any:
    """Apply ``change`` (a callable on the open file) crash-safely through a shadow copy
    (:mod:`cluster.h5r_shadow`); a full disk raises :class:`DiskFull`. The caller holds
    :data:`HDF5_LOCK`."""
    directory = os.path.dirname(os.fspath(path)) or "."

    def explain(exc: BaseException) -> BaseException | None:
        if isinstance(exc, (OSError, tables.HDF5ExtError)) and _no_space(exc, directory):
            return DiskFull(errno.ENOSPC, f"disk full: cannot write {os.path.basename(path)} "
                                          f"({exc})")
        return None

    return h5r_shadow.write(path, change, _apply, _check_readable, explain)


def _shape_of(dtype: np.dtype):
    """Field names, kinds, sizes and sub-array shapes of a dtype, ignoring byte order."""
    if dtype.names is not None:
        return tuple((name, _shape_of(dtype[name])) for name in dtype.names)
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return ("subarray", _shape_of(base), shape)
    return (dtype.kind, dtype.itemsize)


def _conform(records: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if records.dtype == dtype:
        return records
    if _shape_of(records.dtype) != _shape_of(dtype):
        raise H5RError(f"records dtype {records.dtype.descr} does not match the table's "
                       f"{dtype.descr}")
    return records.astype(dtype)


def _as_records(records: Any) -> np.ndarray:
    records = np.asarray(records)
    if records.dtype.names is None:
        raise H5RError("records must be a numpy structured array")
    if records.dtype.hasobject:
        raise H5RError("records must not hold Python objects")
    return records.reshape(-1)


# -- tables -----------------------------------------------------------------------------------
def _filed(h5: tables.File, table_name: str) -> tables.EArray | None:
    group = h5.root._f_get_child(FILED_GROUP) if FILED_GROUP in h5.root else None
    if group is None or table_name not in group:
        return None
    return group._f_get_child(table_name)


def filed_tasks(path: str | os.PathLike, table_name: str, rule_id: str) -> set[int]:
    """IDs of the tasks of ``rule_id`` whose rows were filed to ``/table_name``."""
    _check_table_name(table_name)
    key = TaskRows(rule_id, ((0, 0),)).key
    with HDF5_LOCK:
        if not os.path.exists(path):
            return set()
        with _open(path, "r") as h5:
            filed = _filed(h5, table_name)
            if filed is None:
                return set()
            pairs = filed.read()
    return set(pairs[pairs[:, 0] == key, 1].tolist())


def _skip_filed(h5: tables.File, table_name: str, records: np.ndarray,
                rows: TaskRows) -> tuple[np.ndarray, np.ndarray]:
    """The records of tasks not yet filed, and the (rule key, task) pairs to record for them."""
    sizes = np.array([n for _, n in rows.counts], np.int64)
    if int(sizes.sum()) != len(records):
        raise H5RError(f"the task rows add up to {int(sizes.sum())} rows, the batch holds "
                       f"{len(records)}")
    tasks = np.array([t for t, _ in rows.counts], np.int64)
    filed = _filed(h5, table_name)
    done = np.zeros(len(tasks), bool)
    if filed is not None and filed.nrows:
        pairs = filed.read()
        done = np.isin(tasks, pairs[pairs[:, 0] == rows.key, 1])
    keep = np.repeat(~done, sizes)
    new = np.stack([np.full(int((~done).sum()), rows.key, np.int64), tasks[~done]], axis=1)
    return records[keep], new


def _record_filed(h5: tables.File, table_name: str, pairs: np.ndarray) -> None:
    filed = _filed(h5, table_name)
    if filed is None:
        group = (h5.root._f_get_child(FILED_GROUP) if FILED_GROUP in h5.root
                 else h5.create_group(h5.root, FILED_GROUP, "tasks whose rows were filed"))
        filed = h5.create_earray(group, table_name, tables.Int64Atom(), (0, 2), filters=FILTERS)
    filed.append(pairs)


class _Append:
    """One append to a table, decided once (which rows are new) and replayed as decided on the
    shadow copy (:mod:`cluster.h5r_shadow`)."""

    def __init__(self, table_name: str, records: np.ndarray, rows: TaskRows | None):
        self.table_name, self.records, self.rows = table_name, records, rows
        self.pairs: np.ndarray | None = None
        self.decided = rows is None

    def __call__(self, h5: tables.File) -> int:
        if not self.decided:
            assert self.rows is not None
            self.records, self.pairs = _skip_filed(h5, self.table_name, self.records, self.rows)
            self.decided = True
        if self.pairs is not None and len(self.pairs):
            _record_filed(h5, self.table_name, self.pairs)
        records = self.records
        if self.table_name in h5.root:
            table = h5.get_node(h5.root, self.table_name)
            if not isinstance(table, tables.Table):
                raise H5RError(f"/{self.table_name} exists and is not a table")
            if len(records):
                table.append(_conform(records, table.dtype))
        elif len(records) or self.rows is None:
            table = h5.create_table(h5.root, self.table_name, records, filters=FILTERS,
                                    expectedrows=EXPECTED_ROWS)
        else:
            return 0
        return int(table.nrows)


def append_table(path: str | os.PathLike, table_name: str, records: np.ndarray,
                 rows: TaskRows | None = None) -> int:
    """Append ``records`` to ``/table_name`` (created from their dtype); returns the row count.
    With ``rows``, the rows of tasks already filed to that table are skipped."""
    _check_table_name(table_name)
    records = _as_records(records)
    with HDF5_LOCK:
        return _write(path, _Append(table_name, records, rows))


def table_dtype(path: str | os.PathLike, table_name: str) -> np.dtype | None:
    """The dtype of ``/table_name``, or None when the file or the table does not exist."""
    _check_table_name(table_name)
    with HDF5_LOCK:
        if not os.path.exists(path):
            return None
        with _open(path, "r") as h5:
            node = h5.root._f_get_child(table_name) if table_name in h5.root else None
            return node.dtype if isinstance(node, tables.Table) else None


def read_table(path: str | os.PathLike, table_name: str, start: int = 0,
               stop: int | None = None) -> np.ndarray:
    """Rows ``[start, stop)`` of ``/table_name`` (KeyError if there is no such table)."""
    return read_table_page(path, table_name, start, stop)[0]


def read_table_page(path: str | os.PathLike, table_name: str, start: int = 0,
                    stop: int | None = None) -> tuple[np.ndarray, int]:
    """Rows ``[start, stop)`` of ``/table_name`` and the table's row count (KeyError if there is
    no such table)."""
    _check_table_name(table_name)
    with HDF5_LOCK:
        with _open(path, "r") as h5:
            node = h5.root._f_get_child(table_name) if table_name in h5.root else None
            if not isinstance(node, tables.Table):
                raise KeyError(f"no table {table_name!r} in {os.fspath(path)!r}")
            return node.read(start=start, stop=stop), int(node.nrows)


def list_tables(path: str | os.PathLike) -> list[str]:
    """Names of the tables at the root of a results file, sorted."""
    with HDF5_LOCK:
        with _open(path, "r") as h5:
            return sorted(node._v_name for node in h5.list_nodes(h5.root, classname="Table"))


# -- metadata ---------------------------------------------------------------------------------
def _split_key(key: str) -> list[str]:
    parts = key.split(".") if isinstance(key, str) else []
    if not parts or any(not p or "/" in p or "\x00" in p for p in parts):
        raise H5RError(f"invalid metadata key {key!r}")
    return parts


#: HDF5 keeps attributes in the object header, which holds at most 64 KiB.
MAX_METADATA_VALUE_BYTES = 60_000


def _storable(value: Any) -> Any:
    """Metadata values as PYME's handler stores them (PyTables pickles lists and dicts)."""
    if isinstance(value, (str, list, dict, tuple)):
        size = len(value.encode("utf-8", "replace") if isinstance(value, str)
                   else pickle.dumps(value))
        if size > MAX_METADATA_VALUE_BYTES:
            raise H5RError(f"a metadata value of {size} bytes is over the {MAX_METADATA_VALUE_BYTES}"
                           "-byte limit of an HDF5 attribute")
        return value
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise H5RError(f"unsupported metadata value type {type(value).__name__}")


def _metadata_entries(md: dict) -> list[tuple[list[str], Any]]:
    """Checked ``(key components, storable value)`` pairs of flat dotted metadata."""
    if not isinstance(md, dict):
        raise H5RError("metadata must be a JSON object of dotted keys")
    return [(_split_key(key), _storable(value)) for key, value in md.items()]


def _write_entries(h5: tables.File, entries: list[tuple[list[str], Any]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tables.NaturalNameWarning)
        root = (h5.get_node("/" + METADATA_GROUP) if METADATA_GROUP in h5.root
                else h5.create_group(h5.root, METADATA_GROUP))
        for parts, value in entries:
            group = root
            for part in parts[:-1]:
                if part in group:
                    group = group._f_get_child(part)
                    if not isinstance(group, tables.Group):
                        raise H5RError(f"metadata key component {part!r} is not a group")
                else:
                    group = h5.create_group(group, part)
            group._v_attrs[parts[-1]] = value


def write_metadata_to(h5: tables.File, md: dict) -> None:
    """Merge flat dotted ``md`` into ``/MetaData`` of an open file, one group per key component
    (the caller holds :data:`HDF5_LOCK` for a file on disk)."""
    _write_entries(h5, _metadata_entries(md))


def write_metadata(path: str | os.PathLike, md: dict) -> None:
    """Merge flat dotted ``md`` into ``/MetaData`` of the results file at ``path`` (created if
    needed, only once ``md`` has been checked)."""
    entries = _metadata_entries(md)
    with HDF5_LOCK:
        _write(path, lambda h5: _write_entries(h5, entries))


def read_metadata(path: str | os.PathLike) -> dict:
    """``/MetaData`` of the results file at ``path`` (see :func:`read_metadata_from`)."""
    with HDF5_LOCK:
        with _open(path, "r") as h5:
            return read_metadata_from(h5)
