"""File ▸ Import data… and drag-and-drop: a TIFF stack uploaded as a series with a progress bar,
missing metadata asked for, bad files refused in the dialog; the series is then picked."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PyQt5.QtCore import QCoreApplication, QEvent, QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PyQt5.QtGui import QDragEnterEvent, QDropEvent

from app.launcher import ClusterAddress
from app.main_window import MainWindow
from rules.dataserver_client import DataClient
from widgets.import_dialog import ImportDialog


@pytest.fixture
def stack_file(tmp_path):
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, (np.arange(6 * 20 * 16) % 500).astype(np.uint16).reshape(6, 20, 16),
                     photometric="minisblack")
    return path


def _client(data_server):
    return lambda: DataClient([data_server.url], "testcluster")


def test_dialog_asks_for_what_the_file_lacks_then_imports_with_progress(qtbot, data_server,
                                                                        data_root, stack_file):
    dialog = ImportDialog(stack_file, _client(data_server))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.source is not None, timeout=10000)
    assert "6 frames of 16×20 px, uint16" in dialog.info.text()
    assert not dialog.import_button.isEnabled()
    assert "Pixel size (nm) is needed" in dialog.error.text()
    dialog.fields["voxelsize.x"].setText("-3")
    assert "Pixel size (nm): voxelsize.x must be above 0" in dialog.error.text()
    dialog.fields["voxelsize.x"].setText("65")
    dialog.fields["Camera.ADOffset"].setText("100")
    dialog.fields["Camera.ElectronsPerCount"].setText("0.5")
    dialog.name.setText("lab/cells 1")
    assert "Series name" in dialog.error.text() and not dialog.import_button.isEnabled()
    dialog.name.setText("lab/cells_1")
    assert dialog.import_button.isEnabled() and dialog.error.text() == ""
    dialog.show()
    with qtbot.waitSignal(dialog.imported, timeout=20000) as imported:
        dialog.import_button.click()
    assert imported.args == ["lab/cells_1.pcs"]
    assert dialog.progress.value() == 6
    md = json.loads((data_root / "lab" / "cells_1.pcs" / "metadata.json").read_text())
    assert md["voxelsize.x"] == pytest.approx(0.065) and md["voxelsize.y"] == pytest.approx(0.065)
    assert (data_root / "lab" / "cells_1.pcs" / "events.json").exists()


def test_dialog_shows_why_a_file_cannot_be_imported(qtbot, data_server, data_root, tmp_path):
    path = tmp_path / "single.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.uint16))
    dialog = ImportDialog(path, _client(data_server))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: "Cannot import" in dialog.error.text(), timeout=10000)
    assert "a single 2-D image" in dialog.error.text()
    assert not dialog.import_button.isEnabled()
    assert list(data_root.iterdir()) == []


def test_window_file_menu_and_drop_open_the_import_dialog(qtbot, tmp_path, data_server, rule_server,
                                                          stack_file):
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat), tmp_path / "config")
    try:
        window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
        assert window.import_action.text() == "&Import Data…"
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(stack_file))])
        enter = QDragEnterEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
        assert QCoreApplication.sendEvent(window, enter) and enter.isAccepted()
        drop = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
        QCoreApplication.sendEvent(window, drop)
        dialogs = window.findChildren(ImportDialog)
        assert len(dialogs) == 1 and dialogs[0].path == stack_file
        qtbot.waitUntil(lambda: dialogs[0].source is not None, timeout=10000)
        dialogs[0].reject()
    finally:
        window.ask_before_closing = False
        window.close()
        window.shutdown()
        window.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


def test_dialog_imports_a_pyme_h5_file_with_its_own_metadata(qtbot, data_server, data_root, tmp_path):
    from tests.test_importer import EVENTS, _write_h5

    frames = (np.arange(4 * 24 * 10) % 700).astype(np.uint16).reshape(4, 24, 10)  # (t, x, y)
    dialog = ImportDialog(_write_h5(tmp_path / "acq.h5", frames, "pzf"), _client(data_server))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.source is not None, timeout=10000)
    assert "4 frames of 24×10 px, uint16 (h5-pzf)" in dialog.info.text()
    dialog.name.setText("lab/acq")
    assert dialog.import_button.isEnabled() and dialog.error.text() == ""
    dialog.show()
    with qtbot.waitSignal(dialog.imported, timeout=20000) as imported:
        dialog.import_button.click()
    assert imported.args == ["lab/acq.pcs"]
    assert json.loads((data_root / "lab" / "acq.pcs" / "events.json").read_text()) == [list(e) for e in EVENTS]
