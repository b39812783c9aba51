"""Task templates as data (§2.1); :func:`render_template` is the one place raw JSON text is made."""
from __future__ import annotations

import json
from typing import Any

TASK_INPUTS = "{{taskInputs}}"
TASK_ID = "{{taskID}}"
RULE_ID = "{{ruleID}}"
TASK_NAME = f"{RULE_ID}~{TASK_ID}"


def render_template(template: dict) -> str:
    """Serialise a task template; leave ``{{taskInputs}}`` unquoted for the server to fill.

    Everything else (inline recipes with quotes, backslashes, newlines, non-ASCII text) is
    escaped by ``json.dumps``; ``{{ruleID}}``/``{{taskID}}`` survive inside their strings.
    """
    return json.dumps(template).replace(json.dumps(TASK_INPUTS), TASK_INPUTS)


def localisation_template(series_uri: str, metadata_uri: str, results_url: str) -> dict[str, Any]:
    """PYME's localisation task: one frame (``{{taskID}}``) of ``series_uri``.

    ``results_url`` is the ``http://.../__aggregate_h5r/<results>.h5r`` URL fit results go to.
    """
    results_url = results_url.rstrip("/")
    return {
        "id": TASK_NAME,
        "type": "localization",
        "taskdef": {"frameIndex": TASK_ID, "metadata": metadata_uri},
        "inputs": {"frames": series_uri},
        "outputs": {"fitResults": f"{results_url}/FitResults",
                    "driftResults": f"{results_url}/DriftResults"},
    }


def recipe_template(*, recipe_text: str | None = None, recipe_uri: str | None = None,
                    output_dir: str | None = None,
                    inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """PYME's recipe task: inline ``recipe_text`` (``taskdef.recipe``) or ``recipe_uri``
    (``taskdefRef``), exactly one of them.

    ``inputs`` None → the server's per-task ``{{taskInputs}}``; a dict → literal inputs (chained
    follow-on rules, whose server-made tasks have no ``inputsByTask``).
    """
    if (recipe_text is None) == (recipe_uri is None):
        raise ValueError("give exactly one of recipe_text and recipe_uri")
    template: dict[str, Any] = {
        "id": TASK_NAME,
        "type": "recipe",
        "optimal-chunk-size": 1,
        "inputs": TASK_INPUTS if inputs is None else dict(inputs),
    }
    if output_dir is not None:
        template["output_dir"] = output_dir
    if recipe_text is not None:
        template["taskdef"] = {"recipe": recipe_text}
    else:
        template["taskdefRef"] = recipe_uri
    return template
