"""A worker process of the embedded cluster: adverts → bid → run → hand in.

Spoolside's workers talk to the rule server directly, as a PYME node server does (§2.2), rather
than through a node-server layer: on a cluster of one the node layer would only add a hop. Each
worker rates the advertised tasks by data locality (0.01 for a frame or input held under its own
data root, so local work takes the rule server's no-auction fast path), bids for a batch (many
frames at once for localisation, so one vectorised fit covers them), runs it and hands the
statuses in with one request.

Reliability: the worker bids under its own name (``--worker-id``) and a heartbeat thread renews
its lease on the tasks it runs, so a frozen worker's tasks are re-queued within seconds and its
late hand-in is refused; results are filed with their task identities, so a re-run never
duplicates rows. An idle worker waits on the rule server (a long poll) instead of polling. With
``--exit-with-parent`` it exits when its parent process dies (its stdin pipe closes).

Run as ``python -m cluster.worker --ruleserver URL --dataserver URL --root DIR --serverfilter NAME``.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from cluster.tasks import ClusterFiles, Task, TaskError, TaskRunner, fill_template
from rules.dataserver_client import DataClient
from rules.errors import ClusterError, ClusterUnreachable, RequestRefused
from rules.ruleserver_client import RuleServerClient

logger = logging.getLogger(__name__)

LOCAL_COST = 0.01
REMOTE_COST = 1.0
LOCALISATION_BATCH = 64
IDLE_POLL_S = 0.05
#: An idle worker's long poll for adverts (the server answers as soon as tasks appear).
ADVERT_WAIT_S = 25.0
#: Hand-ins are retried this long through a rule-server outage.
HANDIN_PATIENCE_S = 45.0
#: Lease assumed until the rule server says otherwise (heartbeats go out every third of it).
DEFAULT_LEASE_S = 10.0


class Worker:
    """The bid-run-hand-in loop of one worker process."""

    def __init__(self, ruleserver_url: str, dataserver_url: str | list[str], root: Path | None,
                 serverfilter: str, batch: int = LOCALISATION_BATCH, worker_id: str | None = None,
                 advert_wait: float = ADVERT_WAIT_S):
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.rules = RuleServerClient(ruleserver_url, timeout=30)
        urls = dataserver_url.split(",") if isinstance(dataserver_url, str) else dataserver_url
        self.files = ClusterFiles(DataClient([u.strip() for u in urls if u.strip()], serverfilter),
                                  root, serverfilter)
        self.runner = TaskRunner(self.files)
        self.batch = batch
        self.advert_wait = advert_wait
        self.lease = DEFAULT_LEASE_S
        self.stopping = threading.Event()
        self.running_tasks = threading.Event()  # set while the worker holds tasks

    def run(self) -> None:
        logger.info("worker %s taking tasks from %s", self.worker_id, self.rules.base_url)
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()
        threading.Thread(target=_preload_localisation, name="preload", daemon=True).start()
        while not self.stopping.is_set():
            try:
                self.run_once()
            except ClusterError as exc:
                logger.warning("rule server unusable (%s); retrying", exc)
                self.stopping.wait(1.0)

    def run_once(self) -> bool:
        """One round: returns True when tasks were won and run."""
        started = time.monotonic()
        adverts = self.rules.task_adverts(wait=self.advert_wait)
        for advert in adverts:
            tasks = self._win(advert)
            if tasks:
                self.running_tasks.set()
                try:
                    results = self.runner.run(tasks)
                    self._handin(results)
                finally:
                    self.running_tasks.clear()
                return True
        if adverts or time.monotonic() - started < self.advert_wait / 2:
            self.stopping.wait(IDLE_POLL_S)  # tasks others won, or a server without long polls
        return False

    def _heartbeats(self) -> None:
        """Renew the lease on the running tasks every third of the lease."""
        client = RuleServerClient(self.rules.base_url, timeout=5)
        beat = True  # the first one (holding nothing) learns the server's lease
        while True:
            if beat:
                try:
                    self.lease = max(0.3, client.heartbeat(self.worker_id))
                except ClusterError as exc:
                    logger.warning("heartbeat failed: %s", exc)
            if self.stopping.wait(self.lease / 3):
                return
            beat = self.running_tasks.is_set()

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
        try:
            award = self.rules.bid(rule_id, ids, costs, worker=self.worker_id)
        except RequestRefused as exc:  # e.g. the rule is gone: look at the next advert
            logger.info("bid for rule %s refused: %s", rule_id, exc)
            return []
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
        """Hand the statuses in, retrying with backoff through a rule-server outage."""
        by_rule: dict[str, dict] = {}
        for r in results:
            entry = by_rule.setdefault(r.rule_id, {"ruleID": r.rule_id, "taskIDs": [], "status": []})
            entry["taskIDs"].append(r.task_id)
            entry["status"].append(r.status)
        give_up, delay = time.monotonic() + HANDIN_PATIENCE_S, 0.25
        while True:
            try:
                self.rules.handin(list(by_rule.values()), worker=self.worker_id)
                return
            except RequestRefused as exc:  # e.g. its rule was removed meanwhile
                logger.warning("hand-in of %d results refused: %s", len(results), exc)
                return
            except ClusterUnreachable as exc:
                if time.monotonic() > give_up or self.stopping.is_set():
                    logger.error("could not hand in %d results (%s); the rule server will "
                                 "re-queue them", len(results), exc)
                    return
                logger.warning("hand-in failed (%s); retrying in %.1f s", exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)


def _exit_with_parent() -> None:
    """Exit this process when the parent's end of stdin closes (the parent died or stopped us)."""
    def watch() -> None:
        try:
            while sys.stdin.buffer.read(1024):
                pass
        except (OSError, ValueError):
            pass
        logger.warning("parent process gone; worker %d exits", os.getpid())
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _preload_localisation() -> None:
    """Load the localiser's compiled loops while the worker waits for its first task (so the
    first frames are not slowed by it)."""
    from cluster.localisation import preload

    try:
        logger.debug("localisation code loaded in %.2f s of CPU", preload())
    except Exception:  # noqa: BLE001 - a failure here shows again, with its task, when it matters
        logger.exception("loading the localisation code failed")


def _lower_priority(niceness: int) -> None:
    """Run below normal priority (``os.nice``; Windows workers are created so instead)."""
    nice = getattr(os, "nice", None)
    if nice is None:
        logger.info("--nice has no effect on this system")
        return
    try:
        nice(niceness)
    except OSError as exc:
        logger.warning("cannot lower the worker's priority: %s", exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Spoolside worker process")
    parser.add_argument("--ruleserver", required=True)
    parser.add_argument("--dataserver", required=True,
                        help="the cluster's data server URL(s), comma-separated")
    parser.add_argument("--root", default=None, help="this node's data root (for local reads)")
    parser.add_argument("--serverfilter", default="")
    parser.add_argument("--batch", type=int, default=LOCALISATION_BATCH)
    parser.add_argument("--worker-id", default=None, help="name this worker bids under")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="exit when stdin (a pipe from the parent process) closes")
    parser.add_argument("--nice", type=int, default=0, metavar="N",
                        help="lower this process's priority by N (POSIX; analysis yields to "
                             "acquisition on the same PC)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=f"%(asctime)s worker-{os.getpid()} %(levelname)s %(message)s")
    if args.exit_with_parent:
        _exit_with_parent()
    if args.nice > 0:
        _lower_priority(args.nice)
    worker = Worker(args.ruleserver, args.dataserver, Path(args.root) if args.root else None,
                    args.serverfilter, args.batch, args.worker_id)

    def stop(*_) -> None:
        worker.stopping.set()
        if not worker.running_tasks.is_set():
            raise SystemExit(0)  # ends a long poll at once; a running batch is handed in first

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    except SystemExit:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
