"""Benchmark: the rule table fed as the watcher feeds it: 1,000 rules, 5 % changing per update.

For each update the GUI thread runs ``RuleTableModel.set_statuses`` and then the event loop until
the view has repainted; that is the time measured (the status lists themselves are built by the
watcher's thread in the app, so they are prepared outside the timed section here). Updates are
run back to back rather than twice a second: the per-update cost is the same, and 10,000 of them
then take seconds instead of 83 minutes. Memory is the process RSS, sampled every 1,000 updates.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui.py [--rules 1000] [--updates 10000]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
from PyQt5.QtCore import QEvent, QObject
from PyQt5.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import verdict  # noqa: E402
from rules.watchers import RuleStatus
from widgets.progress_graph import ProgressGraph
from widgets.rule_table import RuleLabel, RuleTableModel, RuleTableView


def rss_mib() -> float:
    """Resident set size of this process in MiB (``VmRSS`` from ``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


class PaintCounter(QObject):
    """Counts paint events on the table's viewport and the height of the region they cover."""

    def __init__(self):
        super().__init__()
        self.events = 0
        self.rows_painted = 0.0
        self.row_height = 1

    def eventFilter(self, obj, event):  # noqa: N802 - Qt override
        if event.type() == QEvent.Paint:
            self.events += 1
            self.rows_painted += sum(r.height() for r in event.region().rects()) / self.row_height
        return False


def initial_statuses(n: int) -> list[RuleStatus]:
    return [RuleStatus(f"{i:06d}-{i * 7919:032x}", posted=1000, running=8, completed=0, failed=0,
                       timed_out=0, complete_after_timeout=0, average_cost=0.01, active=True,
                       finished=False, expired=False) for i in range(n)]


def next_statuses(statuses: list[RuleStatus], fraction: float, rng: random.Random) -> list[RuleStatus]:
    """A new poll: ``fraction`` of the rules progressed, the rest are the same values (new objects
    for those only, as a fresh poll's rows are equal but not identical)."""
    out = list(statuses)
    for i in rng.sample(range(len(out)), max(1, int(fraction * len(out)))):
        s = out[i]
        completed = s.completed + rng.randint(1, 8)
        out[i] = dataclasses.replace(s, completed=completed, finished=completed >= s.posted,
                                     running=0 if completed >= s.posted else s.running)
    return out


def run(n_rules: int, n_updates: int, fraction: float, with_graph: bool, seed: int = 1) -> dict:
    app = QApplication.instance() or QApplication(sys.argv)
    rng = random.Random(seed)
    model = RuleTableModel()
    view = RuleTableView(model, confirm_abort=False)
    view.resize(1280, 800)
    view.show()
    model.set_rule_labels({s.rule_id: RuleLabel(f"launch {i // 3}", "localisation", f"s/{i}.pcs")
                           for i, s in enumerate(initial_statuses(n_rules)) if i % 3 == 0})
    graph = None
    if with_graph:
        graph = ProgressGraph()
        graph.resize(700, 450)
        graph.show()
    counter = PaintCounter()
    counter.row_height = view.table.verticalHeader().defaultSectionSize()
    view.table.viewport().installEventFilter(counter)
    statuses = initial_statuses(n_rules)
    model.set_statuses(statuses)
    if graph is not None:
        graph.add_statuses(statuses)
        graph.set_rules([statuses[0].rule_id, statuses[1].rule_id])
    view.select_rules([statuses[0].rule_id, statuses[1].rule_id])
    app.processEvents()
    visible_rows = view.table.viewport().height() / counter.row_height
    counter.events, counter.rows_painted = 0, 0.0

    times = np.empty(n_updates)
    rss = []
    for k in range(n_updates):
        statuses = next_statuses(statuses, fraction, rng)
        t0 = time.perf_counter()
        model.set_statuses(statuses)
        if graph is not None:
            graph.add_statuses(statuses)
        app.processEvents()
        times[k] = time.perf_counter() - t0
        if k % 1000 == 999:
            rss.append(rss_mib())
    result = {
        "rules": n_rules, "updates": n_updates, "changed_per_update": max(1, int(fraction * n_rules)),
        "graph": with_graph,
        "p50_ms": float(np.percentile(times, 50) * 1e3), "p95_ms": float(np.percentile(times, 95) * 1e3),
        "max_ms": float(times.max() * 1e3),
        "paints_per_update": counter.events / n_updates,
        "rows_repainted_per_update": counter.rows_painted / n_updates,
        "visible_rows": visible_rows,
        "rss_mib": rss,
        "history_mib": (sum(h.t.nbytes + h.completed.nbytes + h.failed.nbytes + h.rate.nbytes
                            for h in graph._history.values()) / 2**20 if graph is not None else 0.0),
        "history_bound_mib": n_rules * graph.max_points * 20 / 2**20 if graph is not None else 0.0,
    }
    view.close()
    if graph is not None:
        graph.close()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=10000)
    parser.add_argument("--change", type=float, default=0.05, help="fraction of rules changing per update")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    checks = []
    for with_graph in (False, True):
        r = run(args.rules, args.updates, args.change, with_graph)
        label = "rule table + progress graph" if with_graph else "rule table"
        print(f"{label}: {r['rules']} rules, {r['changed_per_update']} changed per update, "
              f"{r['updates']} updates")
        print(f"  GUI-thread time per update: p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, "
              f"max {r['max_ms']:.2f} ms")
        checks.append((f"{label}: GUI-thread time per update p95 <= 5 ms", r["p95_ms"] <= 5.0))
        print(f"  repaint: {r['paints_per_update']:.2f} paint events and "
              f"{r['rows_repainted_per_update']:.1f} rows per update "
              f"(of {r['visible_rows']:.0f} visible rows)")
        rss = r["rss_mib"]
        print(f"  RSS MiB every 1,000 updates: {', '.join(f'{v:.1f}' for v in rss)} "
              f"(growth after the first 1,000: {rss[-1] - rss[0]:+.1f} MiB)")
        if with_graph:
            print(f"  graph history buffers: {r['history_mib']:.1f} MiB (bounded by "
                  f"{r['history_bound_mib']:.0f} MiB: rules x max_points x 20 B)")
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
