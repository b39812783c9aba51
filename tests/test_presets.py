"""Chain presets: PYME's [[FactoryClass, kwargs], ...] YAML, round trips and bad files."""
from __future__ import annotations

import pytest
import yaml
from helpers import PYME_PRESET

import rules
from rules.presets import PresetError, import_pyme_presets, load_preset, save_preset

RECIPE = '- localisations.AddPipelineDerivedVars:\n    inputFitResults: FitResults\n    note: "a \\\\ b"\n'


def chain():
    md = rules.MetaDataHandler({"Analysis.DetectionThreshold": 1.5, "Analysis.BGRange": [-30, 0],
                                "Analysis.FitModule": "LatGaussFitFR"})
    first = rules.LocalisationRuleFactory(analysisMetadata=md, startAt=3)
    second = rules.RecipeRuleFactory(recipe=RECIPE, output_dir="{{spool_dir}}/analysis")
    third = rules.RecipeRuleFactory(recipeURI="PYME-CLUSTER:///RECIPES/measure.yaml",
                                    input_patterns={"input": "{{spool_dir}}/analysis/{{series_stub}}.tif"})
    first.chain(second).chain(third)
    return first


def test_round_trip(tmp_path):
    path = save_preset(tmp_path / "chain.yaml", chain())
    data = yaml.safe_load(path.read_text())
    assert [entry[0] for entry in data] == ["LocalisationRuleFactory", "RecipeRuleFactory",
                                            "RecipeRuleFactory"]
    assert data[0][1]["analysisMetadata"] == {"Analysis.DetectionThreshold": 1.5,
                                              "Analysis.BGRange": [-30, 0],
                                              "Analysis.FitModule": "LatGaussFitFR"}
    loaded = load_preset(path)
    assert [type(f).__name__ for f in loaded] == ["LocalisationRuleFactory", "RecipeRuleFactory",
                                                  "RecipeRuleFactory"]
    assert loaded[0].steps() == loaded  # chained in order
    assert loaded[1].kwargs == {"recipe": RECIPE, "output_dir": "{{spool_dir}}/analysis"}
    assert loaded[2].kwargs["input_patterns"] == {"input": "{{spool_dir}}/analysis/{{series_stub}}.tif"}
    assert loaded[0].kwargs["startAt"] == 3
    assert isinstance(loaded[0].kwargs["analysisMetadata"], dict)
    # saving the loaded chain gives the same file
    again = save_preset(tmp_path / "again.yaml", loaded)
    assert again.read_text() == path.read_text()


def test_loads_pyme_written_preset(tmp_path):
    path = tmp_path / "default.yaml"
    path.write_text(PYME_PRESET)
    first, second = load_preset(path)
    assert isinstance(first, rules.SpoolLocalLocalizationRuleFactory)
    assert first.kwargs["analysisMetadata"]["Analysis.BGRange"] == [-30, 0]
    assert first.on_completion is second and second.kwargs["recipe"].startswith("- localisations.")


BAD = {
    "not YAML": ("- - RecipeRuleFactory\n  - {recipe: [unclosed\n", "not valid YAML at line"),
    "not a list": ("RecipeRuleFactory: {}\n", "a preset is a YAML list"),
    "empty": ("[]\n", "no steps"),
    "not a pair": ("- [RecipeRuleFactory]\n", "entry 1: each entry must be a pair"),
    "unknown class": ("- [RecipeRuleFactory, {recipe: x}]\n- [os.system, {}]\n",
                      "entry 2: unknown factory class 'os.system'"),
    "base class": ("- [RuleFactory, {}]\n", "unknown factory class 'RuleFactory'"),
    "settings not mapping": ("- [RecipeRuleFactory, [1, 2]]\n", "settings of RecipeRuleFactory must be a mapping"),
    "metadata not mapping": ("- [LocalisationRuleFactory, {analysisMetadata: 3}]\n",
                             "analysisMetadata must be a mapping"),
    "bad startAt": ("- [LocalisationRuleFactory, {startAt: -1}]\n", "startAt must be a whole number"),
    "recipe not text": ("- [RecipeRuleFactory, {recipe: [1]}]\n", "recipe must be text"),
    "both recipes": ("- [RecipeRuleFactory, {recipe: x, recipeURI: y}]\n", "both recipe and recipeURI"),
    "bad inputs": ("- [RecipeRuleFactory, {recipe: x, inputs: {input: 5}}]\n",
                   "inputs['input'] must be a URI"),
    "runtime object": ("- [SpoolLocalLocalizationRuleFactory, {spooler: x}]\n", "spooler cannot come"),
    "python tag": ("- !!python/object/apply:os.system [echo hi]\n", "not valid YAML"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_presets_name_file_entry_and_problem(tmp_path, name):
    text, message = BAD[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(PresetError) as info:
        load_preset(path)
    assert str(path) in str(info.value)
    assert message in str(info.value), str(info.value)
    assert path.read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_file_and_failed_save_change_nothing(tmp_path):
    with pytest.raises(PresetError, match="cannot read"):
        load_preset(tmp_path / "nope.yaml")
    good = save_preset(tmp_path / "chain.yaml", chain())
    text = good.read_text()

    class Odd(rules.RecipeRuleFactory):
        pass
    with pytest.raises(ValueError):
        save_preset(good, [Odd(recipe="x")])
    assert good.read_text() == text and [p.name for p in tmp_path.iterdir()] == ["chain.yaml"]


def test_import_pyme_presets(tmp_path):
    config = tmp_path / "PYME"
    (config / "chained_analysis").mkdir(parents=True)
    (config / "chained_analysis" / "default.yaml").write_text(PYME_PRESET)
    (config / "chained_analysis" / "broken.yaml").write_text("- [Nope, {}]\n")
    dest = tmp_path / "ours"
    dest.mkdir()
    (dest / "default.yaml").write_text("keep me")
    presets, problems = import_pyme_presets(config, dest=dest)
    assert list(presets) == ["default"] and len(presets["default"]) == 2
    assert len(problems) == 1 and "broken.yaml" in str(problems[0]) and "Nope" in str(problems[0])
    assert (dest / "default.yaml").read_text() == "keep me"
    assert [type(f).__name__ for f in load_preset(dest / "default_1.yaml")] == [
        "SpoolLocalLocalizationRuleFactory", "RecipeRuleFactory"]
    with pytest.raises(PresetError, match="no such folder"):
        import_pyme_presets(tmp_path / "absent")


def test_factory_kwargs_and_steps_for_the_gui():
    first = chain()
    kwargs = first.kwargs
    kwargs["startAt"] = 99  # a copy: the factory is unchanged
    assert first.kwargs["startAt"] == 3
    assert [f.rule_type for f in first.steps()] == ["localization", "recipe", "recipe"]
    with pytest.raises(ValueError, match="loop"):
        first.steps()[-1].chain(first)
