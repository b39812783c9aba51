"""Hands-free analysis: how soon after a series' ``metadata.json`` appears is its chain launched?

Starts the embedded cluster (one worker), watches ``bench/*.pcs`` with an :class:`AutoLauncher`
(the engine of ``spoolside watch``), and spools series from *another process*
(``spoolside simulate``), one after another. For each, the delay is the time from the
``metadata.json`` file's modification time on disk (written by the data server) to the launch
callback, i.e. after the rule was pushed. Target: every launch ≤ 1 s.

Run: ``.venv/bin/python benchmarks/autolaunch.py [--series 5]``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.local import start_local_cluster
from rules import Cluster, LocalisationRuleFactory
from rules.autolaunch import AutoLauncher, Launch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import pct, verdict  # noqa: E402

TARGET_S = 1.0
ANALYSIS = {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
            "Analysis.BGRange": [-5, 0], "Analysis.StartAt": 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=5)
    args = parser.parse_args()
    delays: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, \
            start_local_cluster(Path(tmp), workers=1, serverfilter="bench") as lc, \
            Cluster(lc.ruleserver_url, lc.dataserver_url, serverfilter="bench") as cluster:
        launched: list[tuple[float, Launch]] = []
        launcher = AutoLauncher(cluster, [LocalisationRuleFactory(analysisMetadata=ANALYSIS)],
                                "bench/*.pcs",
                                on_launch=lambda launch: launched.append((time.time(), launch)))
        launcher.poll()
        launcher.start()
        try:
            for i in range(args.series):
                name = f"bench/s{i:02d}"
                subprocess.run([sys.executable, "-m", "app.cli", "simulate", name, "--frames", "30",
                                "--fps", "100", "--dataserver", lc.dataserver_url,
                                "--server", lc.ruleserver_url], check=True, capture_output=True)
                deadline = time.monotonic() + 10
                while len(launched) <= i and time.monotonic() < deadline:
                    time.sleep(0.05)
                if len(launched) <= i:
                    print(f"{name}: not launched within 10 s")
                    delays.append(float("inf"))
                    continue
                at, launch = launched[i]
                written = os.stat(Path(tmp) / f"{name}.pcs" / "metadata.json").st_mtime
                delays.append(at - written)
                print(f"{name}: launched {launch.rule_id} {at - written:.3f} s after metadata.json"
                      + (f" (error: {launch.error})" if launch.error else ""))
        finally:
            launcher.stop()
    print(f"auto-launch delay: median {pct(delays, 50):.3f} s, max {max(delays):.3f} s "
          f"over {len(delays)} series; load {os.getloadavg()[0]:.2f}")
    return verdict([(f"every series launched <= {TARGET_S:g} s after its metadata.json",
                     max(delays) <= TARGET_S)])


if __name__ == "__main__":
    sys.exit(main())
