"""A worker process of the embedded cluster: adverts → bid → run → hand in.

Spoolside's workers talk to the rule server directly, as a PYME node server does (§2.2), rather
than through a node-server layer: on a cluster of one the node layer would only add a hop. Each
worker rates the advertised tasks by data locality (0.01 for a frame or input held under its own
data root, so local work takes the rule server's no-auction fast path), bids for a batch (many
frames at once for localisation, so one vectorised fit covers them), runs it and hands the
statuses in with one request.

Run as ``python -m cluster.worker --ruleserver URL --dataserver URL --root DIR --serverfilter NAME``.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import requests

from cluster.tasks import ClusterFiles, Task, TaskError, TaskRunner, fill_template
from rules.dataserver_client import DataClient
from rules.ruleserver_client import TOKEN_ENV, TOKEN_HEADER

logger = logging.getLogger(__name__)

LOCAL_COST = 0.01
REMOTE_COST = 1.0
LOCALISATION_BATCH = 64
IDLE_POLL_S = 0.05


class Worker:
    """The bid-run-hand-in loop of one worker process."""

    def __init__(self, ruleserver_url: str, dataserver_url: str, root: Path | None,
                 serverfilter: str, batch: int = LOCALISATION_BATCH):
        self.ruleserver = ruleserver_url.rstrip("/")
        self.session = requests.Session()
        token = os.environ.get(TOKEN_ENV)
        if token:  # a cluster bound beyond loopback
            self.session.headers[TOKEN_HEADER] = token
        self.session.trust_env = False
        self.files = ClusterFiles(DataClient([dataserver_url], serverfilter), root, serverfilter)
        self.runner = TaskRunner(self.files)
        self.batch = batch
        self.stopping = threading.Event()

    def run(self) -> None:
        logger.info("worker %d taking tasks from %s", os.getpid(), self.ruleserver)
        while not self.stopping.is_set():
            try:
                worked = self.run_once()
            except requests.RequestException as exc:
                logger.warning("rule server unreachable (%s); retrying", exc)
                self.stopping.wait(1.0)
                continue
            if not worked:
                self.stopping.wait(IDLE_POLL_S)

    def run_once(self) -> bool:
        """One round: returns True when tasks were won and run."""
        adverts = self._get("/task_advertisements")
        for advert in adverts if isinstance(adverts, list) else []:
            tasks = self._win(advert)
            if tasks:
                results = self.runner.run(tasks)
                self._handin(results)
                return True
        return False

    # -- bidding ----------------------------------------------------------------------------
    def _win(self, advert: dict) -> list[Task]:
        rule_id = advert.get("ruleID")
        template = advert.get("taskTemplate", "")
        available = advert.get("availableTaskIDs") or []
        inputs_by_task = advert.get("inputsByTask") or {}
        if not rule_id or not available:
            return []
        try:
            sample = fill_template(template, rule_id, int(available[0]),
                                   inputs_by_task.get(str(available[0])))
        except TaskError as exc:
            logger.warning("skipping rule %s: %s", rule_id, exc)
            return []
        kind = sample.get("type")
        want = self.batch if kind == "localization" else 1
        ids = [int(i) for i in available[:want]]
        costs = [self._rate(sample, inputs_by_task.get(str(i))) for i in ids]
        awards = self._get("/bid_on_tasks", json=[{"ruleID": rule_id, "taskIDs": ids, "costs": costs}])
        if not awards:
            return []
        award = awards[0]
        won = award.get("taskIDs") or []
        awarded_template = award.get("template") or template
        tasks = []
        for task_id in won:
            try:
                description = fill_template(awarded_template, rule_id, int(task_id),
                                            inputs_by_task.get(str(task_id)))
            except TaskError as exc:
                description = {"type": "invalid", "error": str(exc)}
            tasks.append(Task(rule_id, int(task_id), description))
        return tasks

    def _rate(self, description: dict, task_inputs) -> float:
        """Cost of a task for this worker: cheap when its data are on this node."""
        inputs = description.get("inputs") or task_inputs or {}
        if description.get("type") == "localization":
            series = str(inputs.get("frames", ""))
            local = self.files.local_path(f"{series.rstrip('/')}/metadata.json")
            return LOCAL_COST if local is not None else REMOTE_COST
        cost = REMOTE_COST
        for value in inputs.values():
            if self.files.local_path(str(value).split("?")[0]) is not None:
                cost *= 0.2
        return cost

    def _handin(self, results) -> None:
        by_rule: dict[str, dict] = {}
        for r in results:
            entry = by_rule.setdefault(r.rule_id, {"ruleID": r.rule_id, "taskIDs": [], "status": []})
            entry["taskIDs"].append(r.task_id)
            entry["status"].append(r.status)
        for attempt in range(3):
            try:
                self._get("/handin", json=list(by_rule.values()), method="POST")
                return
            except requests.RequestException as exc:
                logger.warning("hand-in failed (%s), attempt %d", exc, attempt + 1)
                self.stopping.wait(0.5)
        logger.error("could not hand in %d results; the rule server will time them out", len(results))

    def _get(self, path: str, json=None, method: str = "GET"):
        reply = self.session.request(method, self.ruleserver + path, json=json, timeout=30)
        if reply.status_code != 200:
            logger.warning("%s %s → %s %s", method, path, reply.status_code, reply.text[:200])
            return None
        return reply.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Spoolside worker process")
    parser.add_argument("--ruleserver", required=True)
    parser.add_argument("--dataserver", required=True)
    parser.add_argument("--root", default=None, help="this node's data root (for local reads)")
    parser.add_argument("--serverfilter", default="")
    parser.add_argument("--batch", type=int, default=LOCALISATION_BATCH)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=f"%(asctime)s worker-{os.getpid()} %(levelname)s %(message)s")
    worker = Worker(args.ruleserver, args.dataserver, Path(args.root) if args.root else None,
                    args.serverfilter, args.batch)
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stopping.set())
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
