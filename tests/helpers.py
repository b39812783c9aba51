"""Helpers the tests share: polling with a deadline, a simulated worker that bids for and hands in
tasks over real HTTP, as a PYME node server does, and a PYME-written chain preset."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import requests

COMPLETE, FAILED = 3, 4
SERIES = "PYME-CLUSTER://testcluster/pyme/series.pcs"
ANALYSIS = {"Analysis.DetectionThreshold": 2.5, "Analysis.FitModule": "LatGaussFitFR",
            "Camera.EMGain": 200}
# A chain preset as PYME writes it (``[[FactoryClass, kwargs], ...]`` YAML).
PYME_PRESET = """\
- - SpoolLocalLocalizationRuleFactory
  - analysisMetadata:
      Analysis.BGRange: [-30, 0]
      Analysis.DetectionThreshold: 1.0
      Analysis.FitModule: LatGaussFitFR
- - RecipeRuleFactory
  - recipe: "- localisations.AddPipelineDerivedVars:\\n    inputFitResults: FitResults\\n"
"""

# A one-step chain preset: localise every frame (quick background of 5 frames).
LOCALISE_PRESET = """\
- - LocalisationRuleFactory
  - analysisMetadata:
      Analysis.FitModule: LatGaussFitFR
      Analysis.DetectionThreshold: 1.0
      Analysis.BGRange: [-5, 0]
"""


def wait_for(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """Poll ``predicate`` until it returns something true (returned), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_fresh_python(code: str) -> None:
    """Run ``code`` in a new interpreter; it must print ``ok`` (checks what importing does)."""
    out = subprocess.run([sys.executable, "-c", code + "\nprint('ok')\n"], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def adverts(url: str) -> list[dict]:
    response = requests.get(url + "/task_advertisements", timeout=10)
    response.raise_for_status()
    return response.json()


def advert_for(url: str, rule_id: str) -> dict | None:
    for advert in adverts(url):
        if advert["ruleID"] == rule_id:
            return advert
    return None


def work(url: str, rule_id: str, status: int = COMPLETE, ids=None) -> list[int]:
    """Act as a worker: bid for the rule's available tasks, hand them in with ``status``.

    Returns the task IDs handled; the awarded templates are checked to parse as JSON.
    """
    advert = advert_for(url, rule_id)
    if advert is None:
        return []
    task_ids = advert["availableTaskIDs"] if ids is None else list(ids)
    bids = [{"ruleID": rule_id, "taskIDs": task_ids, "costs": [0.01] * len(task_ids)}]
    awards = requests.get(url + "/bid_on_tasks", json=bids, timeout=10).json()
    awarded = awards[0]["taskIDs"]
    for task_id in awarded:  # fill the template as a node server does; it must be strict JSON
        inputs = advert.get("inputsByTask", {}).get(str(task_id), {})
        json.loads(awards[0]["template"].replace("{{ruleID}}", rule_id)
                   .replace("{{taskID}}", str(task_id)).replace("{{taskInputs}}", json.dumps(inputs)))
    handins = [{"ruleID": rule_id, "taskIDs": awarded, "status": [status] * len(awarded)}]
    requests.post(url + "/handin", json=handins, timeout=10).raise_for_status()
    return awarded


def queue_info(url: str) -> dict:
    return requests.get(url + "/distributor/queues", timeout=10).json()["result"]


def followon(url: str, rule_id: str, timeout: float = 10.0) -> str:
    def find():
        reply = requests.get(url + "/spoolside/followons", params={"ruleID": rule_id}, timeout=10).json()
        return reply["ruleIDs"][0] if reply.get("ruleIDs") else None
    return wait_for(find, timeout, what=f"follow-on of {rule_id}")


def pyme_only_rule_server(**kwargs):
    """Spoolside's real rule server without its ``/spoolside/`` endpoints (they answer 404 "No
    handler", as PYME's server does), not started."""
    from cluster.ruleserver.server import RuleRequestHandler, RuleServer

    class PymeOnlyHandler(RuleRequestHandler):
        routes = {path: route for path, route in RuleRequestHandler.routes.items()
                  if not path.startswith("/spoolside/")}

    class PymeOnlyRuleServer(RuleServer):
        handler_class = PymeOnlyHandler

    return PymeOnlyRuleServer(**kwargs)
