"""Render the live view offscreen, mid-acquisition and finished, to ``docs/live_view_*.png``.

Starts an embedded cluster (one worker) in a scratch folder, spools a simulated 256×256 series live
while a localisation rule analyses it, follows the results with a :class:`LiveView`, and grabs it
once while frames are still arriving and once when everything is analysed. Everything is stopped
afterwards.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/render_live_screenshots.py [--frames 1500]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt5.QtWidgets import QApplication  # noqa: E402 - after the environment is set

from cluster.local import start_local_cluster  # noqa: E402
from cluster.simulator import SampleModel, SimulatedAcquisition  # noqa: E402
from rules import Cluster, LocalisationRuleFactory  # noqa: E402
from tools.render_screenshot import _wait  # noqa: E402
from widgets.live_view import LiveView  # noqa: E402

ANALYSIS = {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
            "Analysis.BGRange": [-10, 0], "Analysis.StartAt": 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--fps", type=float, default=100.0)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    app = QApplication.instance() or QApplication(sys.argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp, \
            start_local_cluster(Path(tmp), workers=1, serverfilter="demo") as lc, \
            Cluster(lc.ruleserver_url, lc.dataserver_url, serverfilter="demo") as engine:
        acquisition = SimulatedAcquisition(engine.data, "demo/cells_01", frames=args.frames,
                                           fps=args.fps, size=256, seed=4, serverfilter="demo",
                                           sample=SampleModel(emitters_per_frame=15)).start()
        rule = LocalisationRuleFactory(analysisMetadata=ANALYSIS).get_rule(
            context={"seriesName": acquisition.series_uri})
        rule.push(cluster=engine)
        view = LiveView()
        view.resize(1280, 720)
        view.show()
        view.follow(engine.data, rule.results_uri, acquisition.series_uri, engine.rules,
                    rule._pushed_id())
        try:
            _wait(app, lambda: acquisition.get_n_frames() >= args.frames // 2, 600,
                  "half the frames")
            _wait(app, lambda: view.localisations > 0, 60, "localisations")
            view.grab().save(str(out / "live_view_acquiring.png"))
            _wait(app, lambda: not view.following, 1200, "the analysis to finish")
            view.grab().save(str(out / "live_view_finished.png"))
        finally:
            acquisition.stop()
            acquisition.wait(10)
            rule.cleanup()
            view.close()
    print(f"wrote {out / 'live_view_acquiring.png'} and {out / 'live_view_finished.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
