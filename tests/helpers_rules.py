"""Test helpers for the rules engine: a simulated worker speaking the rule server's HTTP API."""
from __future__ import annotations

import json
import time

import requests

COMPLETE, FAILED = 3, 4
SERIES = "PYME-CLUSTER://testcluster/pyme/series.pcs"


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
    handins = [{"ruleID": rule_id, "taskIDs": awarded, "status": [status] * len(awarded)}]
    requests.post(url + "/handin", json=handins, timeout=10).raise_for_status()
    return awarded


def queue_info(url: str) -> dict:
    return requests.get(url + "/distributor/queues", timeout=10).json()["result"]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def followon(url: str, rule_id: str, timeout: float = 10.0) -> str:
    def find():
        reply = requests.get(url + "/spoolside/followons", params={"ruleID": rule_id}, timeout=10).json()
        return reply["ruleIDs"][0] if reply.get("ruleIDs") else None
    return wait_for(find, timeout, what=f"follow-on of {rule_id}")


def template_of(url: str, rule_id: str) -> dict:
    advert = wait_for(lambda: advert_for(url, rule_id), what=f"advert of {rule_id}")
    return json.loads(advert["taskTemplate"].replace("{{taskInputs}}", "null"))
