"""``{{variable}}`` substitution for input patterns and output folders (product.md, §3.3, §8.19)."""
from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from .uris import is_cluster_uri, make_cluster_uri, parse_cluster_uri, series_stub

# {{ name }} (our form and the documented PYME form) and {0[name]} (what PYME's code accepts).
_BRACES = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")
_FORMAT = re.compile(r"\{0\[([^\[\]{}]+)\]\}")
_VARIABLE = re.compile(f"{_BRACES.pattern}|{_FORMAT.pattern}")

#: Placeholders the rule server's nodes fill per task; left alone unless the context names them.
SERVER_PLACEHOLDERS = frozenset({"ruleID", "taskID", "taskInputs"})


class PatternError(ValueError):
    """A pattern names a variable the context does not have."""

    def __init__(self, name: str, pattern: str, known: list[str]):
        self.name = name
        self.pattern = pattern
        self.known = known
        super().__init__(f"unknown variable {{{{{name}}}}} in {pattern!r}; known variables: "
                         f"{', '.join(known) if known else '(none)'}")


def variables_in(pattern: str) -> list[str]:
    """Names used in a pattern, in order of first use (both ``{{x}}`` and ``{0[x]}``)."""
    names: list[str] = []
    for match in _VARIABLE.finditer(pattern):
        name = match.group(1) or match.group(2)
        if name not in names:
            names.append(name)
    return names


def _lookup(context: Mapping, name: str) -> Any:
    if name in context:
        return context[name]
    head, dot, rest = name.partition(".")
    if dot and isinstance(context.get(head), Mapping):
        return _lookup(context[head], rest)
    raise KeyError(name)


def known_variables(context: Mapping) -> list[str]:
    """Every name a pattern may use with ``context`` (nested mappings as ``outer.inner``)."""
    names = []
    for key, value in context.items():
        names.append(str(key))
        if isinstance(value, Mapping):
            names.extend(f"{key}.{inner}" for inner in known_variables(value))
    return sorted(names)


def substitute(pattern: str, context: Mapping) -> str:
    """Replace every ``{{name}}`` / ``{0[name]}`` in ``pattern`` by ``str(context[name])``.

    ``outer.inner`` reaches into nested mappings. ``{{ruleID}}``, ``{{taskID}}`` and
    ``{{taskInputs}}`` stay as they are unless the context has them (the server fills them).

    Raises
    ------
    PatternError
        for a name the context does not have; its message lists the known ones.
    """
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        try:
            return str(_lookup(context, name))
        except KeyError:
            if match.group(1) and name in SERVER_PLACEHOLDERS:
                return match.group(0)
            raise PatternError(name, pattern, known_variables(context)) from None

    return _VARIABLE.sub(replace, pattern)


def pattern_context(series_uri: str, extra: Mapping | None = None) -> dict[str, Any]:
    """Variables for a series: ``series_name``, ``spool_dir``, ``series_stub``, ``results_dir``.

    URIs give URIs (same serverfilter), bare paths give bare paths. ``extra`` (the launch
    context) is added on top, and the entries of its ``rule_outputs`` become variables too
    (without overriding anything given explicitly).
    """
    parsed = parse_cluster_uri(series_uri)
    path = parsed.path.rstrip("/")
    folder = posixpath.dirname(path)

    def form(p: str) -> str:
        return make_cluster_uri(p, parsed.serverfilter) if is_cluster_uri(series_uri) else p

    context: dict[str, Any] = {
        "series_name": form(path),
        "spool_dir": form(folder),
        "series_stub": series_stub(path),
        "results_dir": form(posixpath.join(folder, "analysis")),
    }
    if extra:
        context.update(extra)
        outputs = extra.get("rule_outputs")
        if isinstance(outputs, Mapping):
            for key, value in outputs.items():
                context.setdefault(key, value)
    return context
