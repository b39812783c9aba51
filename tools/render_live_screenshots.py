"""Render the window's Live view tab offscreen, mid-acquisition and finished, for the README.

Starts an embedded cluster (one worker) in a scratch folder, opens the window on it, spools a
simulated 256×256 series and launches the default chain on it live (as *Simulate acquisition…*
does), and grabs the window with the Live view tab: mid-acquisition at 1280×800 (and, with
``--sizes``, at other sizes), then when the chain has finished, with the Live view and with the
Results tab showing the rendered image. Everything is stopped afterwards.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/render_live_screenshots.py \
        [--frames 1500] [--sizes 1024x700,1920x1080]
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
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PyQt5")

from PyQt5.QtCore import QSettings  # noqa: E402 - after the environment is set
from PyQt5.QtWidgets import QApplication  # noqa: E402

from tools.render_screenshot import _save, _settle, _wait  # noqa: E402

SERIES = "microscope/cells_01"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--fps", type=float, default=100.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--sizes", default="",
                        help="also grab mid-acquisition at these sizes, e.g. 1024x700,1920x1080")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",") if size]
    app = QApplication.instance() or QApplication([])
    from app.launcher import ClusterAddress
    from app.main_window import MainWindow
    from cluster.local import start_local_cluster
    from rules.simulation import SimulationSettings

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        cluster = start_local_cluster(scratch / "data", workers=1)
        window = MainWindow(QSettings(str(scratch / "settings.ini"), QSettings.IniFormat),
                            scratch / "config")
        try:
            window.resize(1280, 800)
            window.show()
            window.set_cluster(ClusterAddress(cluster.ruleserver_url, (cluster.dataserver_url,),
                                              cluster.serverfilter, embedded=True,
                                              root=str(scratch / "data")))
            _wait(app, lambda: window._reachable is True, 20, "the cluster")
            window.simulate(SERIES, SimulationSettings(frames=args.frames, fps=args.fps,
                                                       emitters_per_frame=15))
            view = window.live_panel.view
            _wait(app, lambda: view.following, 60, "the live view")
            acquisitions = window._acquisitions
            _wait(app, lambda: acquisitions and acquisitions[0].get_n_frames() >= args.frames // 2,
                  600, "half the frames")
            _wait(app, lambda: view.localisations > 0, 60, "localisations")
            _settle(app, 1.5)
            _save(window, args.out / "live_view_acquiring.png")
            for width, height in sizes:
                window.resize(width, height)
                _settle(app, 1.0)
                _save(window, args.out / f"live_view_acquiring_{width}x{height}.png")
            window.resize(1280, 800)
            _wait(app, lambda: not view.following, 1800, "the localisation to finish")
            steps = window.chain_model.rowCount()
            _wait(app, lambda: len(window.rule_model.rule_ids()) >= steps and all(
                window.rule_model.rule_state(r) in ("finished", "failed")
                for r in window.rule_model.rule_ids()), 600, "the chain to finish")
            _settle(app, 1.5)
            _save(window, args.out / "live_view_finished.png")
            image = next(o for o in window.results_view._outputs if o.preview_kind == "image")
            window.bottom_tabs.setCurrentWidget(window.results_view)
            window.results_view.preview(image.uri)
            _settle(app, 3.0)
            _save(window, args.out / "results_finished.png")
        finally:
            for acquisition in window._acquisitions:
                acquisition.stop()
            window.ask_before_closing = False
            window.close()
            window.shutdown()
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
