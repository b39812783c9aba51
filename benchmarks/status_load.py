"""Fairness under load: do 50 status pollers slow a 1,000-frame analysis down?

Starts the embedded cluster (2 worker processes), spools a 1,000-frame simulated series once, then
localises it ``--rounds`` times alone and as often while 50 clients (threads of a separate
process, each on its own kept-alive connection) poll ``/distributor/queues`` in a tight loop,
alternating (quiet, polled, quiet, ...) so that the shared machine's load falls on both alike.
Reports the analysis times, the pollers' request rate, latency and CPU, and exits non-zero when
the median polled run is more than ``MAX_SLOWDOWN`` slower than the median quiet one.

Run: ``.venv/bin/python benchmarks/status_load.py [--frames 1000] [--pollers 50]``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import pct, verdict  # noqa: E402
from cluster.local import start_local_cluster  # noqa: E402
from cluster.simulator import SimulatedAcquisition  # noqa: E402
from rules import Cluster, LocalisationRuleFactory  # noqa: E402

#: The polled analysis may take at most this much longer than a quiet one.
MAX_SLOWDOWN = 0.20

ANALYSIS = {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
            "Analysis.BGRange": [-10, 0], "Analysis.StartAt": 10}


def poll(url: str, clients: int) -> None:
    """Child process: ``clients`` threads polling status until stdin closes; prints figures."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def client(k: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                t0 = time.perf_counter()
                session.get(url + "/distributor/queues", timeout=30).raise_for_status()
                latencies[k].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    sys.stdin.read()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    seconds = time.perf_counter() - started
    every = [x for per in latencies for x in per]
    print(json.dumps({"requests": len(every), "per_second": len(every) / seconds,
                      "cpu": time.process_time() / seconds,
                      "p50_ms": 1e3 * pct(every, 50), "p95_ms": 1e3 * pct(every, 95)}))


def analyse(cluster: Cluster, series_uri: str) -> float:
    rule = LocalisationRuleFactory(analysisMetadata=ANALYSIS).get_rule({"seriesName": series_uri})
    t0 = time.perf_counter()
    rule.push(cluster)
    rule.join(timeout=3600)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="quiet and polled runs, each")
    parser.add_argument("--poll", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poll:
        poll(args.poll, args.pollers)
        return 0
    with tempfile.TemporaryDirectory() as root, \
            start_local_cluster(root, workers=args.workers, serverfilter="bench") as lc, \
            Cluster(lc.ruleserver_url, lc.dataserver_url, serverfilter="bench") as cluster:
        acquisition = SimulatedAcquisition(cluster.data, "bench/s", frames=args.frames,
                                           fps=1e6, seed=1, serverfilter="bench")
        acquisition.run()
        analyse(cluster, acquisition.series_uri)  # warm-up: workers import and compile
        quiet, polled, figures = [], [], []
        for _ in range(args.rounds):
            quiet.append(analyse(cluster, acquisition.series_uri))
            pollers = subprocess.Popen([sys.executable, __file__, "--poll", lc.ruleserver_url,
                                        "--pollers", str(args.pollers)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)
            polled.append(analyse(cluster, acquisition.series_uri))
            out, _ = pollers.communicate("", timeout=120)
            figures.append(json.loads(out))
        quiet.append(analyse(cluster, acquisition.series_uri))
    slowdown = statistics.median(polled) / statistics.median(quiet) - 1
    print(f"{args.frames} frames, {args.workers} workers: quiet "
          f"{' / '.join(f'{t:.2f}' for t in quiet)} s, with {args.pollers} status pollers "
          f"{' / '.join(f'{t:.2f}' for t in polled)} s (medians: {100 * slowdown:+.0f} %)")
    for f in figures:
        print(f"pollers: {f['per_second']:,.0f} status replies/s, p50 {f['p50_ms']:.0f} ms, "
              f"p95 {f['p95_ms']:.0f} ms; their process used {100 * f['cpu']:.0f} % of a core")
    return verdict([(f"slowdown under {args.pollers} pollers <= {100 * MAX_SLOWDOWN:.0f} %",
                     slowdown <= MAX_SLOWDOWN)])


if __name__ == "__main__":
    sys.exit(main())
