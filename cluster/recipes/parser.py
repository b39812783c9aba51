"""Recipe YAML (PYME's list of one-key mappings) → list of validated module instances."""
from __future__ import annotations

from typing import Any

import yaml

from rules.safeload import compose_yaml

from .errors import RecipeError
from .modules.base import RecipeModule
from .registry import lookup


def parse_recipe(text: str) -> list[RecipeModule]:
    """Modules of a recipe, in order; :class:`RecipeError` names the line, module or parameter."""
    if not isinstance(text, str):
        raise RecipeError(f"recipe must be YAML text, got {type(text).__name__}")
    try:
        node, data = compose_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"recipe YAML error{where}: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe YAML error: {exc}") from exc
    if data is None or node is None:
        raise RecipeError("recipe is empty")
    if not isinstance(data, list):
        raise RecipeError(f"recipe must be a YAML list of modules, got a {type(data).__name__}"
                          f" (line {node.start_mark.line + 1})")
    modules = []
    for index, (item, item_node) in enumerate(zip(data, node.value)):
        line = item_node.start_mark.line + 1
        if not isinstance(item, dict) or len(item) != 1:
            raise RecipeError(f"recipe item {index + 1} (line {line}) must be a one-key mapping "
                              f"'<prefix>.<Module>: {{parameters}}', got {_short(item)}")
        (name, params), = item.items()
        if not isinstance(name, str):
            raise RecipeError(f"recipe item {index + 1} (line {line}): module name must be text, "
                              f"got {name!r}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RecipeError(f"module {name} (line {line}): parameters must be a mapping, "
                              f"got {_short(params)}")
        bad = [k for k in params if not isinstance(k, str)]
        if bad:
            raise RecipeError(f"module {name} (line {line}): parameter name {bad[0]!r} is not text")
        try:
            cls = lookup(name)
        except RecipeError as exc:
            raise RecipeError(f"{exc} at line {line}") from None
        modules.append(cls(params, line=line))
    return modules


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
