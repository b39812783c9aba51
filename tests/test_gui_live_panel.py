"""The Live tab's companions: exporting localisations and analysing new series automatically."""
from __future__ import annotations

import csv

from PyQt5.QtCore import QSettings
from PyQt5.QtWidgets import QFileDialog, QMessageBox

from app.launcher import ClusterAddress
from app.live import AutoAnalysis, AutoAnalysisDialog, LivePanel, results_file
from cluster.simulator import SampleModel, SimulatedAcquisition
from tests.helpers import LOCALISE_PRESET as PRESET


def test_results_file_of_outputs():
    assert results_file(["PYME-CLUSTER://c/a/analysis/s.tif",
                         "PYME-CLUSTER://c/a/analysis/s.h5r?table=FitResults"]) == \
        "PYME-CLUSTER://c/a/analysis/s.h5r"
    assert results_file(["PYME-CLUSTER://c/a/b.csv"]) is None


def test_export_from_the_live_panel(qtbot, monkeypatch, data_server, fixture_series_root, tmp_path):
    panel = LivePanel()
    qtbot.addWidget(panel)
    panel.follow([data_server.url], "testcluster", "PYME-CLUSTER://testcluster/pyme/results.h5r")
    qtbot.waitUntil(lambda: panel.view.localisations == 5, timeout=10000)
    target = tmp_path / "out"
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(target), "ThunderSTORM CSV (*.csv)"))
    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda *a: shown.append(a[2]))
    panel.export()
    qtbot.waitUntil(lambda: bool(shown), timeout=10000)
    assert shown[0].startswith("5 localisations written to") and shown[0].endswith("out.csv.")
    with open(tmp_path / "out.csv", newline="") as f:
        assert next(csv.reader(f))[:4] == ["id", "frame", "x [nm]", "y [nm]"]
    panel.close_clients()


def test_auto_analysis_setting_survives_and_launches(qtbot, local_cluster, engine, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    preset = tmp_path / "localise.yaml"
    preset.write_text(PRESET)
    auto = AutoAnalysis(settings)
    dialog = AutoAnalysisDialog(auto, tmp_path)
    qtbot.addWidget(dialog)
    dialog.preset_edit.setText(str(preset))
    dialog.pattern_edit.setText("gui_auto/*.tif")
    dialog.on_button.click()
    assert "cannot match a series" in dialog.error_label.text() and not auto.enabled
    dialog.pattern_edit.setText("gui_auto")
    dialog.on_button.click()
    assert auto.enabled and auto.pattern == "gui_auto"
    settings.sync()
    again = AutoAnalysis(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    assert again.enabled and again.preset == str(preset) and again.pattern == "gui_auto"

    states, launches = [], []
    again.stateChanged.connect(states.append)
    again.launched.connect(launches.append)
    again.start(ClusterAddress(local_cluster.ruleserver_url, (local_cluster.dataserver_url,),
                               engine.serverfilter))
    try:
        assert states[-1].startswith("Analysing new series gui_auto/*.pcs automatically")
        qtbot.wait(500)  # the launcher has taken its first look
        SimulatedAcquisition(engine.data, "gui_auto/s1", frames=20, fps=200, size=64, seed=1,
                             serverfilter=engine.serverfilter,
                             sample=SampleModel(emitters_per_frame=5)).start().wait(30)
        qtbot.waitUntil(lambda: bool(launches), timeout=20000)
    finally:
        again.stop()
    assert launches[0].startswith("Auto-launched rule ") and "gui_auto/s1.pcs" in launches[0]


def test_a_long_results_name_never_widens_the_window(qtbot):
    """The Live view tab must fit beside the chain editor in a 1024-pixel-wide window."""
    panel = LivePanel()
    qtbot.addWidget(panel)
    long_uri = "PYME-CLUSTER://lab/" + "a_very_long_series_name_" * 8 + ".h5r"
    panel.title.setText(f"<b>{long_uri}</b> — {long_uri}")
    panel.view.summary_label.setText("5,107 localisations · 187 frames · " * 6)
    panel.view.progress_label.setText("analysed 187 of 200 frames (spooling done) · " * 6)
    for layout in (panel.layout(), panel.view.layout()):
        layout.invalidate()
        layout.activate()
    assert panel.minimumSizeHint().width() < 620
