"""{{variable}} patterns, PYME's {0[key]} form, and the series variables of product.md."""
from __future__ import annotations

import pytest

from rules.patterns import PatternError, pattern_context, substitute, variables_in

SERIES = "PYME-CLUSTER://lab2/u/2024_5_3/s1.pcs"


def test_series_variables():
    context = pattern_context(SERIES, {"user": "ana"})
    assert context["series_name"] == SERIES
    assert context["spool_dir"] == "PYME-CLUSTER://lab2/u/2024_5_3"
    assert context["series_stub"] == "s1"
    assert context["results_dir"] == "PYME-CLUSTER://lab2/u/2024_5_3/analysis"
    assert context["user"] == "ana"
    bare = pattern_context("u/s2.pcs")
    assert (bare["series_name"], bare["spool_dir"], bare["results_dir"]) == (
        "u/s2.pcs", "u", "u/analysis")


def test_substitute_both_forms_and_whitespace():
    context = pattern_context(SERIES)
    expected = "PYME-CLUSTER://lab2/u/2024_5_3/analysis/s1.h5r"
    assert substitute("{{spool_dir}}/analysis/{{series_stub}}.h5r", context) == expected
    assert substitute("{{ spool_dir }}/analysis/{{\tseries_stub }}.h5r", context) == expected
    assert substitute("{0[spool_dir]}/analysis/{0[series_stub]}.h5r", context) == expected
    assert substitute("no variables", context) == "no variables"


def test_rule_outputs_are_variables_and_server_placeholders_survive():
    context = pattern_context(SERIES, {"rule_outputs": {"results": "PYME-CLUSTER://lab2/r.h5r"}})
    assert substitute("{{results}}", context) == "PYME-CLUSTER://lab2/r.h5r"
    assert substitute("{{rule_outputs.results}}", context) == "PYME-CLUSTER://lab2/r.h5r"
    assert substitute("out/{{ruleID}}/{{taskID}}", context) == "out/{{ruleID}}/{{taskID}}"
    assert substitute("{{taskID}}", {"taskID": 3}) == "3"


def test_unknown_variable_lists_the_known_ones():
    context = pattern_context(SERIES)
    with pytest.raises(PatternError) as info:
        substitute("{{spool_dir}}/{{seris_stub}}.h5r", context)
    message = str(info.value)
    assert "seris_stub" in message
    for known in ("series_name", "spool_dir", "series_stub", "results_dir"):
        assert known in message
    assert isinstance(info.value, ValueError) and info.value.name == "seris_stub"
    with pytest.raises(PatternError):
        substitute("{0[nope]}", context)


def test_variables_in():
    assert variables_in("{{a}}/{0[b]}/{{ a }}/{{c.d}}") == ["a", "b", "c.d"]
    assert variables_in("plain {x}") == []
