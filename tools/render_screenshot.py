"""Render the Spoolside window offscreen, mid-analysis, to ``docs/screenshot.png`` (for the README).

Starts an embedded cluster with workers in a scratch folder, spools a simulated series and launches
the default chain on it live, waits until localisation is under way, selects the rule so its
progress graph shows, and grabs the window at 1280×800. Everything is stopped afterwards.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/render_screenshot.py [--out docs/screenshot.png]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PyQt5")

from PyQt5.QtCore import QSettings  # noqa: E402 - after the environment is set
from PyQt5.QtWidgets import QApplication  # noqa: E402

logger = logging.getLogger("render_screenshot")


def _wait(app: QApplication, condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def render(out: Path, workers: int, frames: int, fps: float) -> None:
    app = QApplication.instance() or QApplication([])
    from app.launcher import ClusterAddress
    from app.main_window import MainWindow
    from cluster.local import start_local_cluster

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        cluster = start_local_cluster(scratch / "data", workers=workers)
        settings = QSettings(str(scratch / "settings.ini"), QSettings.IniFormat)
        window = MainWindow(settings, scratch / "config")
        try:
            window.resize(1280, 800)
            window.show()
            window.set_cluster(ClusterAddress(cluster.ruleserver_url, (cluster.dataserver_url,),
                                              cluster.serverfilter, embedded=True))
            _wait(app, lambda: window._reachable is True, 20, "the cluster")
            window.simulate("microscope/cells_01", frames, fps)
            _wait(app, lambda: window.launcher.labels, 60, "the launch")
            rule_id = next(iter(window.launcher.labels))
            _wait(app, lambda: rule_id in window.rule_model.rule_ids(), 20, "the rule table")
            window.rule_view.select_rules([rule_id])
            window.series_browser.select_series("microscope/cells_01.pcs")

            def progressed() -> bool:
                status = window.rule_model.status(rule_id)
                return status is not None and status.completed >= frames // 3
            _wait(app, progressed, 120, "localisation progress")
            _wait(app, lambda: len(window.progress_graph.points(rule_id)[0]) >= 4, 20, "graph points")
            for _ in range(20):
                app.processEvents()
                time.sleep(0.01)
            out.parent.mkdir(parents=True, exist_ok=True)
            if not window.grab().save(str(out)):
                raise OSError(f"could not write {out}")
            print(f"wrote {out}")
        finally:
            window.close()
            window.shutdown()
            cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=40.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    render(args.out, args.workers, args.frames, args.fps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
