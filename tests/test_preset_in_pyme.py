"""A preset saved by Spoolside, loaded by PYME's chained-analysis loader, builds the same chain.

PYME's loader is simulated here from the facts of pyme-protocol.md (§3.3, §2.4, §7), written
independently of Spoolside's engine: ``get_rule(context)`` = the rule class with the preset's
kwargs *updated by* the context (PYME Acquire's launch context: ``seriesName``, ``inputs``,
``output_dir`` = the series folder); a step after a localisation gets ``rule_outputs =
{"input": <results URI>}``, a step after a recipe ``{}``; ``rule_outputs`` become the literal task
inputs; a worker formats ``filePattern`` with ``output_dir`` (the task's, a ``/`` appended, its
dirname, scheme and serverfilter dropped) and ``file_stub`` (the name of ``inputs["input"]``).
The rules Spoolside pushes for the same preset and series are compared with it.
"""
from __future__ import annotations

import json
import pathlib
import posixpath
import re

import helpers
import pytest
import yaml

from resources import resource_path
from rules.chain import pushed_outputs, rule_for_series
from rules.presets import load_preset, pyme_differences

SERIES = helpers.SERIES  # PYME-CLUSTER://testcluster/pyme/series.pcs
OLD_PRESET = pathlib.Path(__file__).parent / "fixtures" / "old_default_preset.yaml"
_URI = re.compile(r"(?i)^pyme-cluster://([^/]*)/(.*)$")
_DEFAULT_PATTERNS = {"ImageOutput": "{output_dir}/{file_stub}.tif",
                     "CSVOutput": "{output_dir}/{file_stub}.csv"}


def _bare(uri: str) -> str:
    match = _URI.match(uri)
    return match.group(2) if match else uri


def _pyme_results_name(series: str) -> str:
    """genClusterResultFileName: <dir>/analysis/<stem>.h5r of the path after ://<filter>/."""
    path = posixpath.splitext(_bare(series))[0]
    return posixpath.join(posixpath.dirname(path), "analysis", posixpath.basename(path) + ".h5r")


def _pyme_written(recipe: str, task: dict) -> list[str]:
    """The files a PYME worker's output modules write for ``task`` (§2.4, §6)."""
    od = task.get("output_dir")
    context = {}
    if od is not None:
        od = od if od.endswith("/") else od + "/"
        context["output_dir"] = _bare(posixpath.dirname(od))
    if "input" in task["inputs"]:
        context["file_stub"] = posixpath.splitext(posixpath.basename(task["inputs"]["input"]))[0]
    files = []
    for module in yaml.safe_load(recipe):
        (name, params), = module.items()
        if name.startswith("output."):
            pattern = params.get("filePattern", _DEFAULT_PATTERNS.get(name.split(".", 1)[1], ""))
            try:
                files.append(pattern.format(**context))
            except KeyError as exc:  # the worker's save fails: no such context value
                files.append(f"task fails: no {exc} in the save context")
    return files


def pyme_chain(preset_path, series: str) -> list[dict]:
    """What PYME Acquire pushes for the preset, step by step: for a localisation its results
    file, for a recipe its task's inputs, output_dir and recipe, and the files it writes."""
    entries = yaml.safe_load(pathlib.Path(preset_path).read_text())
    context = {"seriesName": series, "inputs": {"input": series},
               "output_dir": posixpath.dirname(series)}  # PYMEAcquire's launch context (§7)
    steps = []
    for name, kwargs in entries:
        kwargs = dict(kwargs or {})
        kwargs.update(context)                          # get_rule: kwargs updated by the context
        if name.endswith("LocalizationRuleFactory") or name == "LocalisationRuleFactory":
            results = _pyme_results_name(kwargs["seriesName"])
            steps.append({"results": results})
            rule_outputs = {"input": "PYME-CLUSTER://testcluster/" + results}  # results → input
        else:
            inputs = kwargs["rule_outputs"] if "rule_outputs" in kwargs else kwargs["inputs"]
            task = {"inputs": dict(inputs), "output_dir": kwargs.get("output_dir"),
                    "recipe": kwargs.get("recipe")}
            task["writes"] = _pyme_written(task["recipe"], task)
            steps.append(task)
            rule_outputs = {}                            # a recipe names no outputs
        context = {**context, "rule_outputs": rule_outputs}
    return steps


def spoolside_chain(rule) -> list[dict]:
    """The same facts read from the rules Spoolside pushes (the JSON posted to the rule server)."""
    steps = []
    body = rule.rule
    written = [uri for _, uri in pushed_outputs(rule)]
    while body is not None:
        template = json.loads(body["template"])
        if template["type"] == "localization":
            url = template["outputs"]["fitResults"]
            steps.append({"results": url.split("/__aggregate_h5r/", 1)[1].rsplit("/", 1)[0]})
            written.pop(0)
        else:
            recipe = template["taskdef"]["recipe"]
            n_files = sum(1 for m in yaml.safe_load(recipe) if next(iter(m)).startswith("output."))
            steps.append({"inputs": template["inputs"], "output_dir": template.get("output_dir"),
                          "recipe": recipe, "writes": [_bare(u) for u in written[:n_files]]})
            del written[:n_files]
        body = body.get("on_completion")
    return steps


@pytest.mark.parametrize("preset", ["default", "pyme"])
def test_pyme_builds_the_same_chain_from_the_preset(cluster, tmp_path, preset):
    if preset == "default":
        path = resource_path("presets", "default.yaml")
    else:  # a preset saved by PYME's own Chained Analysis page
        path = tmp_path / "pyme.yaml"
        path.write_text(helpers.PYME_PRESET)
    rule = rule_for_series(load_preset(path), SERIES)
    rule._cluster = cluster
    ours, pymes = spoolside_chain(rule), pyme_chain(path, SERIES)
    assert ours == pymes
    assert pyme_differences(load_preset(path)) == []
    if preset == "default":  # same recipes, same inputs, same output folder
        assert [s.get("writes") for s in ours] == [None, ["pyme/analysis/series.tif",
                                                          "pyme/analysis/series_blobs.csv"]]
        assert ours[1]["inputs"] == {"input": "PYME-CLUSTER://testcluster/pyme/analysis/series.h5r"}


def test_an_old_preset_differs_in_pyme_and_saving_says_how(cluster, tmp_path):
    rule = rule_for_series(load_preset(OLD_PRESET), SERIES)
    rule._cluster = cluster
    ours, pymes = spoolside_chain(rule), pyme_chain(OLD_PRESET, SERIES)
    assert ours != pymes
    assert pymes[2]["inputs"] == {} and ours[2]["inputs"] != {}  # recipe → recipe: no inputs in PYME
    assert pymes[1]["output_dir"] == "PYME-CLUSTER://testcluster/pyme"  # the launch's folder wins
    assert pymes[2]["writes"] == ["task fails: no 'file_stub' in the save context"]
    notes = pyme_differences(load_preset(OLD_PRESET))
    assert any(n.startswith("step 3 follows a recipe step: PYME passes it no inputs") for n in notes)
    assert any(n.startswith("step 2: PYME never reads input_patterns") for n in notes)
    assert any(n.startswith("step 2: PYME's launch replaces output_dir") for n in notes)


def test_brace_templates_are_flagged():
    from rules.factories import LocalisationRuleFactory, RecipeRuleFactory
    chain = [LocalisationRuleFactory(analysisMetadata={}),
             RecipeRuleFactory(recipe="- a.B: {}\n",
                               input_templates={"input": "{{spool_dir}}/analysis/x.h5r"})]
    notes = pyme_differences(chain)
    assert len(notes) == 1 and "{{name}} stays literal text" in notes[0]
    chain[1] = RecipeRuleFactory(recipe="- a.B: {}\n",
                                 input_templates={"input": "{0[spool_dir]}/analysis/x.h5r"})
    assert pyme_differences(chain) == []
