"""Static recipe checks for the chain editor."""
from __future__ import annotations

from rules.recipe_check import check_recipe, recipe_inputs, recipe_outputs

RECIPE = """\
- localisations.AddPipelineDerivedVars: {inputFitResults: FitResults, outputLocalizations: Localizations}
- tablefilters.FilterTable:
    inputName: Localizations
    filters: {error_x: [0, 20]}
    outputName: filtered
- localisations.DensityMapping: {inputLocalizations: filtered, pixelSize: 10, outputImage: image}
- output.HDFOutput: {inputVariables: {filtered: Filtered, extra: Extra}, filePattern: '{output_dir}/{file_stub}.hdf'}
"""
AVAILABLE = {"localisations.AddPipelineDerivedVars", "tablefilters.FilterTable",
             "localisations.DensityMapping", "output.HDFOutput", "filters.GaussianFilter"}


def test_good_recipe_has_no_problems():
    assert check_recipe(RECIPE, AVAILABLE) == []
    assert check_recipe(RECIPE) == []
    assert check_recipe("- GaussianFilter: {inputName: a, outputName: b}\n", AVAILABLE) == []


def test_parse_errors_carry_their_line():
    problems = check_recipe("- a.B:\n    x: 1\n    y: [1, 2\n- c.D: {}\n")
    assert len(problems) == 1 and problems[0].line in (3, 4)
    assert "parse" in problems[0].message
    problems = check_recipe("- a.B:\n    x: 1\n   y: 2\n")
    assert len(problems) == 1 and problems[0].line == 3


def test_shape_and_module_problems():
    problems = check_recipe("a.B: {}\n")
    assert len(problems) == 1 and "list" in problems[0].message
    problems = check_recipe("- a.B: {}\n- [1, 2]\n- {x.Y: {}, z.W: {}}\n- q.R: 5\n")
    assert [p.line for p in problems] == [2, 3, 4]
    assert all("one-key" in p.message for p in problems)
    problems = check_recipe(RECIPE.replace("DensityMapping", "DensityMapp"), AVAILABLE)
    assert [(p.line, "DensityMapp" in p.message) for p in problems] == [(6, True)]
    assert check_recipe("   \n")[0].message == "the recipe is empty"


def test_inputs_and_outputs():
    assert recipe_outputs(RECIPE) == {"Localizations", "filtered", "image"}
    assert recipe_inputs(RECIPE) == {"FitResults", "extra"}
    assert recipe_inputs("- a.B: {inputName: '', outputName: x}\n") == set()
    assert recipe_inputs("- a.B: [oops\n") == set() == recipe_outputs("- a.B: [oops\n")
