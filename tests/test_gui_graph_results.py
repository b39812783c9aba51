"""Progress graph (history, curves, rate) and results view (previews read through a data server)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import requests
import tifffile
from PyQt5.QtCore import Qt

from app.watcher import StatusWatcher, start_watcher, stop_watcher
from cluster import h5r
from rules.dataserver_client import DataClient
from rules.watchers import RuleStatus
from widgets.progress_graph import ProgressGraph
from widgets.results_view import ResultOutput, ResultsView, kind_of
from widgets.rule_table import RuleTableModel, RuleTableView

TEMPLATE = '{"id": "{{ruleID}}~{{taskID}}", "type": "recipe", "inputs": {{taskInputs}}}'


def _status(rule_id: str, completed: int, failed: int = 0, finished: bool = False,
            posted: int = 100) -> RuleStatus:
    return RuleStatus(rule_id, posted=posted, running=0, completed=completed, failed=failed,
                      timed_out=0, complete_after_timeout=0, average_cost=0.01, active=True,
                      finished=finished, expired=False)


def test_graph_keeps_history_and_updates_curves_in_place(qtbot):
    graph = ProgressGraph()
    qtbot.addWidget(graph)
    for second in range(10):
        graph.add_statuses([_status("a", 10 * second, second // 5), _status("b", second)],
                           t=100.0 + second)
    graph.set_rules(["a"])
    curves = graph.curves("a")
    assert curves is not None and graph.curves("b") is None
    t, completed, failed, rate = graph.points("a")
    assert list(t) == [float(s) for s in range(10)]
    assert completed[-1] == 90 and failed[-1] == 1
    assert rate[-1] == pytest.approx((91 - 30) / 6.0)  # done at t=9 minus done at t=3, over 6 s
    x, y = curves[0].getData()
    assert list(y) == list(completed)

    graph.add_statuses([_status("a", 95, 1)], t=110.0)
    assert graph.curves("a") is curves  # same items, new data
    assert curves[0].getData()[1][-1] == 95
    graph.set_rules(["b"])
    assert not curves[0].isVisible() and graph.curves("b")[0].isVisible()


def test_graph_history_stays_bounded_and_settled_rules_add_nothing(qtbot):
    graph = ProgressGraph(max_points=256)
    qtbot.addWidget(graph)
    for i in range(5000):
        graph.add_statuses([_status("a", i)], t=float(i))
    t, completed, _, _ = graph.points("a")
    assert len(t) <= 256 and t[0] == 0.0 and t[-1] == 4999.0
    assert np.all(np.diff(t) > 0)
    for i in range(10):
        graph.add_statuses([_status("done", 100, finished=True)], t=float(i))
    assert len(graph.points("done")[0]) == 1


def test_graph_gets_points_for_a_rule_selected_in_the_table(qtbot, rule_server):
    with requests.Session() as session:
        reply = session.post(f"{rule_server.url}/add_integer_id_rule", timeout=5,
                             params={"max_tasks": 2, "release_start": 0, "release_end": 2},
                             json={"template": TEMPLATE})
        rule_id = reply.json()["ruleID"]
    model = RuleTableModel()
    table = RuleTableView(model, confirm_abort=False)
    graph = ProgressGraph()
    qtbot.addWidget(table)
    qtbot.addWidget(graph)
    table.selectionChangedTo.connect(graph.set_rules)
    watcher = StatusWatcher(rule_server.url, interval_s=0.05)
    watcher.statusesUpdated.connect(model.set_statuses)
    watcher.statusesUpdated.connect(graph.add_statuses)
    thread = start_watcher(watcher)
    try:
        qtbot.waitUntil(lambda: model.row_of(rule_id) is not None, timeout=10000)
        table.select_rules([rule_id])
        qtbot.waitUntil(lambda: _curve_points(graph, rule_id) >= 1, timeout=10000)
        with requests.Session() as session:
            _complete(session, rule_server.url, rule_id, [0, 1])
        qtbot.waitUntil(lambda: _curve_points(graph, rule_id) >= 2, timeout=10000)
        assert graph.curves(rule_id)[0].getData()[1][-1] == 2
    finally:
        assert stop_watcher(watcher, thread, 10000)


def _complete(session: requests.Session, url: str, rule_id: str, task_ids: list[int]) -> None:
    """Bid for ``task_ids`` (buy-now cost) and hand them in as complete, as a worker does."""
    session.post(f"{url}/bid_on_tasks", timeout=5, json=[
        {"ruleID": rule_id, "taskIDs": task_ids, "costs": [0.01] * len(task_ids)}]).raise_for_status()
    session.post(f"{url}/handin", timeout=5, json=[
        {"ruleID": rule_id, "taskIDs": task_ids, "status": [3] * len(task_ids)}]).raise_for_status()


def _curve_points(graph: ProgressGraph, rule_id: str) -> int:
    curves = graph.curves(rule_id)
    x = None if curves is None else curves[0].getData()[0]
    return 0 if x is None else len(x)


@pytest.fixture
def results_root(fixture_series_root):
    """The data root with a rendered image, a measurement table, a CSV and a failure log."""
    root = fixture_series_root
    (root / "analysis").mkdir()
    image = np.arange(48 * 64, dtype=np.float32).reshape(48, 64)
    tifffile.imwrite(root / "analysis" / "render.tif", image)
    blobs = np.zeros(5, dtype=[("area", "f4"), ("label", "i4")])
    blobs["area"] = [1.5, 2.5, 3.5, 4.5, 5.5]
    blobs["label"] = np.arange(1, 6)
    h5r.append_table(root / "analysis" / "blobs.h5r", "Measurements", blobs)
    (root / "analysis" / "blobs.csv").write_text("area,label\n1.5,1\n2.5,2\n")
    (root / "LOGS" / "rules").mkdir(parents=True)
    (root / "LOGS" / "rules" / "000003-abc.log").write_text("task 7 failed: no such module Foo\n")
    return root


@pytest.fixture
def results_view(qtbot, data_server, results_root):
    view = ResultsView(lambda: DataClient(data_server.url, "testcluster"))
    qtbot.addWidget(view)
    view.resize(900, 500)
    view.show()
    yield view
    assert view.stop()


def test_results_view_previews_an_image(qtbot, results_view):
    uri = "PYME-CLUSTER://testcluster/analysis/render.tif"
    results_view.set_outputs([ResultOutput("rendered image", uri),
                              ResultOutput("blobs", uri.replace("render.tif", "blobs.h5r")
                                           + "?table=Measurements")])
    assert results_view.outputs.topLevelItemCount() == 2
    assert results_view.outputs.topLevelItem(0).text(1) == uri
    with qtbot.waitSignal(results_view.previewShown, timeout=10000) as shown:
        results_view.outputs.setCurrentItem(results_view.outputs.topLevelItem(0))
    assert shown.args == [uri, "image"]
    picture = results_view.image_view.canvas.image_item.image()
    assert (picture.width(), picture.height()) == (64, 48)  # full resolution
    # hot colour map, 99.5 % contrast: the dimmest pixel black, the brightest white
    assert picture.pixelColor(0, 0).getRgb()[:3] == (0, 0, 0)
    assert picture.pixelColor(63, 47).getRgb()[:3] == (255, 255, 255)
    assert results_view.pages.currentWidget() is results_view.image_view
    assert "64 × 48 px" in results_view.caption.text()
    # no pyqtgraph ROI/Menu buttons, no context menu: the live view's viewer
    assert not results_view.image_view.canvas.view.menuEnabled()
    # the colour map and contrast re-colour the same pixels
    with qtbot.waitSignal(results_view.image_view.shown, timeout=10000):
        results_view.image_view.controls.colour_box.setCurrentText("magma")
    assert results_view.image_view.canvas.image_item.image().pixelColor(0, 0).getRgb()[:3] != \
        (255, 255, 255)


def test_results_view_previews_tables(qtbot, results_view):
    uri = "PYME-CLUSTER://testcluster/analysis/blobs.h5r?table=Measurements"
    with qtbot.waitSignal(results_view.tableRead, timeout=10000):
        results_view.preview(uri)
    model = results_view.table_model
    assert model.rowCount() == 5
    assert [model.headerData(c, 1) for c in range(model.columnCount())] == ["area [px²]", "label"]
    assert model.index(2, 0).data() == "3.5"
    assert results_view.pages.currentWidget() is results_view.table_page
    assert "5 rows" in results_view.caption.text()
    assert results_view.table_view.isSortingEnabled()
    results_view.table_view.sortByColumn(0, Qt.DescendingOrder)
    assert [model.index(r, 0).data() for r in range(5)] == ["5.5", "4.5", "3.5", "2.5", "1.5"]
    assert model.headerData(0, Qt.Vertical) == "5"  # the row's number in the file
    plot = results_view.column_plot
    assert plot.x_box.currentText() == "area [px²]" and plot.note.text() == "5 values"
    plot.y_box.setCurrentText("label")
    assert plot.note.text() == "5 points"
    assert list(plot.curve.getData()[1]) == [1, 2, 3, 4, 5]

    # PYME's own results file: the readable localisation columns, in nm and photons
    with qtbot.waitSignal(results_view.tableRead, timeout=10000):
        results_view.preview("PYME-CLUSTER://testcluster/pyme/results.h5r")
    headers = [model.headerData(c, 1) for c in range(model.columnCount())]
    assert headers[:3] == ["frame", "x [nm]", "y [nm]"] and "intensity [photon]" in headers
    assert model.rowCount() > 0
    assert f"{model.rowCount():,} rows" in results_view.caption.text()

    with qtbot.waitSignal(results_view.tableRead, timeout=10000):
        results_view.preview("PYME-CLUSTER://testcluster/analysis/blobs.csv")
    assert model.rowCount() == 2 and model.index(1, 1).data() == "2"
    assert "area [px²]" == model.headerData(0, Qt.Horizontal)


def test_results_view_shows_error_log_and_missing_files(qtbot, results_view):
    with qtbot.waitSignal(results_view.previewShown, timeout=10000) as shown:
        results_view.show_error_log("000003-abc")
    assert shown.args[1] == "text"
    assert "no such module Foo" in results_view.text_view.toPlainText()
    assert results_view.text_view.isReadOnly()
    with qtbot.waitSignal(results_view.previewFailed, timeout=10000) as failed:
        results_view.show_error_log("000004-none")
    assert "000004-none" in failed.args[0]
    assert "Could not preview" in results_view.message.text()


def test_kinds_from_extensions():
    assert kind_of("PYME-CLUSTER://x/a/render.tif") == "image"
    assert kind_of("PYME-CLUSTER://x/a/r.h5r?table=FitResults") == "table"
    assert kind_of("LOGS/rules/1.log") == "text"
    assert kind_of("PYME-CLUSTER://x/a/s.pcs") == "file"


def test_tiff_bytes_round_trip_helper():
    # The loader decodes TIFF bytes from the data server in memory, as written by tifffile.
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.ones((3, 4), np.uint16))
    assert tifffile.imread(io.BytesIO(buffer.getvalue())).shape == (3, 4)


def test_new_outputs_clear_a_preview_of_the_old_ones(qtbot, results_view):
    with qtbot.waitSignal(results_view.previewShown, timeout=10000):
        results_view.show_error_log("000003-abc")
    old = [ResultOutput("blobs", "PYME-CLUSTER://testcluster/analysis/blobs.csv")]
    results_view.set_outputs(old)
    assert results_view.pages.currentWidget() is results_view.message
    assert results_view.caption.text() == "Pick an output to preview it."
    with qtbot.waitSignal(results_view.previewShown, timeout=10000):
        results_view.outputs.setCurrentItem(results_view.outputs.topLevelItem(0))
    results_view.set_outputs(list(old))   # the same list again: the preview stays
    assert results_view.pages.currentWidget() is results_view.table_page
    results_view.set_outputs([])
    assert results_view.caption.text() == "This chain writes no files."


def test_a_one_task_step_that_ended_is_marked_where_it_ended(qtbot):
    graph = ProgressGraph()
    qtbot.addWidget(graph)
    graph.add_statuses([_status("loc", 0, posted=500), _status("rec", 0, posted=1)], t=10.0)
    graph.add_statuses([_status("loc", 500, posted=500), _status("rec", 0, posted=1)], t=20.0)
    graph.set_rules(["loc", "rec"])
    assert graph.end_line("rec") is None  # still running
    graph.add_statuses([_status("loc", 500, posted=500), _status("rec", 1, posted=1)], t=27.0)
    line = graph.end_line("rec")
    assert line is not None and line.value() == pytest.approx(17.0) and line.label.format == "done"
    assert graph.end_line("loc") is None  # a step of many tasks has its curve
    graph.set_rules(["loc"])
    assert not line.isVisible()
    graph.forget(["rec"])
    assert graph.end_line("rec") is None
