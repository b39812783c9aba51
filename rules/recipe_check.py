"""Static checks of PYME recipe YAML for the chain editor (§6): parse errors, shape, module names."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import yaml

from .recipe_params import Param, ParamError, coerce_value
from .safeload import compose_yaml

#: Where the embedded cluster publishes its modules' parameter declarations (in ``RECIPES/``).
MODULE_SCHEMA_FILE = "spoolside_modules.json"
#: The same declarations, bundled (``resources/``), for a cluster that publishes none (PYME's).
BUNDLED_SCHEMA_FILE = "recipe_modules.json"
BUNDLED_NOTE = ("recipe parameters checked against Spoolside's bundled module list (this cluster "
                "publishes none; its own modules may accept more): warnings, not blocking")


def bundled_module_schema() -> dict[str, tuple[Param, ...]]:
    """The parameter declarations of the recipe modules Spoolside knows, as bundled with it (kept
    equal to what its embedded cluster publishes by a test)."""
    import json

    from resources import resource_path

    from .recipe_params import params_from_json
    return params_from_json(json.loads(resource_path(BUNDLED_SCHEMA_FILE).read_text(encoding="utf-8")))


class RecipeProblem(NamedTuple):
    """One problem; ``line`` is 1-based (None when it is not about one line); ``about_modules``:
    a module name or parameter the module list refuses (not the YAML itself)."""

    line: int | None
    message: str
    about_modules: bool = False

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


def _parse(text: str) -> tuple[Any, yaml.Node | None, list[RecipeProblem]]:
    """The loaded recipe, its YAML node tree (for line numbers) and any parse problem."""
    try:
        node, data = compose_yaml(text)
    except yaml.MarkedYAMLError as exc:
        # an unclosed bracket is reported where it opens, not where the parser gave up
        flow = exc.context_mark is not None and "flow" in (exc.context or "")
        mark = exc.context_mark if flow else exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        return None, None, [RecipeProblem(line, f"YAML does not parse: {detail or exc}")]
    except yaml.YAMLError as exc:
        return None, None, [RecipeProblem(None, f"YAML does not parse: {exc}")]
    return data, node, []


def _modules(data: Any) -> list[tuple[int, str, dict]]:
    """``(index, module name, parameters)`` for every well-formed item of a loaded recipe."""
    if not isinstance(data, list):
        return []
    result = []
    for index, item in enumerate(data):
        if isinstance(item, dict) and len(item) == 1:
            (name, params), = item.items()
            if isinstance(name, str) and (params is None or isinstance(params, dict)):
                result.append((index, name, params or {}))
    return result


def _module_known(name: str, available: set[str]) -> bool:
    if name in available:
        return True
    # Bare legacy names (``GaussianFilter``) still load in PYME: match on the class name.
    return "." not in name and any(m.rsplit(".", 1)[-1] == name for m in available)


def check_recipe(text: str, available_modules: Iterable[str] | Mapping[str, tuple[Param, ...]] | None
                 = None, *, unknown_modules_ok: bool = False) -> list[RecipeProblem]:
    """Problems with a recipe: YAML errors (with their line), a non-list recipe, items that are not
    one-key ``module: {parameters}`` mappings, and modules not in ``available_modules`` (if given).
    When ``available_modules`` maps names to their parameter declarations (published by the
    cluster), unknown parameters and values of the wrong type are flagged on their own line, with
    the message the cluster would give. With ``unknown_modules_ok`` (a fallback list, not the
    cluster's own) modules missing from the list are not flagged; those listed are checked."""
    if text is None or not str(text).strip():
        return [RecipeProblem(None, "the recipe is empty")]
    data, node, problems = _parse(text)
    if problems:
        return problems
    if not isinstance(data, list):
        line = node.start_mark.line + 1 if node is not None else None
        return [RecipeProblem(line, "a recipe must be a YAML list of '- module.Name: {parameters}' "
                                    f"items, not a {type(data).__name__}")]
    item_nodes = node.value if isinstance(node, yaml.SequenceNode) else []
    available = set(available_modules) if available_modules is not None else None
    well_formed = {index for index, _, _ in _modules(data)}
    for index, item in enumerate(data):
        line = item_nodes[index].start_mark.line + 1 if index < len(item_nodes) else None
        if index not in well_formed:
            problems.append(RecipeProblem(line, f"item {index + 1} is not a one-key mapping "
                                                "'module.Name: {parameters}'"))
            continue
        (name, params), = item.items()
        if available is not None and not _module_known(name, available):
            if not unknown_modules_ok:
                problems.append(RecipeProblem(line, f"module {name!r} is not available on the "
                                                    "cluster", True))
        elif isinstance(available_modules, Mapping):
            declared = available_modules.get(name)
            if declared is None and "." not in name:
                declared = next((v for k, v in available_modules.items()
                                 if k.rsplit(".", 1)[-1] == name), None)
            if declared is not None:
                problems += _param_problems(name, params or {}, declared, item_nodes[index])
    return problems


def _param_problems(module: str, values: dict, declared: tuple[Param, ...],
                    item_node: yaml.Node) -> list[RecipeProblem]:
    lines: dict[str, int] = {}
    params_node = item_node.value[0][1] if isinstance(item_node, yaml.MappingNode) else None
    if isinstance(params_node, yaml.MappingNode):
        lines = {str(k.value): k.start_mark.line + 1 for k, _ in params_node.value}
    known = {p.name: p for p in declared}
    problems = []
    for key, value in values.items():
        line = lines.get(str(key))
        param = known.get(key)
        if param is None:
            problems.append(RecipeProblem(line, f"unknown parameter {key!r} for module {module} "
                                                f"(known: {', '.join(sorted(known))})", True))
            continue
        try:
            coerce_value(module, param, value)
        except ParamError as exc:
            problems.append(RecipeProblem(line, str(exc), True))
    return problems


def _names(value: Any) -> list[str]:
    """Namespace names held by a parameter value ('' disables; dict keys, list items count)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, dict):
        return [k for k in value if isinstance(k, str) and k]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _params(params: dict, prefix: str) -> list[str]:
    names = []
    for key, value in params.items():
        if isinstance(key, str) and key.lower().startswith(prefix):
            names.extend(_names(value))
    return names


def recipe_outputs(text: str) -> set[str]:
    """Namespace names a recipe writes (parameters named ``output…``); empty if it does not parse."""
    data, _, problems = _parse(text or "")
    if problems:
        return set()
    return {name for _, _, params in _modules(data) for name in _params(params, "output")}


def recipe_inputs(text: str) -> set[str]:
    """Namespace names a recipe reads (parameters named ``input…``) that no earlier module writes:
    what the task's inputs must provide. Empty if it does not parse."""
    data, _, problems = _parse(text or "")
    if problems:
        return set()
    written: set[str] = set()
    needed: set[str] = set()
    for _, _, params in _modules(data):
        needed.update(name for name in _params(params, "input") if name not in written)
        written.update(_params(params, "output"))
    return needed


#: File extension each ``output.*`` module writes when its ``filePattern`` is left at PYME's default.
_OUTPUT_EXTENSIONS = {"ImageOutput": ".tif", "CSVOutput": ".csv", "HDFOutput": ".hdf",
                      "H5ROutput": ".h5r"}


def recipe_file_outputs(text: str) -> list[str]:
    """``str.format`` patterns (``{output_dir}``, ``{file_stub}``) of the files a recipe's
    ``output.*`` modules write; empty if it does not parse."""
    data, _, problems = _parse(text or "")
    if problems:
        return []
    outputs = []
    for _, name, params in _modules(data):
        short = name.rsplit(".", 1)[-1]
        if short in _OUTPUT_EXTENSIONS:
            outputs.append(str(params.get("filePattern",
                                          "{output_dir}/{file_stub}" + _OUTPUT_EXTENSIONS[short])))
    return outputs
