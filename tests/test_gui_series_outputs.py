"""Earlier analyses: outputs under their series in the Series tab, Open from Cluster…, Show in
Folder (embedded cluster only)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PyQt5.QtGui import QDesktopServices

from app.launcher import ClusterAddress
from cluster import h5r
from cluster.localisation.results import empty_results
from rules.dataserver_client import FLAG_COMPLETE, FLAG_DIR, FLAG_SERIES, FileInfo
from rules.uris import local_path
from widgets.cluster_files import ClusterFileDialog
from widgets.series_browser import output_owner, walk_series

DIR = FileInfo(FLAG_DIR, 1)
SERIES = FileInfo(FLAG_DIR | FLAG_SERIES | FLAG_COMPLETE, 3)


def test_outputs_are_listed_under_the_series_they_belong_to():
    tree = {
        "": {"sim/": DIR},
        "sim": {"cells_01.pcs/": SERIES, "cells_01_x.pcs/": SERIES, "analysis/": DIR},
        "sim/analysis": {"cells_01.h5r": FileInfo(0, 1200), "cells_01_blobs.csv": FileInfo(0, 10),
                         "cells_01_x.tif": FileInfo(0, 2_500_000), "other.csv": FileInfo(0, 5),
                         "notes.txt": FileInfo(0, 5), "old/": DIR},
    }
    entries = walk_series(lambda path: tree.get(path, {}))
    by_path = {e.path: e for e in entries}
    assert by_path["sim/analysis/cells_01.h5r"].parent_path == "sim/cells_01.pcs"
    assert by_path["sim/analysis/cells_01_blobs.csv"].parent_path == "sim/cells_01.pcs"
    assert by_path["sim/analysis/cells_01_x.tif"].parent_path == "sim/cells_01_x.pcs"
    assert by_path["sim/analysis/cells_01_x.tif"].status == "2.5 MB"
    assert by_path["sim/analysis/other.csv"].parent_path == "sim/analysis"  # under the folder
    assert not by_path["sim/analysis"].is_output and "sim/analysis/notes.txt" not in by_path
    assert output_owner("cells_01_1.h5r", ["cells_01", "cells"]) == "cells_01"
    assert output_owner("cellsX.h5r", ["cells"]) is None


def test_local_path_stays_inside_the_data_folder(tmp_path):
    assert local_path(tmp_path, "PYME-CLUSTER://x/a/b.h5r?table=T") == tmp_path.resolve() / "a" / "b.h5r"
    with pytest.raises(ValueError):
        local_path(tmp_path, "../outside")


@pytest.fixture
def analysed_root(fixture_series_root):
    analysis = fixture_series_root / "pyme" / "analysis"
    analysis.mkdir()
    records = empty_results(3)
    records["fitResults"]["x0"] = [100.0, 200.0, 300.0]
    h5r.append_table(analysis / "series.h5r", "FitResults", records)
    tifffile.imwrite(analysis / "series.tif", np.ones((8, 8), np.float32))
    return fixture_series_root


def _item(browser, path):
    return browser._find(path)


def test_series_tab_opens_outputs_and_shows_folders(qtbot, window, rule_server, data_server,
                                                    analysed_root, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    window.show()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    browser = window.series_browser
    qtbot.waitUntil(lambda: _item(browser, "pyme/analysis/series.h5r") is not None, timeout=10000)
    item = _item(browser, "pyme/analysis/series.h5r")
    assert item.parent().data(browser.PathRole) == "pyme/series.pcs"
    assert browser.select_series("pyme/series.pcs")
    assert window.series_uri().endswith("pyme/series.pcs")
    browser.tree.setCurrentIndex(item.index())
    assert window.series_uri().endswith("pyme/series.pcs")  # an output keeps the series picked
    with qtbot.waitSignal(window.results_view.tableRead, timeout=10000) as read:
        browser.tree.doubleClicked.emit(item.index())
    assert read.args == ["PYME-CLUSTER://testcluster/pyme/analysis/series.h5r"]
    assert window.bottom_tabs.currentWidget() is window.results_view
    assert window.results_view.table_model.rowCount() == 3

    # a remote cluster: no Show in Folder, and the reason says so
    assert not browser.show_action.isEnabled() and "embedded" in browser.show_action.toolTip()
    window.show_in_folder("pyme/analysis/series.h5r")
    assert not opened and "embedded cluster" in window.statusBar().currentMessage()

    # the embedded cluster's files are on this machine
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster",
                                      embedded=True, root=str(analysed_root)))
    assert browser.show_action.isEnabled() and window.results_view.show_action.isEnabled()
    browser.tree.setCurrentIndex(_item(browser, "pyme/analysis/series.h5r").index())
    browser.show_action.trigger()
    assert [u.toLocalFile() for u in opened] == [str((analysed_root / "pyme" / "analysis").resolve())]


def test_open_from_cluster_browses_folders_and_opens_a_file(qtbot, window, rule_server, data_server,
                                                            analysed_root):
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    dialog = window.open_from_cluster()
    assert isinstance(dialog, ClusterFileDialog)
    qtbot.waitUntil(lambda: dialog.select("pyme"), timeout=10000)
    dialog.tree.expand(dialog.tree.currentIndex())
    qtbot.waitUntil(lambda: dialog.select("pyme/analysis"), timeout=10000)
    assert not dialog.open_button.isEnabled()  # a folder
    dialog.tree.expand(dialog.tree.currentIndex())
    qtbot.waitUntil(lambda: dialog.select("pyme/analysis/series.tif"), timeout=10000)
    assert dialog.open_button.isEnabled()
    assert not dialog.select("pyme/series.pcs")  # a series: listed, not opened here
    with qtbot.waitSignal(window.results_view.previewShown, timeout=10000) as shown:
        dialog.open_button.click()
    assert shown.args == ["PYME-CLUSTER://testcluster/pyme/analysis/series.tif", "image"]
    assert window.results_view.image_view.canvas.image_item.image().width() == 8
