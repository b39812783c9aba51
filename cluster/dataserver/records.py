"""Record batches on the wire: ``.npy``, pickled numpy arrays or JSON in, ``.npy``/JSON/CSV out
(protocol §4.3).

Pickled bodies are what PYME's own workers and ``clusterResults.fileResults`` send
(``ndarray.dumps()``, protocol 2).  Unpickling network bytes could run any code, so they go through
:class:`NumpyOnlyUnpickler`, which can build numpy arrays, record arrays and dtypes and nothing
else; anything else is refused with 415.  Nested field names are flattened with ``_``
(``fitResults_x0``) as PYME's readers do.
"""
from __future__ import annotations

import csv
import io
import json
import math
import pickle
from typing import Any, Callable, Iterator

import numpy as np

from cluster.http_base import HTTPError
from rules.safeload import load_json

NPY_MAGIC = b"\x93NUMPY"


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise PickleRefused("only latin-1 byte strings may be built")
    return text.encode("latin-1")


#: Everything a pickled numpy array (numpy 1.x or 2.x, protocols 2-5) refers to.
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "record"): np.record,
    **{(module, "recarray"): np.recarray
       for module in ("numpy", "numpy.rec", "numpy.core.records", "numpy._core.records")},
    **{(f"numpy.{core}.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0]
       for core in ("core", "_core")},
}
try:  # protocol 5 (in-band buffers)
    _frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    _NUMPY_GLOBALS.update({(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer
                           for core in ("core", "_core")})
except (AttributeError, TypeError, IndexError):  # pragma: no cover - very old numpy
    pass


class PickleRefused(pickle.UnpicklingError):
    """The pickle refers to something other than numpy's array and dtype machinery."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and dtypes only: any other class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle override
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise PickleRefused(f"refusing to load {module}.{name}: only numpy arrays "
                                "are accepted") from None


def records_from_pickle(body: bytes) -> np.ndarray:
    """A pickled numpy record array (PYME's upload) as a plain structured array.

    Raises :class:`HTTPError` 415 for a pickle of anything else, 400 for a broken one.
    """
    try:
        value = NumpyOnlyUnpickler(io.BytesIO(body)).load()
    except PickleRefused as exc:
        raise HTTPError(415, f"pickled body refused: {exc}. Send a pickled numpy record array "
                             "(what PYME sends), .npy bytes or a JSON list of records") from exc
    except Exception as exc:  # noqa: BLE001 - any other failure means a malformed pickle
        raise HTTPError(400, f"pickled body is not a valid numpy array pickle: "
                             f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(value, np.ndarray):
        raise HTTPError(415, f"pickled body holds a {type(value).__name__}, not a numpy record "
                             "array")
    if value.dtype.hasobject:
        raise HTTPError(415, "pickled arrays with Python objects in them are refused")
    if value.dtype.names is None:
        raise HTTPError(400, f"records must be a structured array, got dtype {value.dtype}")
    plain = np.dtype({"names": list(value.dtype.names),
                      "formats": [value.dtype.fields[n][0] for n in value.dtype.names],
                      "offsets": [value.dtype.fields[n][1] for n in value.dtype.names],
                      "itemsize": value.dtype.itemsize})
    return value.view(np.ndarray).view(plain).reshape(-1)


def flat_fields(dtype: np.dtype, prefix: str = "",
                path: tuple[str, ...] = ()) -> Iterator[tuple[str, tuple[str, ...]]]:
    """``(flattened name, field path)`` of every leaf field of a structured dtype."""
    for name in dtype.names or ():
        sub = dtype[name]
        if sub.names is not None:
            yield from flat_fields(sub, f"{prefix}{name}_", path + (name,))
        else:
            yield f"{prefix}{name}", path + (name,)


def _field(array: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
    for name in path:
        array = array[name]
    return array


def _flatten_record(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flatten_record(value, f"{prefix}{key}_"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _infer_dtype(record: dict, flat: list[dict], prefix: str = "") -> np.dtype:
    fields: list[tuple[str, Any]] = []
    for key, value in record.items():
        if not isinstance(key, str) or not key:
            raise HTTPError(400, "JSON record keys must be non-empty strings")
        if isinstance(value, dict):
            fields.append((key, _infer_dtype(value, flat, f"{prefix}{key}_")))
        elif isinstance(value, bool):
            fields.append((key, "?"))
        elif isinstance(value, int):
            fields.append((key, "<i8"))
        elif isinstance(value, float):
            fields.append((key, "<f8"))
        elif isinstance(value, str):
            width = max(len(str(r.get(prefix + key, "")).encode("utf-8")) for r in flat)
            fields.append((key, f"S{max(width, 1)}"))
        else:
            raise HTTPError(400, f"JSON field {prefix}{key!r} has unsupported type "
                                 f"{type(value).__name__}")
    return np.dtype(fields)


def records_from_json(items: Any, dtype: np.dtype | None) -> np.ndarray:
    """A JSON list of records (nested or ``_``-flattened keys) as an array of ``dtype``.

    Without ``dtype`` (new table) it is inferred from the first record.
    """
    if not isinstance(items, list) or not all(isinstance(r, dict) for r in items):
        raise HTTPError(400, "JSON body must be a list of records (objects)")
    flat = [_flatten_record(r) for r in items]
    if dtype is None:
        if not items:
            raise HTTPError(400, "an empty JSON batch cannot create a table")
        dtype = _infer_dtype(items[0], flat)
    fields = list(flat_fields(dtype))
    expected = {name for name, _ in fields}
    for i, record in enumerate(flat):
        if set(record) != expected:
            missing = sorted(expected - set(record))
            unknown = sorted(set(record) - expected)
            raise HTTPError(400, f"JSON record {i} does not match the table's fields "
                                 f"(missing {missing}, unknown {unknown})")
    array = np.zeros(len(flat), dtype=dtype)
    for name, path in fields:
        column = _field(array, path)
        values = [r[name] for r in flat]
        if column.dtype.kind == "S":
            if not all(isinstance(v, str) for v in values):
                raise HTTPError(400, f"field {name!r} takes strings")
            values = [v.encode("utf-8") for v in values]
            if any(len(v) > column.dtype.itemsize for v in values):
                raise HTTPError(400, f"a value of field {name!r} is longer than "
                                     f"{column.dtype.itemsize} bytes")
        elif any(isinstance(v, (str, list, dict)) or v is None for v in values):
            raise HTTPError(400, f"field {name!r} takes numbers")
        try:
            column[...] = values
        except (ValueError, TypeError, OverflowError) as exc:
            raise HTTPError(400, f"field {name!r}: {exc}") from exc
    return array


def decode_batch(body: bytes, table_dtype: Callable[[], np.dtype | None]) -> np.ndarray:
    """A PUT body (``.npy`` bytes, a pickled record array or a JSON list of records) as a
    structured array.

    ``table_dtype()`` gives the existing table's dtype (None for a new table); it is only
    called for JSON bodies, which need it to build their records.
    """
    if not body:
        raise HTTPError(400, "empty body: send .npy bytes or a JSON list of records")
    if body.startswith(NPY_MAGIC):
        _check_npy_header(body)
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise HTTPError(400, f"body is not a valid .npy array without objects: {exc}") from exc
        if array.dtype.names is None:
            raise HTTPError(400, f"records must be a structured array, got dtype {array.dtype}")
        return array.reshape(-1)
    if body[:1] == b"\x80" or body[:1] in (b"(", b"c") and body.rstrip().endswith(b"."):
        return records_from_pickle(body)
    try:
        items = load_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, "body is neither .npy bytes nor a JSON list of records: "
                             f"{exc}") from exc
    return records_from_json(items, table_dtype())


def _check_npy_header(body: bytes) -> None:
    """Refuse a ``.npy`` body whose header promises more (or less) data than it holds, before
    numpy allocates the array it describes."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(stream)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise HTTPError(400, f"body is not a valid .npy array: {exc}") from exc
    if dtype.hasobject:
        raise HTTPError(400, "records with object fields are refused (they need pickle)")
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(body) - stream.tell():
        raise HTTPError(400, f".npy header describes {expected} bytes of data but the body "
                             f"holds {len(body) - stream.tell()}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_npy(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    return buffer.getvalue()


def to_pickle(rows: np.ndarray) -> bytes:
    """Rows as PYME serves a table with no extension: ``ndarray.dumps()``, a protocol-2 pickle of
    a plain structured array (what PYME's clients unpickle; our own read ``.npy``)."""
    return pickle.dumps(np.ascontiguousarray(rows).view(np.ndarray), protocol=2)


def to_json(rows: np.ndarray) -> bytes:
    """Rows as a JSON list of records with flattened names (``fitResults_x0``)."""
    fields = list(flat_fields(rows.dtype))
    columns = [[_jsonable(v) for v in _field(rows, path).tolist()] for _, path in fields]
    names = [name for name, _ in fields]
    records = [dict(zip(names, values)) for values in zip(*columns)] if columns else []
    return json.dumps(records).encode("utf-8")


def to_csv(rows: np.ndarray) -> bytes:
    """Rows as CSV with a header of flattened names."""
    fields = list(flat_fields(rows.dtype))
    columns = [[_jsonable(v) for v in _field(rows, path).tolist()] for _, path in fields]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name for name, _ in fields])
    writer.writerows(zip(*columns))
    return out.getvalue().encode("utf-8")
