"""Recipe module parameters checked in the editor from the declarations the cluster publishes."""
from __future__ import annotations

import json

import pytest

from cluster.local import start_local_cluster
from cluster.recipes.errors import RecipeError
from cluster.recipes.parser import parse_recipe
from cluster.recipes.registry import module_schema
from rules.recipe_check import MODULE_SCHEMA_FILE, check_recipe
from rules.recipe_params import params_from_json

RECIPE = """\
- filters.GaussianFilter:
    inputName: input
    sigmaX: two
    sigmaY: 2.0
    outputName: smoothed
- processing.SimpleThreshold:
    inputName: smoothed
    threshold: 0.05
    colour: red
    outputName: mask
"""


def test_published_declarations_flag_types_and_unknown_names_on_their_lines():
    modules = params_from_json(json.loads(json.dumps(module_schema())))
    problems = check_recipe(RECIPE, modules)
    assert [p.line for p in problems] == [3, 9]
    assert "sigmaX" in problems[0].message and "colour" in problems[1].message
    # the same sentence the cluster gives when it parses the recipe
    with pytest.raises(RecipeError) as refused:
        parse_recipe(RECIPE.replace("    colour: red\n", ""))
    assert problems[0].message == str(refused.value).replace(" (line 1)", "")
    assert check_recipe(RECIPE.replace("two", "2.0").replace("    colour: red\n", ""), modules) == []


def test_an_unclosed_bracket_is_flagged_on_the_line_it_opens():
    problems = check_recipe("- a.B:\n    x: 1\n    y: 2\n    z: [1, 2\n- c.D: {}\n")
    assert len(problems) == 1 and problems[0].line == 4


def test_the_embedded_cluster_publishes_its_module_declarations(tmp_path):
    with start_local_cluster(tmp_path) as lc:
        data = json.loads((lc.root / "RECIPES" / MODULE_SCHEMA_FILE).read_text())
    modules = params_from_json(data)
    assert "filters.GaussianFilter" in modules
    assert {p.name for p in modules["filters.GaussianFilter"]} >= {"sigmaX", "inputName"}
