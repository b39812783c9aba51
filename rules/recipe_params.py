"""Typed recipe-module parameters: the declarations (:class:`Param`) and the one checker
(:func:`coerce_value`), shared by the cluster's recipe modules (which run them) and the chain
editor (which checks what is typed against the declarations the cluster publishes, same message).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


class ParamError(ValueError):
    """A parameter value that does not fit its declaration; the message names module and parameter."""


#: The parameter kinds and how each is described in error messages.
KINDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a text string",
    "choice": "one of the listed choices",
    "floats": "a list of numbers",
    "strs": "a list of text strings",
    "ranges": "a mapping of column name to [min, max]",
    "strmap": "a mapping of name to text",
}


@dataclasses.dataclass(frozen=True)
class Param:
    """One module parameter: ``role`` is ``"input"``/``"output"`` for namespace keys, else ``""``."""

    name: str
    kind: str
    default: Any
    role: str = ""
    choices: tuple[str, ...] = ()
    length: int | None = None
    doc: str = ""


def _fail(module: str, param: Param, value: Any, detail: str = "") -> ParamError:
    expected = KINDS[param.kind]
    if param.kind == "choice":
        expected = "one of " + ", ".join(repr(c) for c in param.choices)
    if param.length is not None:
        expected += f" of length {param.length}"
    extra = f" ({detail})" if detail else ""
    return ParamError(f"parameter {param.name!r} of module {module} must be {expected}, "
                       f"got {value!r} ({type(value).__name__}){extra}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def coerce_value(module: str, param: Param, value: Any) -> Any:
    """``value`` checked and converted to ``param``'s kind, or a :class:`ParamError` naming it."""
    kind = param.kind
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(module, param, value)
        return value
    if kind == "float":
        if not _number(value) or not math.isfinite(value):
            raise _fail(module, param, value)
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _fail(module, param, value)
        return value
    if kind == "str":
        if _number(value):
            return str(value)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _fail(module, param, value)
        return value
    if kind == "choice":
        if value not in param.choices:
            raise _fail(module, param, value)
        return value
    if kind in ("floats", "strs"):
        if not isinstance(value, (list, tuple)):
            raise _fail(module, param, value)
        ok = _number if kind == "floats" else (lambda v: isinstance(v, str))
        if not all(ok(v) for v in value):
            raise _fail(module, param, value)
        if param.length is not None and len(value) != param.length:
            raise _fail(module, param, value)
        return [float(v) for v in value] if kind == "floats" else list(value)
    if kind == "ranges":
        if not isinstance(value, dict):
            raise _fail(module, param, value)
        ranges: dict[str, tuple[float, float]] = {}
        for key, bounds in value.items():
            if (not isinstance(key, str) or not isinstance(bounds, (list, tuple)) or len(bounds) != 2
                    or not all(_number(b) for b in bounds)):
                raise _fail(module, param, value, f"entry {key!r}: {bounds!r}")
            ranges[key] = (float(bounds[0]), float(bounds[1]))
        return ranges
    if kind == "strmap":
        if not isinstance(value, dict):
            raise _fail(module, param, value)
        out = {}
        for key, text in value.items():
            if _number(text):
                text = str(text)
            if not isinstance(key, str) or not isinstance(text, str):
                raise _fail(module, param, value, f"entry {key!r}: {text!r}")
            out[key] = text
        return out
    raise AssertionError(f"unknown parameter kind {kind}")


def param_to_json(param: Param) -> dict[str, Any]:
    """A declaration as plain JSON data (what the embedded cluster publishes)."""
    return dataclasses.asdict(param)


def params_from_json(data: Any) -> dict[str, tuple[Param, ...]]:
    """``{module name: declarations}`` from published JSON (``{name: {"params": [...]}}``);
    entries that do not fit are skipped. Raises ``ValueError`` when ``data`` is not a mapping."""
    if not isinstance(data, Mapping):
        raise ValueError("module schema must be a JSON object of module name to its parameters")
    fields = {f.name for f in dataclasses.fields(Param)}
    modules: dict[str, tuple[Param, ...]] = {}
    for name, entry in data.items():
        params = entry.get("params") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not isinstance(params, list):
            continue
        declared = []
        for item in params:
            if isinstance(item, Mapping) and item.get("kind") in KINDS and isinstance(item.get("name"), str):
                values = {k: v for k, v in item.items() if k in fields}
                values["choices"] = tuple(values.get("choices") or ())
                declared.append(Param(**values))
        modules[name] = tuple(declared)
    return modules
