"""The safe expression subset of ``tablefilters.Mapping`` (parsed with :mod:`ast`, never ``eval``).

Allowed: numbers, column names, ``+ - * / **``, unary ``-``/``+``, comparisons (chained too),
``&``/``|`` to combine comparisons, parentheses, and calls to :data:`FUNCTIONS` with positional
arguments. Everything else (attribute access, subscripts, lambdas, strings, keywords, other names
as functions, ...) is refused with :class:`ExpressionError`. Numbers become float64, so ``**``
overflows to ``inf`` instead of building huge Python integers.
"""
from __future__ import annotations

import ast
import operator
from typing import Callable, Mapping

import numpy as np

MAX_LENGTH = 2000
MAX_DEPTH = 50

FUNCTIONS: dict[str, Callable] = {
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
    "abs": np.abs,
    "minimum": np.minimum,
    "maximum": np.maximum,
}

_BINARY: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.BitAnd: np.logical_and,
    ast.BitOr: np.logical_or,
}
_UNARY: dict[type, Callable] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE: dict[type, Callable] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}


class ExpressionError(ValueError):
    """An expression outside the safe subset, or naming an unknown column."""


def parse_expression(text: str) -> ast.Expression:
    """Parse and validate ``text``; raise :class:`ExpressionError` naming what is not allowed."""
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error in {text!r}: {exc.msg}") from exc
    _check(tree.body, text, 0)
    return tree


def column_names(tree: ast.Expression) -> set[str]:
    """The column names an expression reads (function names excluded)."""
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls}


def evaluate(text: str, columns: Mapping[str, np.ndarray] | Callable[[str], np.ndarray]):
    """Evaluate ``text`` with names looked up in ``columns`` (a mapping or a lookup function)."""
    tree = parse_expression(text)
    lookup = columns.__getitem__ if isinstance(columns, Mapping) else columns
    with np.errstate(all="ignore"):
        return _eval(tree.body, lookup, text)


def _check(node: ast.AST, text: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression {text!r} is nested too deeply")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"only numbers are allowed as constants in {text!r}, "
                                  f"not {node.value!r}")
    elif isinstance(node, ast.Name):
        pass
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed in {text!r}")
        _check(node.left, text, depth + 1)
        _check(node.right, text, depth + 1)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed in {text!r}")
        _check(node.operand, text, depth + 1)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise ExpressionError(f"comparison {type(op).__name__} is not allowed in {text!r}")
        for child in [node.left, *node.comparators]:
            _check(child, text, depth + 1)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(f"call to {what!r} is not allowed in {text!r} "
                                  f"(allowed functions: {', '.join(sorted(FUNCTIONS))})")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(f"only positional arguments are allowed in {text!r}")
        for arg in node.args:
            _check(arg, text, depth + 1)
    else:
        raise ExpressionError(f"{type(node).__name__} ({ast.unparse(node)!r}) is not allowed "
                              f"in {text!r}")


def _eval(node: ast.AST, lookup: Callable[[str], np.ndarray], text: str):
    if isinstance(node, ast.Constant):
        return np.float64(node.value)  # type: ignore[arg-type]  # numbers only (checked by _check)
    if isinstance(node, ast.Name):
        try:
            return lookup(node.id)
        except KeyError:
            raise ExpressionError(f"unknown column {node.id!r} in {text!r}") from None
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, lookup, text), _eval(node.right, lookup, text))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, lookup, text))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, lookup, text)
        result = None
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, lookup, text)
            part = _COMPARE[type(op)](left, right)
            result = part if result is None else np.logical_and(result, part)
            left = right
        return result
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_eval(a, lookup, text) for a in node.args]
        try:
            return FUNCTIONS[node.func.id](*args)
        except TypeError as exc:
            raise ExpressionError(f"bad arguments to {node.func.id} in {text!r}: {exc}") from exc
    raise ExpressionError(f"{type(node).__name__} is not allowed in {text!r}")  # unreachable
