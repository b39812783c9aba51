"""``tablefilters.*``: keep rows within column ranges, add columns from safe expressions."""
from __future__ import annotations

import numpy as np

from ..expressions import ExpressionError, column_names, evaluate, parse_expression
from .base import Param, RecipeModule


class FilterTable(RecipeModule):
    """Keep rows whose every filtered column lies strictly between its [min, max] (as PYME)."""

    name = "tablefilters.FilterTable"
    params = (
        Param("inputName", "str", "measurements", "input"),
        Param("filters", "ranges", {}),
        Param("outputName", "str", "filtered", "output"),
    )

    def run(self, namespace):
        table = self.table(namespace, "inputName")
        keep = np.ones(len(table), dtype=bool)
        for column, (low, high) in self.p["filters"].items():
            if column not in table:
                raise self.error(f"filter on column {column!r}, which {self.p['inputName']!r} lacks "
                                 f"(columns: {', '.join(table.names())})")
            values = np.asarray(table[column], dtype=float)
            keep &= (values > low) & (values < high)
        self.put(namespace, "outputName", table.take(keep))


class Mapping(RecipeModule):
    """Add columns computed from expressions over existing columns (see ``expressions``)."""

    name = "tablefilters.Mapping"
    params = (
        Param("inputName", "str", "measurements", "input"),
        Param("mappings", "strmap", {}),
        Param("outputName", "str", "mapped", "output"),
    )

    def validate(self):
        for new, text in self.p["mappings"].items():
            try:
                parse_expression(text)
            except ExpressionError as exc:
                raise self.error(f"mapping {new!r}: {exc}") from exc

    def run(self, namespace):
        table = self.table(namespace, "inputName")
        new = {}

        def lookup(name):
            return new[name] if name in new else table[name]

        for column, text in self.p["mappings"].items():
            unknown = sorted(n for n in column_names(parse_expression(text))
                             if n not in table and n not in new)
            if unknown:
                raise self.error(f"mapping {column!r} = {text!r} uses unknown column {unknown[0]!r} "
                                 f"(columns: {', '.join(table.names())})")
            try:
                value = np.asarray(evaluate(text, lookup))
            except ExpressionError as exc:
                raise self.error(f"mapping {column!r}: {exc}") from exc
            if value.ndim == 0:
                value = np.full(len(table), value)
            if value.shape != (len(table),):
                raise self.error(f"mapping {column!r} = {text!r} gave shape {value.shape}, "
                                 f"expected ({len(table)},)")
            new[column] = value
        self.put(namespace, "outputName", table.with_columns(new))
