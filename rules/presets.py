"""Chain presets in PYME's chained-analysis YAML: a list of ``[FactoryClass, kwargs]`` pairs (§7).

Presets are data: read with ``yaml.safe_load``, factory classes looked up in an allow-list table,
values checked before anything is built. A bad preset raises :class:`PresetError` naming the file,
the entry and the problem, and nothing is changed.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Any

import yaml

from .factories import FACTORIES, RuleFactory, link
from .files import atomic_write
from .safeload import load_yaml

logger = logging.getLogger(__name__)

#: Rule arguments that are runtime objects, never saved.
_NOT_SAVED = frozenset({"spooler", "cluster", "on_completion", "rule_outputs"})

_STRING_KEYS = ("recipe", "recipeURI", "output_dir", "resultsFilename", "serverfilter",
                "dataSourceModule", "seriesName")
_NUMBER_KEYS = ("poll_interval", "data_timeout", "min_release_interval")
_INPUT_KEYS = ("inputs", "input_templates", "input_patterns")


class PresetError(ValueError):
    """A preset file that cannot be used; says which file, which entry and what is wrong."""

    def __init__(self, path, problem: str, entry: int | None = None):
        self.path = str(path)
        self.entry = entry
        self.problem = problem
        where = self.path if entry is None else f"{self.path}, entry {entry + 1}"
        super().__init__(f"{where}: {problem}")


def _plain(value: Any) -> Any:
    """Metadata handlers and tuples as plain YAML-safe data."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    elif hasattr(value, "getEntryNames") and hasattr(value, "getEntry"):
        value = {k: value.getEntry(k) for k in value.getEntryNames()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return value


def preset_data(factories) -> list[list]:
    """The ``[[FactoryClass, kwargs], ...]`` data of a chain (a list of factories or its first)."""
    steps = factories.steps() if isinstance(factories, RuleFactory) else list(factories)
    data = []
    for index, factory in enumerate(steps):
        name = type(factory).__name__
        if FACTORIES.get(name) is not type(factory):
            raise ValueError(f"step {index + 1}: {name} cannot be saved in a preset")
        kwargs = {k: _plain(v) for k, v in factory.kwargs.items() if k not in _NOT_SAVED}
        data.append([name, kwargs])
    return data


def save_preset(path, factories) -> pathlib.Path:
    """Write a chain to ``path`` as PYME-style YAML (atomically: a failed save leaves the old file)."""
    path = pathlib.Path(path)
    data = preset_data(factories)
    _check_data(data, path)
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    logger.info("saved preset %s (%d steps)", path, len(data))
    return path


def pyme_differences(factories) -> list[str]:
    """Why PYME's chained-analysis loader would not build the same chain from this preset, one
    sentence per setting ([] when it would; §3.3, §7). Spoolside runs all of these; PYME's launch
    replaces ``output_dir`` and ``inputs`` with its own context (the series folder, the series),
    gives a step after a localisation the results file as ``input`` and a step after a recipe no
    inputs, never reads ``input_patterns`` and fills ``input_templates`` with ``str.format``."""
    notes: list[str] = []
    previous = None
    for index, (name, kwargs) in enumerate(preset_data(factories)):
        step = f"step {index + 1}"
        is_recipe = FACTORIES[name].rule_class.rule_type == "recipe"
        if is_recipe and previous == "recipe":
            notes.append(f"{step} follows a recipe step: PYME passes it no inputs (only a "
                         "localisation passes its results on), so there it reads nothing")
        if kwargs.get("input_patterns"):
            notes.append(f"{step}: PYME never reads input_patterns, so there this step reads "
                         + ("the results of the localisation before it" if previous == "localization"
                            else "nothing" if previous else "the series"))
        templates = kwargs.get("input_templates") or {}
        if any("{{" in str(v) for v in templates.values()):
            notes.append(f"{step}: PYME fills input_templates with str.format, so a {{{{name}}}} "
                         "stays literal text there; write {0[name]} instead")
        if kwargs.get("output_dir"):
            notes.append(f"{step}: PYME's launch replaces output_dir ({kwargs['output_dir']}) with "
                         "the series folder; leave the output folder empty to write the same "
                         "place in both")
        if kwargs.get("inputs"):
            notes.append(f"{step}: PYME's launch replaces inputs with the series (first step) "
                         "or the previous step's outputs")
        previous = "recipe" if is_recipe else "localization"
    return notes


def _check_inputs(path, index: int, key: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise PresetError(path, f"{key} must be a mapping of recipe input name to URI(s), "
                                f"not {type(value).__name__}", index)
    for name, item in value.items():
        if not isinstance(name, str):
            raise PresetError(path, f"{key}: input name {name!r} is not text", index)
        items = item if isinstance(item, list) else [item]
        if not items or not all(isinstance(i, str) and i for i in items):
            raise PresetError(path, f"{key}[{name!r}] must be a URI, a pattern or a list of them",
                              index)


def _check_entry(path, index: int, entry: Any) -> tuple[type[RuleFactory], dict]:
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise PresetError(path, "each entry must be a pair [FactoryClass, settings]", index)
    name, kwargs = entry
    if not isinstance(name, str):
        raise PresetError(path, f"factory class name must be text, not {name!r}", index)
    factory_class = FACTORIES.get(name)
    if factory_class is None:
        raise PresetError(path, f"unknown factory class {name!r} (allowed: {', '.join(sorted(FACTORIES))})",
                          index)
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise PresetError(path, f"settings of {name} must be a mapping, not {type(kwargs).__name__}",
                          index)
    for key in kwargs:
        if not isinstance(key, str):
            raise PresetError(path, f"setting name {key!r} is not text", index)
    bad = sorted(_NOT_SAVED & set(kwargs))
    if bad:
        raise PresetError(path, f"setting(s) {', '.join(bad)} cannot come from a preset", index)
    for key in _STRING_KEYS:
        if key in kwargs and kwargs[key] is not None and not isinstance(kwargs[key], str):
            raise PresetError(path, f"{key} must be text, not {type(kwargs[key]).__name__}", index)
    for key in _NUMBER_KEYS:
        value = kwargs.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise PresetError(path, f"{key} must be a number, not {value!r}", index)
    if "startAt" in kwargs and (isinstance(kwargs["startAt"], bool) or not isinstance(kwargs["startAt"], int)
                                or kwargs["startAt"] < 0):
        raise PresetError(path, f"startAt must be a whole number ≥ 0, not {kwargs['startAt']!r}", index)
    if "analysisMetadata" in kwargs:
        md = kwargs["analysisMetadata"]
        if md is not None and not isinstance(md, dict):
            raise PresetError(path, "analysisMetadata must be a mapping of dotted keys to values, "
                                    f"not {type(md).__name__}", index)
        if md and not all(isinstance(k, str) for k in md):
            raise PresetError(path, "analysisMetadata keys must be text", index)
    for key in _INPUT_KEYS:
        if kwargs.get(key) is not None:
            _check_inputs(path, index, key, kwargs[key])
    if factory_class.rule_class.rule_type == "recipe":
        if kwargs.get("recipe") and kwargs.get("recipeURI"):
            raise PresetError(path, "a recipe step has both recipe and recipeURI; keep one", index)
    return factory_class, dict(kwargs)


def _check_data(data: Any, path) -> list[tuple[type[RuleFactory], dict]]:
    if not isinstance(data, list):
        raise PresetError(path, "a preset is a YAML list of [FactoryClass, settings] entries, "
                                f"not {type(data).__name__}")
    if not data:
        raise PresetError(path, "the preset has no steps")
    return [_check_entry(path, i, entry) for i, entry in enumerate(data)]


def load_preset(path) -> list[RuleFactory]:
    """Read a preset; return its factories, chained in order (``result[0]`` starts the chain)."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(path, f"cannot read the file: {exc}") from exc
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PresetError(path, f"not valid YAML{where}: {problem}") from exc
    checked = _check_data(data, path)
    factories = []
    for index, (factory_class, kwargs) in enumerate(checked):
        try:
            factories.append(factory_class(**kwargs))
        except (TypeError, ValueError) as exc:
            raise PresetError(path, str(exc), index) from exc
    link(factories)
    return factories


def import_pyme_presets(folder, dest=None) -> tuple[dict[str, list[RuleFactory]], list[PresetError]]:
    """Read PYME's chained-analysis presets from ``folder`` (a PYME config folder holding
    ``chained_analysis/``, or that folder itself).

    Returns ``(presets, problems)``: chain name (file stem) → factories, and a :class:`PresetError`
    for every file that could not be used. With ``dest``, each good preset is also saved there as
    ``<name>.yaml`` (never overwriting: ``<name>_1.yaml``, ...).
    """
    folder = pathlib.Path(folder)
    source = folder / "chained_analysis" if (folder / "chained_analysis").is_dir() else folder
    if not source.is_dir():
        raise PresetError(folder, "no such folder")
    presets: dict[str, list[RuleFactory]] = {}
    problems: list[PresetError] = []
    for file in sorted(source.glob("*.yaml")) + sorted(source.glob("*.yml")):
        try:
            presets[file.stem] = load_preset(file)
        except PresetError as exc:
            logger.warning("skipping preset: %s", exc)
            problems.append(exc)
    if dest is not None:
        dest = pathlib.Path(dest)
        for name, factories in presets.items():
            target = dest / f"{name}.yaml"
            n = 1
            while target.exists():
                target = dest / f"{name}_{n}.yaml"
                n += 1
            save_preset(target, factories)
    return presets, problems
