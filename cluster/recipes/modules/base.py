"""Declarative recipe modules: typed parameters with PYME's names and defaults, checked on parse."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

from ..datatypes import Image, Table
from ..errors import RecipeError

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


def _fail(module: str, param: Param, value: Any, detail: str = "") -> RecipeError:
    expected = KINDS[param.kind]
    if param.kind == "choice":
        expected = "one of " + ", ".join(repr(c) for c in param.choices)
    if param.length is not None:
        expected += f" of length {param.length}"
    extra = f" ({detail})" if detail else ""
    return RecipeError(f"parameter {param.name!r} of module {module} must be {expected}, "
                       f"got {value!r} ({type(value).__name__}){extra}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def coerce(module: str, param: Param, value: Any) -> Any:
    """``value`` checked and converted to ``param``'s kind, or a :class:`RecipeError` naming it."""
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


class RecipeModule:
    """Base of every module: validated parameters in ``self.p``; ``run`` reads and writes the namespace.

    Output modules (``is_output``) do nothing in ``run``; the runner calls ``save`` after every
    processing module has run, as PYME saves outputs at the end of a recipe.
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    is_output: ClassVar[bool] = False

    def __init__(self, values: dict[str, Any] | None = None, *, line: int | None = None):
        self.line = line
        values = dict(values or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise RecipeError(f"unknown parameter {unknown[0]!r} for module {self.name}"
                              f"{self.where()} (known: {', '.join(sorted(known))})")
        self.p: dict[str, Any] = {}
        for param in self.params:
            value = values.get(param.name, param.default)
            self.p[param.name] = coerce(self.label(), param, value)
        self.validate()

    def where(self) -> str:
        return f" (line {self.line})" if self.line else ""

    def label(self) -> str:
        return f"{self.name}{self.where()}"

    def validate(self) -> None:
        """Cross-parameter checks, raising :class:`RecipeError`; override as needed."""

    def input_names(self) -> list[str]:
        return [self.p[p.name] for p in self.params if p.role == "input" and self.p[p.name]]

    def output_names(self) -> list[str]:
        return [self.p[p.name] for p in self.params if p.role == "output" and self.p[p.name]]

    def run(self, namespace: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, namespace: dict[str, Any], context: dict[str, Any],
             write: Callable[[str, bytes], str]) -> list[str]:
        raise NotImplementedError

    # helpers for subclasses
    def error(self, message: str) -> RecipeError:
        return RecipeError(f"module {self.label()}: {message}")

    def table(self, namespace: dict[str, Any], param: str) -> Table:
        return self._get(namespace, param, Table, "a table")

    def image(self, namespace: dict[str, Any], param: str) -> Image:
        return self._get(namespace, param, Image, "an image")

    def _get(self, namespace, param, cls, what):
        key = self.p[param]
        if key not in namespace:
            raise RecipeError(f"module {self.label()} needs input {key!r}, "
                              "which no input or earlier module provides")
        value = namespace[key]
        if not isinstance(value, cls):
            kind = "an image" if isinstance(value, Image) else "a table" if isinstance(value, Table) \
                else type(value).__name__
            raise self.error(f"{param} {key!r} must be {what}, but it is {kind}")
        return value

    def put(self, namespace: dict[str, Any], param: str, value: Any) -> None:
        key = self.p[param]
        if key:
            namespace[key] = value
