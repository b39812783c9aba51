"""Rule-server benchmark: push latency, task throughput, live release, follow-on delay, HTTP floor.

Run ``python benchmarks/ruleserver.py``. The rule server (and a bare HTTP server on the same
stack, as the floor) run in a child process; the simulated workers run as threads in this one,
each on its own kept-alive ``http.client`` connection, as PYME's node servers are.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import pct, serve_until_stdin_closes, servers_in_child, verdict  # noqa: E402

TEMPLATE = json.dumps({
    "id": "{{ruleID}}~{{taskID}}", "type": "localization",
    "taskdef": {"frameIndex": "{{taskID}}",
                "metadata": "PYME-CLUSTER://bench/u/2026_11_24/analysis/s1.h5r.json"},
    "inputs": {"frames": "PYME-CLUSTER://bench/u/2026_11_24/s1.pcs"},
    "outputs": {"fitResults": "http://127.0.0.1:15348/__aggregate_h5r/u/s1.h5r/FitResults"}})


# -- server process --------------------------------------------------------------------------
def serve() -> None:
    from cluster.http_base import RequestHandler, ServerThread
    from cluster.ruleserver import RuleServer

    class Bare(RequestHandler):
        def do_GET(self):  # noqa: N802
            self.read_body()
            self.send_payload(200, b'{"ok": "True"}')
        do_POST = do_GET

    serve_until_stdin_closes(RuleServer().start(), ServerThread(Bare, name="bare").start())


# -- client helpers --------------------------------------------------------------------------
class Conn:
    """One kept-alive connection with JSON helpers."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.c = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        self.c.request(method, path, body=data)
        resp = self.c.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {raw[:200]!r}")
        return json.loads(raw)

    def close(self):
        self.c.close()


def worker_loop(url, stop, awarded_at=None, idle=0.005, batch=100):
    """adverts → bid (≤ batch, cheap) → handin, until ``stop`` is set; returns tasks done."""
    conn = Conn(url)
    done = 0
    try:
        while not stop.is_set():
            adverts = conn.call("GET", "/task_advertisements")
            got = False
            for ad in adverts:
                ids = ad["availableTaskIDs"]
                if not ids:
                    continue
                start = random.randrange(len(ids))
                pick = (ids[start:] + ids[:start])[:batch]
                award = conn.call("POST", "/bid_on_tasks",
                                  [{"ruleID": ad["ruleID"], "taskIDs": pick,
                                    "costs": [0.01] * len(pick)}])[0]
                if award["taskIDs"]:
                    got = True
                    if awarded_at is not None:
                        now = time.perf_counter()
                        for t in award["taskIDs"]:
                            awarded_at.setdefault((ad["ruleID"], t), now)
                    conn.call("POST", "/handin", [{"ruleID": ad["ruleID"],
                                                   "taskIDs": award["taskIDs"],
                                                   "status": [3] * len(award["taskIDs"])}])
                    done += len(award["taskIDs"])
                break
            if not got:
                time.sleep(idle)
    finally:
        conn.close()
    return done


def start_workers(url, n):
    """``n`` :func:`worker_loop` threads recording award times: ``(stop, awarded_at, threads)``."""
    stop = threading.Event()
    awarded: dict = {}
    threads = [threading.Thread(target=worker_loop, args=(url, stop, awarded)) for _ in range(n)]
    for th in threads:
        th.start()
    return stop, awarded, threads


def queue(conn, rule_id):
    return conn.call("GET", "/distributor/queues")["result"].get(rule_id)


# -- measurements ----------------------------------------------------------------------------
def bench_floor(bare_url, n=3000):
    conn = Conn(bare_url)
    t = time.perf_counter()
    for _ in range(n):
        conn.call("GET", "/x")
    single = n / (time.perf_counter() - t)
    conn.close()
    counts = [0] * 4

    def hammer(k):
        c = Conn(bare_url)
        for _ in range(n // 4):
            c.call("GET", "/x")
            counts[k] += 1
        c.close()
    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return single, sum(counts) / (time.perf_counter() - t)


def bench_push(url, n=200):
    conn = Conn(url)
    lat, ids = [], []
    body = {"template": TEMPLATE}
    for _ in range(n):
        t = time.perf_counter()
        ids.append(conn.call("POST", "/add_integer_id_rule?max_tasks=1000000&timeout=3600",
                             body)["ruleID"])
        lat.append(time.perf_counter() - t)
    for rule_id in ids:  # out of the way of the other measurements
        conn.call("POST", f"/inactivate_rule?ruleID={rule_id}")
    conn.close()
    return pct(lat, 50) * 1e3, pct(lat, 95) * 1e3


def bench_throughput(url, n_tasks=20000, workers=4):
    conn = Conn(url)
    rule_id = conn.call("POST", f"/add_integer_id_rule?max_tasks={n_tasks}&release_start=0"
                                f"&release_end={n_tasks}", {"template": TEMPLATE})["ruleID"]
    stop = threading.Event()
    results = [0] * workers

    def run(k):
        results[k] = worker_loop(url, stop)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(workers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    while (queue(conn, rule_id) or {}).get("tasksCompleted", 0) < n_tasks:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t
    stop.set()
    for th in threads:
        th.join()
    info = queue(conn, rule_id)
    conn.close()
    assert info["tasksCompleted"] == n_tasks and info["tasksRunning"] == 0, info
    return n_tasks / elapsed, elapsed


def bench_live(url, rate=1000, seconds=10, step=100, workers=4):
    conn = Conn(url)
    rule_id = conn.call("POST", "/add_integer_id_rule?max_tasks=1000000",
                        {"template": TEMPLATE})["ruleID"]
    stop, awarded, threads = start_workers(url, workers)
    released_at = {}
    t0 = time.perf_counter()
    n_rel = rate * seconds // step
    for k in range(n_rel):
        target = t0 + k * step / rate
        while time.perf_counter() < target:
            time.sleep(min(0.002, max(0.0, target - time.perf_counter())))
        now = time.perf_counter()
        conn.call("GET", f"/release_rule_tasks?ruleID={rule_id}&release_start={k * step}"
                         f"&release_end={(k + 1) * step}")
        released_at[k] = now
    total = n_rel * step
    deadline = time.perf_counter() + 10
    while len(awarded) < total and time.perf_counter() < deadline:
        time.sleep(0.01)
    conn.call("GET", f"/mark_release_complete?ruleID={rule_id}")
    stop.set()
    for th in threads:
        th.join()
    conn.close()
    delays = [awarded[(rule_id, t)] - released_at[t // step] for t in range(total)
              if (rule_id, t) in awarded]
    return pct(delays, 50) * 1e3, pct(delays, 95) * 1e3, len(delays), total


def bench_followon(url, n_tasks=50, workers=4):
    conn = Conn(url)
    spec = {"template": TEMPLATE,
            "on_completion": {"template": TEMPLATE, "max_tasks": n_tasks,
                              "on_completion": {"template": TEMPLATE, "max_tasks": n_tasks}}}
    first = conn.call("POST", f"/add_integer_id_rule?max_tasks={n_tasks}&release_start=0"
                              f"&release_end={n_tasks}", spec)["ruleID"]
    stop, awarded, threads = start_workers(url, workers)
    chain, finished_at, delays = [first], {}, []
    deadline = time.time() + 30
    while len(chain) < 3 or chain[-1] not in finished_at:
        if time.time() > deadline:
            raise RuntimeError("follow-on chain did not complete")
        info = queue(conn, chain[-1])
        if info and info["finished"] and chain[-1] not in finished_at:
            finished_at[chain[-1]] = time.perf_counter()
            if len(chain) < 3:
                chain.append(conn.call("GET", f"/spoolside/followons?ruleID={chain[-1]}")
                             ["ruleIDs"][0])
        time.sleep(0.001)
    stop.set()
    for th in threads:
        th.join()
    conn.close()
    # parent seen finished → first task of the child handed to a worker
    for parent, child in zip(chain, chain[1:]):
        first_award = min(v for (r, _), v in awarded.items() if r == child)
        last_parent = max(v for (r, _), v in awarded.items() if r == parent)
        delays.append(first_award - last_parent)
    return max(delays) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    with servers_in_child([__file__, "--serve"], timeout=10) as (url, bare_url):
        floor1, floor4 = bench_floor(bare_url)
        push50, push95 = bench_push(url)
        runs = sorted(bench_throughput(url) for _ in range(5))  # short runs: take the median
        tput, t_elapsed = runs[2]
        tput_lo, tput_hi = runs[0][0], runs[-1][0]
        live50, live95, n_live, n_total = bench_live(url)
        follow = bench_followon(url)
    rows = [
        ("bare HTTP floor, 1 connection", f"{floor1:,.0f} req/s", ""),
        ("bare HTTP floor, 4 connections", f"{floor4:,.0f} req/s", ""),
        ("push latency p50 / p95 (200 rules)", f"{push50:.2f} / {push95:.2f} ms", "p50 <= 2 ms"),
        ("throughput, 4 workers, 20,000 tasks (median of 5)",
         f"{tput:,.0f} tasks/s ({t_elapsed:.2f} s)", ">= 40,000 tasks/s"),
        ("  ... slowest / fastest of the 5 runs", f"{tput_lo:,.0f} / {tput_hi:,.0f} tasks/s", ""),
        ("live 1,000 frames/s: release->hand-out p50 / p95",
         f"{live50:.1f} / {live95:.1f} ms ({n_live}/{n_total} tasks)", "p95 <= 100 ms"),
        ("follow-on delay (3-rule chain, worst)", f"{follow:.1f} ms", "<= 500 ms"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':<32}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<32}  {target}")
    return verdict([("push latency p50 <= 2 ms", push50 <= 2.0),
                    ("throughput >= 40,000 tasks/s", tput >= 40_000),
                    ("live release p95 <= 100 ms, every task handed out",
                     live95 <= 100.0 and n_live == n_total),
                    ("follow-on delay <= 500 ms", follow <= 500.0)])


if __name__ == "__main__":
    sys.exit(main())
