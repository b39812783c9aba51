"""End to end on the cluster of one: can it keep up with a camera?

Starts the embedded cluster (default worker count: cores − 1), then
1. spools a complete simulated series (256×256, ~30 emitters per frame) and times the localisation
   rule over it: frames/s through rule server, workers, fit and ``.h5r`` aggregation;
2. spools a live series at a fixed frame rate while a ``SpoolLocalLocalizationRule`` follows it,
   and reports how far analysis lags behind acquisition when spooling ends.

Exits non-zero when a target is missed: the complete series gives localisations, and live
analysis finishes within ``LIVE_LAG_TARGET_S`` of the last frame.

Run: ``.venv/bin/python benchmarks/embedded_cluster.py [--frames 2000] [--fps 200]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from cluster.local import default_worker_count, start_local_cluster
from cluster.simulator import SimulatedAcquisition
from rules import Cluster, LocalisationRuleFactory, SpoolLocalLocalizationRuleFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import cpu_seconds, verdict  # noqa: E402

#: Live analysis must finish this soon after the last frame (it keeps up with the camera).
LIVE_LAG_TARGET_S = 5.0

ANALYSIS = {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
            "Analysis.BGRange": [-10, 0], "Analysis.StartAt": 10}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--fps", type=float, default=200.0, help="live acquisition frame rate")
    parser.add_argument("--complete-only", action="store_true",
                        help="only the complete series (skip the live one)")
    args = parser.parse_args()
    workers = default_worker_count()
    with tempfile.TemporaryDirectory() as root, \
            start_local_cluster(root, workers=workers, serverfilter="bench") as lc, \
            Cluster(lc.ruleserver_url, lc.dataserver_url, serverfilter="bench") as cluster:
        print(f"cluster of one: {workers} worker process(es), {args.frames} frames of 256×256; "
              f"load {os.getloadavg()[0]:.2f} (1 min)")

        acquisition = SimulatedAcquisition(cluster.data, "bench/complete", frames=args.frames,
                                           fps=1e6, seed=1, serverfilter="bench")
        t0 = time.perf_counter()
        acquisition.run()
        spool_s = time.perf_counter() - t0
        rule = LocalisationRuleFactory(analysisMetadata=ANALYSIS).get_rule(
            {"seriesName": acquisition.series_uri})
        pids = lc.pool.pids if lc.pool else []
        cpu0 = cpu_seconds(pids)
        t0 = time.perf_counter()
        rule.push(cluster)
        rule.join(timeout=3600)
        analyse_s = time.perf_counter() - t0
        cpu1 = cpu_seconds(pids)
        n = cluster.data.read_table("bench/analysis/complete.h5r", "FitResults").shape[0]
        print(f"spooling as fast as possible: {args.frames / spool_s:,.0f} frames/s")
        print(f"complete series: {args.frames / analyse_s:,.0f} frames/s localised end to end "
              f"({analyse_s:.1f} s, {n:,} localisations)")
        if cpu0 is not None and cpu1 is not None and cpu1 > cpu0:
            print(f"  the worker process(es) used {cpu1 - cpu0:.1f} s of CPU: "
                  f"{args.frames / (cpu1 - cpu0):,.0f} frames per worker CPU second")

        if args.complete_only:
            return verdict([("complete series gives localisations", n > 0)])
        live = SimulatedAcquisition(cluster.data, "bench/live", frames=args.frames, fps=args.fps,
                                    seed=2, serverfilter="bench")
        live.start()
        rule = SpoolLocalLocalizationRuleFactory(analysisMetadata=ANALYSIS).get_rule(
            {"seriesName": live.series_uri, "spooler": live})
        rule.push(cluster)
        t0 = time.perf_counter()
        live.wait()
        spooled_s = time.perf_counter() - t0
        rule.join(timeout=3600)
        lag_s = time.perf_counter() - t0 - spooled_s
        print(f"live at {args.fps:g} frames/s: acquisition took {spooled_s:.1f} s "
              f"({live.get_n_frames() / spooled_s:,.0f} frames/s achieved); "
              f"analysis finished {lag_s:.2f} s after the last frame")
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    return verdict([("complete series gives localisations", n > 0),
                    (f"live analysis done <= {LIVE_LAG_TARGET_S:g} s after the last frame",
                     lag_s <= LIVE_LAG_TARGET_S)])


if __name__ == "__main__":
    sys.exit(main())
