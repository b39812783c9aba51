"""Bounded YAML and JSON loading: the one way presets, recipes, rules and metadata are parsed.

PyYAML's safe loader shares aliased nodes, so a "billion laughs" document loads quickly and
then explodes in whatever walks it (validation, ``json.dumps``, a worker). :func:`compose_yaml`
therefore counts the document's size *with aliases expanded* (linear time, each node measured
once) and refuses it above ``MAX_YAML_NODES``, as well as recursive aliases, nesting deeper than
``MAX_DEPTH`` and texts longer than ``MAX_YAML_CHARS``. :func:`load_json` bounds nesting the same
way (a 100,000-deep JSON array is refused, never a ``RecursionError``).
"""
from __future__ import annotations

import json
from typing import Any, Iterable

import yaml

#: Deepest nesting of lists/mappings accepted in YAML or JSON documents.
MAX_DEPTH = 100
#: Most nodes a YAML document may expand to (aliases counted at every use).
MAX_YAML_NODES = 200_000
#: Longest YAML text accepted (presets and recipes are a few kilobytes).
MAX_YAML_CHARS = 4 << 20


class LoadLimitError(ValueError):
    """A document over one of the bounds above (too deep, too big when expanded, recursive)."""


class YAMLLimitError(LoadLimitError, yaml.YAMLError):
    """A YAML document over a bound; also a ``yaml.YAMLError`` for callers that catch those."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, stopping as soon as nesting passes ``MAX_DEPTH``."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLLimitError(f"YAML nested deeper than {MAX_DEPTH} levels "
                                     f"(line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of one YAML document, within the bounds.

    Raises ``yaml.YAMLError`` (``yaml.MarkedYAMLError`` with a position for syntax errors,
    :class:`YAMLLimitError` for bounds).
    """
    if len(text) > MAX_YAML_CHARS:
        raise YAMLLimitError(f"YAML text of {len(text)} characters is over the limit of "
                             f"{MAX_YAML_CHARS}")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_yaml_size(node)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` within the bounds."""
    return compose_yaml(text)[1]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_yaml_size(root: yaml.Node) -> None:
    """Expanded size and depth of a node graph, each shared node measured once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the current path: meeting one again is a recursive alias
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise YAMLLimitError(f"YAML expands to more than {MAX_YAML_NODES} nodes "
                                     "(aliases counted at each use)")
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YAMLLimitError(f"recursive YAML alias (line {node.start_mark.line + 1})")
        if depth > MAX_DEPTH:
            raise YAMLLimitError(f"YAML nested deeper than {MAX_DEPTH} levels "
                                 f"(line {node.start_mark.line + 1})")
        open_nodes.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in _children(node))


def load_json(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` (non-strict strings, like PYME) refusing nesting deeper than ``max_depth``.

    Raises ``ValueError`` (:class:`LoadLimitError` for the depth bound).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        data = json.loads(text, strict=False)
    except RecursionError:
        raise LoadLimitError(f"JSON nested deeper than {max_depth} levels") from None
    check_depth(data, max_depth)
    return data


_CONTAINERS = frozenset({dict, list})


def check_depth(data: Any, max_depth: int = MAX_DEPTH) -> None:
    """Refuse (``LoadLimitError``) lists/dicts nested deeper than ``max_depth``."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            raise LoadLimitError(f"JSON nested deeper than {max_depth} levels")
        if not _CONTAINERS & set(map(type, children)):  # a C-speed look at e.g. 100,000 IDs
            continue
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
