"""Task templates: data in, correctly escaped JSON text out, {{taskInputs}} left raw."""
from __future__ import annotations

import json

import pytest

from rules.templates import TASK_INPUTS, localisation_template, recipe_template, render_template

NASTY_RECIPE = ('- tablefilters.FilterTable:\n'
                '    inputName: "loc\\"alisations"\n'
                "    filters: {error_x: [0, 20]}  # back\\slash, 'quotes', tab\there\n"
                "    outputName: gefiltert_µm_✓\n")


def fill(text: str, inputs: dict) -> dict:
    """What a node server does: plain text replacement, then parse."""
    text = text.replace("{{ruleID}}", "000007-abc").replace("{{taskID}}", "12")
    return json.loads(text.replace(TASK_INPUTS, json.dumps(inputs)))


def test_inline_recipe_reaches_the_worker_intact():
    text = render_template(recipe_template(recipe_text=NASTY_RECIPE,
                                           output_dir="PYME-CLUSTER://lab2/u/out"))
    assert '"inputs": {{taskInputs}}' in text
    task = fill(text, {"input": "PYME-CLUSTER://lab2/u/a.h5r"})
    assert task["taskdef"]["recipe"] == NASTY_RECIPE
    assert task["id"] == "000007-abc~12" and task["type"] == "recipe"
    assert task["optimal-chunk-size"] == 1 and task["output_dir"] == "PYME-CLUSTER://lab2/u/out"
    assert task["inputs"] == {"input": "PYME-CLUSTER://lab2/u/a.h5r"}


def test_recipe_by_reference_and_literal_inputs():
    text = render_template(recipe_template(recipe_uri="PYME-CLUSTER://lab2/RECIPES/c.yaml",
                                           inputs={"input": "PYME-CLUSTER://lab2/r.h5r"}))
    assert TASK_INPUTS not in text
    task = json.loads(text.replace("{{ruleID}}", "r").replace("{{taskID}}", "0"))
    assert task["taskdefRef"] == "PYME-CLUSTER://lab2/RECIPES/c.yaml"
    assert task["inputs"] == {"input": "PYME-CLUSTER://lab2/r.h5r"}
    assert "output_dir" not in task and "taskdef" not in task
    with pytest.raises(ValueError):
        recipe_template()
    with pytest.raises(ValueError):
        recipe_template(recipe_text="- a: {}", recipe_uri="x")


def test_localisation_template_matches_pyme():
    template = localisation_template("PYME-CLUSTER://lab2/u/s1.pcs",
                                     "PYME-CLUSTER://lab2/u/analysis/s1.h5r.json",
                                     "http://10.0.0.7:15348/__aggregate_h5r/u/analysis/s1.h5r")
    assert template == {
        "id": "{{ruleID}}~{{taskID}}", "type": "localization",
        "taskdef": {"frameIndex": "{{taskID}}",
                    "metadata": "PYME-CLUSTER://lab2/u/analysis/s1.h5r.json"},
        "inputs": {"frames": "PYME-CLUSTER://lab2/u/s1.pcs"},
        "outputs": {
            "fitResults": "http://10.0.0.7:15348/__aggregate_h5r/u/analysis/s1.h5r/FitResults",
            "driftResults": "http://10.0.0.7:15348/__aggregate_h5r/u/analysis/s1.h5r/DriftResults"}}
    task = fill(render_template(template), {})
    assert int(task["taskdef"]["frameIndex"]) == 12
