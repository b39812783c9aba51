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


def test_the_bundled_fallback_list_is_what_the_embedded_cluster_publishes():
    from resources import resource_path
    from rules.recipe_check import BUNDLED_SCHEMA_FILE, bundled_module_schema
    # regenerate with: json.dumps(module_schema(), indent=1) into resources/recipe_modules.json
    assert json.loads(resource_path(BUNDLED_SCHEMA_FILE).read_text()) == \
        json.loads(json.dumps(module_schema()))
    assert bundled_module_schema() == params_from_json(module_schema())


def test_the_bundled_list_warns_on_known_modules_and_lets_others_pass():
    from rules.chain import ChainStep, chain_problems, preview_context
    from rules.recipe_check import bundled_module_schema
    step = ChainStep.recipe_step(recipe=RECIPE + "- pyme_plugin.Deconvolve: {iterations: 5}\n")
    found = chain_problems([step], preview_context(None), bundled_module_schema(),
                           bundled_modules=True)
    assert [(p.line, p.warning) for p in found] == [(3, True), (9, True)]  # not pyme_plugin's
    broken = ChainStep.recipe_step(recipe="- filters.GaussianFilter: {sigmaX: [2\n")
    assert [p.warning for p in chain_problems([broken], preview_context(None),
                                              bundled_module_schema(), bundled_modules=True)] == [False]
