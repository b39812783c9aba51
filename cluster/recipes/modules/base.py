"""Declarative recipe modules: typed parameters with PYME's names and defaults, checked on parse."""
from __future__ import annotations

from typing import Any, Callable, ClassVar

from rules.recipe_params import Param, ParamError, coerce_value

from ..datatypes import Image, Table
from ..errors import RecipeError


def coerce(module: str, param: Param, value: Any) -> Any:
    """``value`` checked and converted to ``param``'s kind, or a :class:`RecipeError` naming it."""
    try:
        return coerce_value(module, param, value)
    except ParamError as exc:
        raise RecipeError(str(exc)) from exc


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
