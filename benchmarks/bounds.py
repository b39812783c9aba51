"""Bounded memory and time under hostile requests (servers in this process, on loopback).

1. Memory: peak RSS growth of this process while 1 GB gzip bombs (~1 MB on the wire) are PUT to
   the data server (a file, ``__aggregate_h5r``, ``__aggregate_txt``) and POSTed to the rule
   server as a rule: all must be refused (413) and grow memory by at most ``MAX_GROWTH_MB``.
2. Time: while one client makes the rule server do something big (release 2,000,000 tasks,
   post a 30 MB rule, bid on 1,000,000 tasks, hand in 1,000,000), another polls
   ``/task_advertisements``; its worst reply must come within ``MAX_OTHERS_MS``.

Run: ``.venv/bin/python benchmarks/bounds.py``; exits non-zero when a target is missed.
"""
from __future__ import annotations

import gzip
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import verdict  # noqa: E402
from cluster.dataserver import DataServer  # noqa: E402
from cluster.ruleserver import RuleServer  # noqa: E402
from cluster.ruleserver.model import MAX_MAX_TASKS  # noqa: E402

MAX_GROWTH_MB = 300
MAX_OTHERS_MS = 100


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bomb(total: int) -> bytes:
    member = gzip.compress(bytes(8 << 20), compresslevel=9)
    return member * (total // (8 << 20))


def memory_under_bombs(data_url: str, rule_url: str) -> tuple[float, list[int]]:
    body = bomb(1 << 30)
    headers = {"Content-Encoding": "gzip"}
    before = peak_mb()
    statuses = []
    for path in ("/bomb.bin", "/__aggregate_h5r/r.h5r/FitResults", "/__aggregate_txt/b.txt"):
        statuses.append(requests.put(data_url + path, data=body, headers=headers,
                                     timeout=120).status_code)
    statuses.append(requests.post(rule_url + "/add_integer_id_rule", data=body, headers=headers,
                                  timeout=120).status_code)
    return peak_mb() - before, statuses


def others_wait(rule_url: str, action) -> float:
    """Worst adverts latency (ms) of another client while ``action()`` runs."""
    stop = threading.Event()
    worst = [0.0]

    def poll() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                t0 = time.perf_counter()
                session.get(rule_url + "/task_advertisements", timeout=30)
                worst[0] = max(worst[0], time.perf_counter() - t0)
                time.sleep(0.002)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.2)
    try:
        action()
    finally:
        stop.set()
        thread.join()
    return 1e3 * worst[0]


def main() -> int:
    results = []
    with tempfile.TemporaryDirectory() as root, DataServer(root) as data, RuleServer() as rules:
        growth, statuses = memory_under_bombs(data.url, rules.url)
        print(f"1 GB gzip bombs (~{len(bomb(1 << 30)) >> 10} KB sent) to file PUT, "
              f"__aggregate_h5r, __aggregate_txt, rule POST: statuses {statuses}, "
              f"peak RSS growth {growth:.0f} MB")
        results.append((f"bombs refused with 413, memory growth <= {MAX_GROWTH_MB} MB",
                        statuses == [413] * 4 and growth <= MAX_GROWTH_MB))

        url = rules.url
        with requests.Session() as s:
            rid = s.post(url + f"/add_integer_id_rule?max_tasks={MAX_MAX_TASKS}",
                         json={"template": "{}"}).json()["ruleID"]
            # Bodies are built before the clock starts: only the server's work is measured.
            big_rule = json.dumps({"template": "{}", "inputsByTask": {
                str(i): f"PYME-CLUSTER:///some/long/folder/name/file_{i:08d}.tif" + "x" * 30
                for i in range(80000)}})
            bid = json.dumps([{"ruleID": rid, "taskIDs": list(range(100_000)),
                               "taskCosts": [0.5] * 100_000}])
            handin = json.dumps([{"ruleID": rid, "taskIDs": list(range(200_000)), "status": 3}])
            huge_bid = json.dumps([{"ruleID": rid, "taskIDs": list(range(1_000_000))}])
            release = (url + f"/release_rule_tasks?ruleID={rid}&release_start=0"
                       f"&release_end={MAX_MAX_TASKS}")

            def refused(reply: requests.Response) -> None:
                if reply.status_code != 413:
                    raise SystemExit(f"not refused: {reply.status_code}")

            cases = {
                f"release of {MAX_MAX_TASKS:,} tasks":
                    lambda: s.get(release).raise_for_status(),
                f"a {len(big_rule) >> 20} MB rule (80,000 inputs, near the limit)":
                    lambda: s.post(url + "/add_integer_id_rule?max_tasks=80000",
                                   data=big_rule).raise_for_status(),
                f"a bid on 100,000 tasks ({len(bid) >> 10} KB)":
                    lambda: s.get(url + "/bid_on_tasks", data=bid).raise_for_status(),
                f"a hand-in of 200,000 tasks ({len(handin) >> 10} KB)":
                    lambda: s.post(url + "/handin", data=handin).raise_for_status(),
                "a bid on 1,000,000 tasks (refused, 413)":
                    lambda: refused(s.get(url + "/bid_on_tasks", data=huge_bid)),
            }
            for name, action in cases.items():
                t0 = time.perf_counter()
                worst = others_wait(url, action)
                took = time.perf_counter() - t0 - 0.2
                print(f"{name}: took {took:.2f} s; another client's worst wait {worst:.0f} ms")
                results.append((f"{name}: others answered within {MAX_OTHERS_MS} ms",
                                worst <= MAX_OTHERS_MS))
    return verdict(results)


if __name__ == "__main__":
    sys.exit(main())
