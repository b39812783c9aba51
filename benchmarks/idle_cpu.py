"""Benchmark: what the window and its embedded cluster cost when there is nothing to do.

Starts the embedded cluster with N worker processes and the main window on it (offscreen, as
``spoolside`` does), lets everything settle, then measures the CPU time of this process and of
every worker process over a quiet interval: the total must stay within ``IDLE_TARGET`` of one core
whatever the number of workers. Then it checks that idle workers still react at once: tasks
released one at a time are handed out (assigned to a worker) within ``HANDOUT_TARGET_S``.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/idle_cpu.py [--workers 1 4] [--seconds 30]

Linux only (reads ``/proc/<pid>/stat``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import cpu_seconds, pct, verdict  # noqa: E402

#: Idle CPU of the window + embedded cluster, as a fraction of one core.
IDLE_TARGET = 0.005
#: An idle worker takes a released task within this (p95).
HANDOUT_TARGET_S = 0.1


def measure(app, pids: list[int], seconds: float) -> list[float]:
    """Fraction of one core used by each of ``pids`` while the Qt event loop runs ``seconds``."""
    from PyQt5.QtCore import QEventLoop, QTimer
    before = [cpu_seconds([p]) for p in pids]
    t0 = time.monotonic()
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()
    elapsed = time.monotonic() - t0
    return [(cpu_seconds([p]) - b) / elapsed for p, b in zip(pids, before)]


def handout_latencies(app, lc, n: int = 20) -> list[float]:
    """Release ``n`` tasks one at a time to idle workers; seconds until each is assigned."""
    from PyQt5.QtCore import QEventLoop, QTimer
    table = lc.rule_server.table
    # a localisation task of a series on the workers' own data root: bid for at the local price
    # (no auction), as live analysis on the acquisition PC is; the workers then fail it quickly
    series = lc.root / "idle" / "s.pcs"
    series.mkdir(parents=True, exist_ok=True)
    (series / "metadata.json").write_text("{}")
    template = json.dumps({"id": "{{ruleID}}~{{taskID}}", "type": "localization",
                           "inputs": {"frames": "idle/s.pcs"},
                           "taskdef": {"frameIndex": "{{taskID}}", "metadata": {}},
                           "outputs": {}})
    rule_id = table.add_rule({"template": template}, max_tasks=n)
    latencies = []
    for i in range(n):
        loop = QEventLoop()
        QTimer.singleShot(200, loop.quit)  # idle a while: workers back in their long poll
        loop.exec_()
        t0 = time.perf_counter()
        table.release(rule_id, i, i + 1)
        while True:
            info = table.queue_info()[rule_id]
            if info["tasksRunning"] + info["tasksCompleted"] + info["tasksFailed"] > i:
                break
            time.sleep(0.0005)
        latencies.append(time.perf_counter() - t0)
    table.inactivate(rule_id)
    return latencies


def run(workers: int, seconds: float, settle: float):
    from PyQt5.QtCore import QEventLoop, QSettings, QTimer
    from PyQt5.QtWidgets import QApplication

    from app.launcher import ClusterAddress
    from app.main_window import MainWindow
    from cluster.local import start_local_cluster

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as scratch:
        settings = QSettings(str(Path(scratch) / "settings.ini"), QSettings.IniFormat)
        with start_local_cluster(Path(scratch) / "data", workers=workers, register=True) as lc:
            window = MainWindow(settings, Path(scratch) / "config")
            window.set_cluster(ClusterAddress(lc.ruleserver_url, (lc.dataserver_url,),
                                              lc.serverfilter, embedded=True))
            window.show()
            loop = QEventLoop()
            QTimer.singleShot(int(settle * 1000), loop.quit)  # imports, first polls, workers up
            loop.exec_()
            pids = [os.getpid()] + lc.pool.pids
            per_process = measure(app, pids, seconds)
            latencies = handout_latencies(app, lc)
            window.shutdown()
            window.close()
    return per_process, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the idle interval")
    parser.add_argument("--settle", type=float, default=8.0, help="wait before measuring")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (shared machine)")
    checks = []
    for n in args.workers:
        per_process, latencies = run(n, args.seconds, args.settle)
        idle = sum(per_process)
        p50, p95 = pct(latencies, 50) * 1e3, pct(latencies, 95) * 1e3
        print(f"{n} worker(s): idle CPU {idle * 100:.2f} % of one core over {args.seconds:g} s "
              f"(window + servers {per_process[0] * 100:.2f} %, workers "
              f"{' '.join(f'{w * 100:.2f}' for w in per_process[1:])} %); "
              f"release → hand-out p50 / p95 {p50:.1f} / {p95:.1f} ms")
        checks.append((f"idle CPU with {n} worker(s) ≤ {IDLE_TARGET * 100:g} % of one core",
                       idle <= IDLE_TARGET))
        checks.append((f"release → hand-out p95 with {n} worker(s) ≤ "
                       f"{HANDOUT_TARGET_S * 1e3:g} ms", p95 / 1e3 <= HANDOUT_TARGET_S))
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
