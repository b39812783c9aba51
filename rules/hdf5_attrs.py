"""HDF5 attributes as PYME keeps metadata in ``.h5`` series and ``.h5r`` results files (protocol §5.3).

Metadata (flat dotted keys) lives as HDF5 attributes under ``/MetaData``, one sub-group per key
component: ``Camera.ADOffset`` is the attribute ``ADOffset`` of ``/MetaData/Camera``.
:func:`read_metadata_from` reads it back as a flat dict.

Reading pickled attributes is made safe: PyTables would ``pickle.loads`` any byte-string attribute
ending in ``.`` (it stores lists and dicts that way), so a crafted file could run code. Importing
this module points PyTables' attribute unpickling at a restricted unpickler that builds plain data
only (lists, dicts, numbers, strings) and refuses every class or function reference.
"""
from __future__ import annotations

import io
import pickle
import types
from typing import Any

import numpy as np
import tables
import tables.attributeset

__all__ = ["METADATA_GROUP", "safe_loads", "plain_value", "read_metadata_from"]

METADATA_GROUP = "MetaData"


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


def plain_value(value: Any) -> Any:
    """An attribute value as JSON-ready Python data (byte strings decoded, arrays as lists)."""
    if isinstance(value, np.ndarray):
        return [plain_value(v) for v in value.tolist()] if value.ndim else plain_value(value.item())
    if isinstance(value, (np.bytes_, bytes)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
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
            out[key] = plain_value(getattr(attrs, name))
    return dict(sorted(out.items()))
