"""Recipe YAML parsing, the module allow-list, parameter checks and the safe expression subset."""
from __future__ import annotations

import numpy as np
import pytest

from cluster.recipes import MODULES, RecipeError, parse_recipe
from cluster.recipes.expressions import ExpressionError, evaluate, parse_expression

PROTOCOL_EXAMPLE = """\
- localisations.AddPipelineDerivedVars: {inputFitResults: FitResults, outputLocalizations: Localizations}
- tablefilters.FilterTable:
    inputName: Localizations
    filters: {error_x: [0, 20], A: [5, 100000]}
    outputName: filtered
- localisations.DensityMapping: {inputLocalizations: filtered, renderingModule: Histogram, pixelSize: 10, outputImage: image}
- output.ImageOutput: {inputName: image, scheme: 'pyme-cluster://', filePattern: '{output_dir}/{file_stub}.tif'}
"""


def test_protocol_example_parses_with_pyme_names_defaults_and_lines():
    modules = parse_recipe(PROTOCOL_EXAMPLE)
    assert [m.name for m in modules] == [
        "localisations.AddPipelineDerivedVars", "tablefilters.FilterTable",
        "localisations.DensityMapping", "output.ImageOutput"]
    assert [m.line for m in modules] == [1, 2, 6, 7]
    derived, filt, density, out = modules
    assert derived.p["pixelSizeNM"] == 1.0 and derived.p["inputEvents"] == ""
    assert filt.p["filters"] == {"error_x": (0.0, 20.0), "A": (5.0, 100000.0)}
    assert density.p["pixelSize"] == 10.0 and density.p["renderingModule"] == "Histogram"
    assert density.p["xyBoundsMode"] == "estimate" and density.p["jitterVariable"] == "1.0"
    assert out.is_output and out.input_names() == ["image"]
    assert filt.input_names() == ["Localizations"] and filt.output_names() == ["filtered"]


def test_bare_legacy_names_load():
    (module,) = parse_recipe("- GaussianFilter: {sigmaX: 2, sigmaY: 3}\n")
    assert module.name == "filters.GaussianFilter"
    assert (module.p["sigmaX"], module.p["sigmaY"], module.p["inputName"]) == (2.0, 3.0, "input")


def test_module_with_no_parameters_uses_defaults():
    (module,) = parse_recipe("- processing.Label:\n")
    assert module.p == {"inputName": "input", "outputName": "labeled", "minRegionPixels": 10}


def test_allow_list_is_the_required_set():
    required = {"localisations.AddPipelineDerivedVars", "tablefilters.FilterTable",
                "tablefilters.Mapping", "localisations.DensityMapping", "filters.GaussianFilter",
                "processing.SimpleThreshold", "processing.Label", "measurement.Measure2D",
                "output.CSVOutput", "output.HDFOutput", "output.ImageOutput"}
    assert required <= set(MODULES)


@pytest.mark.parametrize("text, fragments", [
    ("- foo.Bar: {}\n", ["unknown recipe module 'foo.Bar'", "available:", "filters.GaussianFilter",
                         "line 1"]),
    ("- os.system: {command: ls}\n", ["unknown recipe module 'os.system'"]),
    ("- processing.Label: {minRegionPixels: many}\n",
     ["'minRegionPixels'", "processing.Label", "an integer", "'many'"]),
    ("- filters.GaussianFilter: {sigmaX: [1]}\n", ["'sigmaX'", "filters.GaussianFilter", "a number"]),
    ("- tablefilters.FilterTable: {filters: {A: [1]}}\n",
     ["'filters'", "tablefilters.FilterTable", "[min, max]"]),
    ("- processing.Label: {minRegionPixel: 3}\n",
     ["unknown parameter 'minRegionPixel'", "processing.Label", "minRegionPixels"]),
    ("- localisations.DensityMapping: {renderingModule: Voronoi}\n",
     ["renderingModule 'Voronoi'", "not supported", "Gaussian, Histogram"]),
    ("- localisations.DensityMapping: {renderingModule: Fancy}\n",
     ["'renderingModule'", "localisations.DensityMapping", "'Histogram'"]),
    ("- localisations.DensityMapping: {}\n", ["'3D Gaussian'", "PYME's default", "not supported"]),
    ("- output.CSVOutput: {inputName: t, scheme: File}\n", ["output.CSVOutput", "scheme 'File'"]),
    ("- output.CSVOutput: {inputName: t}\n", ["scheme 'File'", "PYME's default"]),
    ("- tablefilters.Mapping: {mappings: {z: 'x.__class__'}}\n", ["tablefilters.Mapping", "'z'",
                                                                    "Attribute"]),
    ("a: 1\n", ["must be a YAML list"]),
    ("- a.B: 1\n  c: 2\n", ["item 1 (line 1)", "one-key mapping"]),
    ("- filters.GaussianFilter: {sigmaX: 1\n- processing.Label: {}\n", ["YAML error", "line 2"]),
    ("- [1, 2]\n", ["item 1", "line 1", "one-key mapping"]),
    ("- processing.Label: 5\n", ["processing.Label", "parameters must be a mapping"]),
    ("", ["empty"]),
])
def test_parse_errors_name_the_culprit(text, fragments):
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_yaml_is_loaded_safely():
    with pytest.raises(RecipeError, match="YAML error"):
        parse_recipe("- !!python/object/apply:os.system ['true']\n")


# --- expressions ---------------------------------------------------------------------------

COLUMNS = {"x": np.array([1.0, 4.0, 9.0]), "y": np.array([2.0, 2.0, 2.0])}


@pytest.mark.parametrize("text, expected", [
    ("x + y", [3, 6, 11]),
    ("x * 2 - y / 2", [1, 7, 17]),
    ("-x ** 0.5", [-1, -2, -3]),
    ("sqrt(x) + abs(-y)", [3, 4, 5]),
    ("maximum(x, 5)", [5, 5, 9]),
    ("exp(log(x))", [1, 4, 9]),
    ("x > 2", [False, True, True]),
    ("1 < x <= 4", [False, True, False]),
    ("(x > 2) & (x < 5) | (x == 1)", [True, True, False]),
    ("3", 3.0),
])
def test_expression_subset(text, expected):
    np.testing.assert_allclose(evaluate(text, COLUMNS), expected)


def test_huge_powers_overflow_instead_of_hanging():
    with np.errstate(over="ignore"):
        assert np.isinf(evaluate("10 ** 10 ** 10", COLUMNS))


@pytest.mark.parametrize("text, fragment", [
    ("__import__('os')", "'__import__'"),
    ("__import__('os').system('true')", "not allowed"),
    ("x.__class__", "Attribute"),
    ("(lambda: 1)()", "not allowed"),
    ("lambda: 1", "Lambda"),
    ("x[0]", "Subscript"),
    ("'text'", "only numbers"),
    ("eval('1')", "'eval'"),
    ("sqrt(x=1)", "positional"),
    ("[i for i in x]", "ListComp"),
    ("x if y else 1", "IfExp"),
    ("x // 2", "FloorDiv"),
    ("not x", "Not"),
    ("x +", "syntax error"),
    ("True", "only numbers"),
])
def test_expression_refusals_name_what_is_refused(text, fragment):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    assert fragment in str(info.value)


def test_expression_unknown_column_is_named():
    with pytest.raises(ExpressionError, match="unknown column 'z'"):
        evaluate("z + 1", COLUMNS)
