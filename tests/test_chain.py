"""The Qt-free chain (rules/chain.py): one launch for window and CLI, inputs bound to the files the
previous step really writes, PYME's presets mapped to the rule that fits the series."""
from __future__ import annotations

import json
import pathlib

import helpers
import pytest

from resources import resource_path
from rules.chain import (
    ChainStep,
    chain_problems,
    expected_outputs,
    from_factories,
    launch_context,
    preview_context,
    pushed_outputs,
    rule_for_series,
    to_factories,
)
from rules.localisation import LocalisationRule, SpoolLocalLocalizationRule
from rules.presets import load_preset

SERIES = helpers.SERIES  # PYME-CLUSTER://testcluster/pyme/series.pcs (the fixture series)


def _inputs(rule_json: dict) -> dict:
    return json.loads(rule_json["template"])["inputs"]


OLD_PRESET = pathlib.Path(__file__).parent / "fixtures" / "old_default_preset.yaml"


def _default_rule(cluster, preset=None):
    rule = rule_for_series(load_preset(preset or resource_path("presets", "default.yaml")), SERIES)
    rule._cluster = cluster
    return rule


def test_follow_on_inputs_are_the_files_the_previous_step_really_writes(cluster):
    # a first analysis already wrote series.h5r and series_1.tif: the new results get _N names
    cluster.data.put_file("pyme/analysis/series.h5r", b"old")
    cluster.data.put_file("pyme/analysis/series_1.tif", b"old")
    rule = _default_rule(cluster)
    render_and_measure = rule.rule["on_completion"]
    assert "on_completion" not in render_and_measure  # two steps: localise, render + measure

    assert rule.results_uri == "PYME-CLUSTER://testcluster/pyme/analysis/series_1.h5r"
    assert _inputs(render_and_measure) == {"input": rule.results_uri}
    # the recipe reads series_1.h5r → series_1.tif (taken → series_1_1.tif), series_1_blobs.csv
    assert [uri for _, uri in pushed_outputs(rule)] == [
        rule.results_uri + "?table=FitResults",
        "PYME-CLUSTER://testcluster/pyme/analysis/series_1_1.tif",
        "PYME-CLUSTER://testcluster/pyme/analysis/series_1_blobs.csv"]


def test_an_old_three_step_preset_still_runs_as_before(cluster):
    # output_dir and input_patterns (a recipe after a recipe): Spoolside keeps running these
    cluster.data.put_file("pyme/analysis/series.h5r", b"old")
    cluster.data.put_file("pyme/analysis/series_1.tif", b"old")
    rule = _default_rule(cluster, OLD_PRESET)
    render, measure = rule.rule["on_completion"], rule.rule["on_completion"]["on_completion"]
    assert _inputs(render) == {"input": "PYME-CLUSTER://testcluster/pyme/analysis/series_1.h5r"}
    assert json.loads(render["template"])["output_dir"] == "PYME-CLUSTER://testcluster/pyme/analysis"
    assert _inputs(measure) == {"input": "PYME-CLUSTER://testcluster/pyme/analysis/series_1_1.tif"}
    assert [uri for _, uri in pushed_outputs(rule)][1:] == [
        "PYME-CLUSTER://testcluster/pyme/analysis/series_1_1.tif",
        "PYME-CLUSTER://testcluster/pyme/analysis/series_1_1_blobs.csv"]


def test_a_first_analysis_writes_beside_the_series_results(cluster):
    rule = _default_rule(cluster)
    assert _inputs(rule.rule["on_completion"]) == {
        "input": "PYME-CLUSTER://testcluster/pyme/analysis/series.h5r"}
    assert [uri for _, uri in pushed_outputs(rule)][1:] == [
        "PYME-CLUSTER://testcluster/pyme/analysis/series.tif",
        "PYME-CLUSTER://testcluster/pyme/analysis/series_blobs.csv"]
    steps = from_factories(load_preset(resource_path("presets", "default.yaml")))
    assert [uri for _, uri in expected_outputs(steps, SERIES, "testcluster")] == [
        uri for _, uri in pushed_outputs(rule)]


def test_window_steps_and_cli_preset_push_the_same_rules(cluster):
    preset = resource_path("presets", "default.yaml")
    from_cli = rule_for_series(load_preset(preset), SERIES)
    # the window keeps the chain as steps and converts them back at launch
    from_window = rule_for_series(to_factories(from_factories(load_preset(preset))), SERIES)
    for rule in (from_cli, from_window):
        rule._cluster = cluster
    assert from_window.rule == from_cli.rule
    assert from_window.context == from_cli.context


def test_one_launch_context_like_pymeacquire():
    first = load_preset(resource_path("presets", "default.yaml"))[0]
    assert launch_context(SERIES, first) == {
        "seriesName": SERIES, "output_dir": "PYME-CLUSTER://testcluster/pyme"}
    recipe_first = ChainStep.recipe_step(recipe="- a.B: {}\n", input_patterns={}).to_factory()
    assert launch_context(SERIES, recipe_first)["inputs"] == {"input": [SERIES]}
    context = preview_context(SERIES)
    assert context["spool_dir"] == "PYME-CLUSTER://testcluster/pyme" and context["seriesName"] == SERIES


def test_pyme_preset_maps_to_the_rule_for_the_series_at_hand(tmp_path):
    path = tmp_path / "pyme.yaml"
    path.write_text(helpers.PYME_PRESET)
    factories = load_preset(path)
    assert type(factories[0]).__name__ == "SpoolLocalLocalizationRuleFactory"
    on_cluster = rule_for_series(factories, SERIES)  # complete or still spooling: no spooler here
    assert type(on_cluster) is LocalisationRule
    spooler = object()
    live = rule_for_series(factories, SERIES, spooler=spooler)
    assert type(live) is SpoolLocalLocalizationRule and live.spooler is spooler
    assert type(factories[0]).__name__ == "SpoolLocalLocalizationRuleFactory"  # preset untouched


@pytest.mark.parametrize("key, value", [
    ("Analysis.ROISize", 1), ("Analysis.ROISize", 1000000), ("Analysis.DetectionThreshold", 0),
    ("Analysis.BGRange", [0, -3]), ("Analysis.BGRange", [-100000, 0]),
    ("Analysis.FitModule", "Nope"), ("voxelsize.x", 0), ("Camera.ElectronsPerCount", 0)])
def test_chain_check_flags_every_setting_the_worker_refuses(key, value):
    from cluster.localisation import FitSettings, LocalisationError
    md = {"Analysis.FitModule": "LatGaussFitFR", "voxelsize.x": 0.1, "voxelsize.y": 0.1, key: value}
    with pytest.raises(LocalisationError) as refused:
        FitSettings.from_metadata(md)
    step = ChainStep.localisation({**md})
    messages = [p.message for p in chain_problems([step], preview_context(SERIES))]
    assert messages == [str(refused.value)]


def test_a_pyme_chained_analysis_preset_runs_from_spoolside_launch(cluster, rule_server, data_server,
                                                                   tmp_path, capsys):
    from rules.cli import run_launch
    path = tmp_path / "pyme.yaml"
    path.write_text(helpers.PYME_PRESET)
    assert run_launch([str(path), "--series", SERIES, "--server", rule_server.url,
                       "--dataserver", data_server.url, "--serverfilter", "testcluster"]) == 0
    assert capsys.readouterr().out.startswith("pushed rule ")
