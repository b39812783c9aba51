"""Benchmark: the live view open during a live localisation analysis — does the GUI thread stay free?

Starts the embedded cluster (default worker count), spools a simulated 256×256 series live
(~30 emitters per frame) while a localisation rule analyses it, and follows the results file with a
:class:`widgets.live_view.LiveView` (one update a second, reading and rendering on a pool thread).
Measured on the GUI thread, per update: applying the finished frame (picture, curves, labels) plus
a synchronous repaint of the whole view. Also: the longest gap between ticks of a 5 ms timer on
the GUI thread (a stall of the event loop), the pool-thread time per update, and the process RSS.

With ``--synthetic N`` no localisation runs: N synthetic localisations are appended to a results
file through the data server at ~30,000 per 0.1 s, to follow ≥ 1,000,000 localisations quickly.

Target: GUI-thread time per update p95 ≤ 16 ms.

    QT_QPA_PLATFORM=offscreen python benchmarks/live_view.py [--frames 10000] [--fps 200]
    QT_QPA_PLATFORM=offscreen python benchmarks/live_view.py --synthetic 1000000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gui import rss_mib  # noqa: E402
from benchmarks.support import pct, verdict  # noqa: E402
from cluster.local import default_worker_count, start_local_cluster  # noqa: E402
from cluster.localisation.results import FIT_RESULTS_DTYPE  # noqa: E402
from cluster.simulator import SampleModel, SimulatedAcquisition  # noqa: E402
from rules import Cluster, LocalisationRuleFactory  # noqa: E402
from widgets.live_view import LiveView  # noqa: E402

TARGET_MS = 16.0
ANALYSIS = {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
            "Analysis.BGRange": [-10, 0], "Analysis.StartAt": 0}


class StallMeter:
    """The gaps between ticks of a fast timer on the GUI thread."""

    def __init__(self, interval_ms: int = 5):
        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)
        self.timer.start(interval_ms)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now


def synthetic_writer(engine: Cluster, path: str, total: int, stop: threading.Event) -> None:
    rng = np.random.default_rng(0)
    url = engine.data.aggregate_url(path, "h5r") + "/FitResults"
    written, frame = 0, 0
    while written < total and not stop.is_set():
        n = min(30_000, total - written)
        rows = np.zeros(n, FIT_RESULTS_DTYPE)
        rows["tIndex"] = frame + np.arange(n) // 30
        centres = rng.uniform(0, 25600, (n, 2))
        rows["fitResults"]["x0"], rows["fitResults"]["y0"] = centres.T
        rows["fitResults"]["A"] = rng.gamma(4, 60, n)
        rows["fitResults"]["sigma"] = rng.normal(130, 10, n)
        rows["fitError"]["x0"] = rows["fitError"]["y0"] = rng.gamma(4, 3, n)
        engine.data.append_records(url, rows)
        written += n
        frame += n // 30
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--fps", type=float, default=200.0)
    parser.add_argument("--synthetic", type=int, default=0, metavar="N")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication(sys.argv)
    apply_and_paint: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, \
            start_local_cluster(Path(tmp), workers=0 if args.synthetic else default_worker_count(),
                                serverfilter="bench") as lc, \
            Cluster(lc.ruleserver_url, lc.dataserver_url, serverfilter="bench") as engine:
        view = LiveView()
        view.resize(1200, 700)
        view.show()

        def measure() -> None:
            started = time.perf_counter()
            view.repaint()
            apply_and_paint.append(view.gui_seconds[-1] + time.perf_counter() - started)
        view.updated.connect(measure)
        stop = threading.Event()
        acquisition = rule = None
        if args.synthetic:
            results = "bench/analysis/synthetic.h5r"
            writer = threading.Thread(target=synthetic_writer,
                                      args=(engine, results, args.synthetic, stop), daemon=True)
            writer.start()
            view.follow(engine.data, results)
            what = f"{args.synthetic:,} synthetic localisations"
        else:
            acquisition = SimulatedAcquisition(engine.data, "bench/live", frames=args.frames,
                                               fps=args.fps, size=256, seed=1, serverfilter="bench",
                                               sample=SampleModel(emitters_per_frame=30)).start()
            rule = LocalisationRuleFactory(analysisMetadata=ANALYSIS).get_rule(
                context={"seriesName": acquisition.series_uri})
            rule.push(cluster=engine)
            view.follow(engine.data, rule.results_uri, acquisition.series_uri, engine.rules,
                        rule._pushed_id())
            what = f"a {args.frames:,}-frame live analysis at {args.fps:g} frames/s"
        stalls = StallMeter()
        deadline = time.monotonic() + args.timeout
        started = time.monotonic()
        while time.monotonic() < deadline:
            app.processEvents()
            if args.synthetic and view.localisations >= args.synthetic:
                break
            if not view.following:
                break
            time.sleep(0.002)
        elapsed = time.monotonic() - started
        stop.set()
        stalls.timer.stop()
        if acquisition is not None:
            acquisition.stop()
            acquisition.wait(10)
        if rule is not None:
            rule.cleanup()
        view.stop()
        summary = view.summary_label.text()
        pool_ms = [1000 * s for s in view.step_seconds]
        view.close()
    ms = [1000 * s for s in apply_and_paint]
    gaps = [1000 * g for g in stalls.gaps]
    print(f"{what}: {len(ms)} updates in {elapsed:.0f} s; {summary}")
    print(f"GUI-thread time per update (apply + repaint): median {pct(ms, 50):.1f} ms, "
          f"p95 {pct(ms, 95):.1f} ms, max {max(ms):.1f} ms")
    print(f"pool-thread read + render per update: median {pct(pool_ms, 50):.0f} ms, "
          f"p95 {pct(pool_ms, 95):.0f} ms")
    print(f"event-loop gaps (5 ms timer): p99 {pct(gaps, 99):.1f} ms, max {max(gaps):.1f} ms")
    print(f"RSS {rss_mib():.0f} MiB; load {os.getloadavg()[0]:.2f}")
    return verdict([(f"GUI-thread time per update p95 <= {TARGET_MS:g} ms", pct(ms, 95) <= TARGET_MS),
                    ("the view followed to the end", elapsed < args.timeout)])


if __name__ == "__main__":
    sys.exit(main())
