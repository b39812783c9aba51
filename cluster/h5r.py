"""PyTables ``.h5r`` results files, laid out as PYME's data server writes them (protocol §5.4).

Tables sit under the root (``/FitResults``, ``/Events``, ...), each created on the first append
from the records' numpy dtype with zlib level 5 + shuffle. Metadata (flat dotted keys) lives as HDF5
attributes under ``/MetaData``, one sub-group per key component: ``Camera.ADOffset`` is the
attribute ``ADOffset`` of ``/MetaData/Camera``. Values that HDF5 cannot hold natively (lists,
dicts) are stored the way PyTables does it, as protocol-0 pickles, which PYME reads back.

PyTables is not thread-safe, so every call here holds one process-wide lock (:data:`HDF5_LOCK`).

Reading pickled attributes is made safe: PyTables would ``pickle.loads`` any byte-string attribute
ending in ``.``, so a crafted ``.h5r`` could run code. On import this module points PyTables'
attribute unpickling at a restricted unpickler that builds plain data only (lists, dicts, numbers,
strings) and refuses every class or function reference.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import re
import tempfile
import threading
import types
import warnings
from typing import Any

import numpy as np
import tables
import tables.attributeset

from rules.localisation import EVENTS_DTYPE  # noqa: F401 - PYME's events record, owned by the engine

logger = logging.getLogger(__name__)

#: One lock for all HDF5 access in this process (PyTables/HDF5 are not thread-safe).
HDF5_LOCK = threading.RLock()

#: Filters of every table PYME's data server creates.
FILTERS = tables.Filters(complevel=5, complib="zlib", shuffle=True)

#: ``expectedrows`` that reproduces the fixture's chunk shapes (FitResults 1213, Events 885).
EXPECTED_ROWS = 500_000

METADATA_GROUP = "MetaData"

TABLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class H5RError(ValueError):
    """A results file, table name, record batch or metadata value that cannot be used."""


# -- safe unpickling of attributes ------------------------------------------------------------
class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data; any class or function reference is refused."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle override
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an attribute")


def safe_loads(data: bytes, **_kwargs) -> Any:
    """``pickle.loads`` restricted to builtin data (no globals, so no code can run)."""
    return _DataOnlyUnpickler(io.BytesIO(bytes(data))).load()


def _install_safe_attribute_unpickling() -> None:
    shim = types.SimpleNamespace(loads=safe_loads, dumps=pickle.dumps,
                                 UnpicklingError=pickle.UnpicklingError)
    tables.attributeset.pickle = shim


_install_safe_attribute_unpickling()


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


def _ensure_file(path: str | os.PathLike) -> None:
    """Create an empty results file atomically (temp file + rename) if there is none."""
    path = os.fspath(path)
    if os.path.exists(path):
        return
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".spoolside-tmp-", suffix=".h5r", dir=directory)
    os.close(fd)
    try:
        with tables.open_file(tmp, "w"):
            pass
        try:
            os.link(tmp, path)  # no-clobber: a concurrent creator wins, we append to its file
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


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
def append_table(path: str | os.PathLike, table_name: str, records: np.ndarray) -> int:
    """Append ``records`` to ``/table_name`` (created from their dtype); returns the row count."""
    _check_table_name(table_name)
    records = _as_records(records)
    with HDF5_LOCK:
        _ensure_file(path)
        with _open(path, "a") as h5:
            if table_name in h5.root:
                table = h5.get_node(h5.root, table_name)
                if not isinstance(table, tables.Table):
                    raise H5RError(f"/{table_name} exists and is not a table")
                table.append(_conform(records, table.dtype))
            else:
                table = h5.create_table(h5.root, table_name, records, filters=FILTERS,
                                        expectedrows=EXPECTED_ROWS)
            table.flush()
            return int(table.nrows)


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
    _check_table_name(table_name)
    with HDF5_LOCK:
        with _open(path, "r") as h5:
            node = h5.root._f_get_child(table_name) if table_name in h5.root else None
            if not isinstance(node, tables.Table):
                raise KeyError(f"no table {table_name!r} in {os.fspath(path)!r}")
            return node.read(start=start, stop=stop)


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
        _ensure_file(path)
        with _open(path, "a") as h5:
            _write_entries(h5, entries)
            h5.flush()


def _plain(value: Any) -> Any:
    """An attribute value as JSON-ready Python data (byte strings decoded, arrays as lists)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, (np.bytes_, bytes)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_metadata_from(h5: tables.File) -> dict:
    """``/MetaData`` of an open file as a flat dict of dotted keys, sorted ({} if it has none)."""
    if METADATA_GROUP not in h5.root:
        return {}
    out: dict[str, Any] = {}
    base = h5.get_node("/" + METADATA_GROUP)
    for group in h5.walk_groups(base):
        prefix = group._v_pathname[len(base._v_pathname) + 1:].replace("/", ".")
        attrs = group._v_attrs
        for name in attrs._f_list("user"):
            key = f"{prefix}.{name}" if prefix else name
            out[key] = _plain(getattr(attrs, name))
    return dict(sorted(out.items()))


def read_metadata(path: str | os.PathLike) -> dict:
    """``/MetaData`` of the results file at ``path`` (see :func:`read_metadata_from`)."""
    with HDF5_LOCK:
        with _open(path, "r") as h5:
            return read_metadata_from(h5)
