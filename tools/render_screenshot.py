"""Render the Spoolside window offscreen, mid-analysis, to ``docs/screenshot.png`` (for the README).

Starts an embedded cluster with workers in a scratch folder, spools a simulated series and launches
the default chain on it live, waits until localisation has finished and its follow-on appears,
selects the localisation rule so its progress graph shows, and grabs the window at 1280×800.
``--states DIR`` also grabs the Series, Metadata and Results tabs, a failed rule's log, the About
and Simulate dialogs and the unreachable-cluster state. Everything is stopped afterwards.

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
from PyQt5.QtWidgets import QApplication, QMessageBox  # noqa: E402

logger = logging.getLogger("render_screenshot")


def _wait(app: QApplication, condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def _settle(app: QApplication, seconds: float = 0.3) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)


def _save(widget, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if not widget.grab().save(str(out)):
        raise OSError(f"could not write {out}")
    print(f"wrote {out}")


def render(out: Path, workers: int, frames: int, fps: float, states: Path | None = None,
           sizes: tuple[tuple[int, int], ...] = (), series: str = "microscope/cells_01") -> None:
    """Grab the window once localisation has finished and its follow-on render step is running.

    With ``states``, also grab the other tabs and states into that folder (for review).
    """
    app = QApplication.instance() or QApplication([])
    from app.launcher import ClusterAddress
    from app.main_window import MainWindow
    from cluster.local import start_local_cluster
    from rules.simulation import SimulationSettings

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
            window.simulate(series, SimulationSettings(frames=frames, fps=fps))
            _wait(app, lambda: window.launcher.labels, 60, "the launch")
            rule_id = next(iter(window.launcher.labels))
            _wait(app, lambda: rule_id in window.rule_model.rule_ids(), 20, "the rule table")
            window.rule_view.select_rules([rule_id])
            window.series_browser.select_series(series + ".pcs")

            def followon_visible() -> bool:
                status = window.rule_model.status(rule_id)
                return (status is not None and status.finished
                        and len(window.rule_model.rule_ids()) >= 2)
            _wait(app, followon_visible, 120, "localisation to finish and its follow-on")
            _wait(app, lambda: len(window.progress_graph.points(rule_id)[0]) >= 4, 20, "graph points")
            _settle(app)
            _save(window, out)
            for width, height in sizes:
                window.resize(width, height)
                _settle(app, 0.5)
                _save(window, out.with_name(f"{out.stem}_{width}x{height}{out.suffix}"))
            if sizes:
                window.resize(1280, 800)
            if states is not None:
                _render_states(app, window, cluster, rule_id, states)
        finally:
            window.close()
            window.shutdown()
            cluster.stop()


def _render_states(app, window, cluster, rule_id: str, folder: Path) -> None:
    """The other tabs and states a user sees, one PNG each."""
    from rules.chain import ChainStep
    from rules.simulation import SimulationSettings
    from widgets.series_browser import SimulateDialog

    _wait(app, lambda: all(window.rule_model.rule_state(r) in ("finished", "failed")
                           for r in window.rule_model.rule_ids()), 120, "the chain to finish")
    window.bottom_tabs.setCurrentWidget(window.results_view)
    for output in list(window.results_view._outputs):
        if output.preview_kind in ("image", "table"):
            window.results_view.preview(output.uri)
            _settle(app, 1.5)
            _save(window, folder / f"results_{output.preview_kind}_{output.name}.png")

    bad = ChainStep.recipe_step(recipe="- filters.GaussianFilter: {inputName: input, sigmaX: 1, "
                                "sigmaY: 1, outputName: smoothed}\n",
                                input_patterns={"input": "{{spool_dir}}/missing.tif"},
                                output_dir="{{spool_dir}}/analysis")
    before = set(window.rule_model.rule_ids())
    window.launch(series="microscope/cells_01.pcs", steps=[bad])
    _wait(app, lambda: any(window.rule_model.rule_state(r) == "failed"
                           for r in set(window.rule_model.rule_ids()) - before), 60, "a failed rule")
    failed = next(r for r in window.rule_model.rule_ids() if r not in before)
    window.rule_view.select_rules([failed])
    _settle(app, 1.5)
    _save(window, folder / "failed_rule_log.png")

    window.simulate("microscope/cells_02", SimulationSettings(frames=5000, fps=5.0))
    window.left_tabs.setCurrentWidget(window.series_browser)
    _wait(app, lambda: len(window.series_browser.entries()) >= 2, 30, "two series")
    _settle(app, 1.0)
    _save(window, folder / "series_tab.png")

    window.left_tabs.setCurrentWidget(window.metadata_panel)
    window.metadata_panel.model.set_text("voxelsize.x", "-0.1")
    _settle(app)
    _save(window, folder / "metadata_tab.png")
    window.metadata_panel.model.set_text("voxelsize.x", "0.1")

    window.show_about()
    _settle(app)
    about = window.findChild(QMessageBox)
    _save(about, folder / "about.png")
    about.close()
    dialog = SimulateDialog(window)
    dialog.show()
    _settle(app)
    _save(dialog, folder / "simulate_dialog.png")
    dialog.close()

    window.left_tabs.setCurrentWidget(window.chain_editor)
    cluster.stop()
    _wait(app, lambda: window._reachable is False, 30, "the cluster to be unreachable")
    _settle(app)
    _save(window, folder / "unreachable.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--states", type=Path, default=None,
                        help="also render the other tabs, dialogs and states into this folder")
    parser.add_argument("--sizes", default="",
                        help="also grab the window at these sizes, e.g. 1024x700,1920x1080 "
                             "(saved beside --out as <stem>_<W>x<H>.png)")
    parser.add_argument("--series", default="microscope/cells_01",
                        help="name of the simulated series (try a long one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = tuple(tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",") if size)
    render(args.out, args.workers, args.frames, args.fps, args.states, sizes, args.series)
    return 0


if __name__ == "__main__":
    sys.exit(main())
