"""The activity log (plain model and the window's tab), and a failed rule's log brought forward."""
from __future__ import annotations

import os

import pytest
from PyQt5.QtGui import QGuiApplication

from app.gui import EmbeddedCluster
from app.launcher import ClusterAddress
from rules.activity import ActivityLog
from widgets.activity_view import ActivityView

SERIES = "pyme/series.pcs"


def test_activity_log_is_bounded_one_line_each_and_copyable():
    seen = []
    log = ActivityLog(max_entries=3, on_add=seen.append)
    for i in range(5):
        log.add("launch", f"Launched #{i}\non series", when=1_800_000_000 + i)
    assert len(log) == 3 and [a.text for a in log.entries()] == [
        "Launched #2 on series", "Launched #3 on series", "Launched #4 on series"]
    assert len(seen) == 5
    lines = log.text().split("\n")
    assert len(lines) == 3 and lines[0].endswith("launch       Launched #2 on series")
    assert lines[0][:4].isdigit() and lines[0][10] == " "  # date and time first
    with pytest.raises(ValueError, match="unknown activity kind"):
        log.add("gossip", "x")
    log.add("failure", "Rule x failed")
    assert [a.kind for a in log.entries("failure")] == ["failure"]


def test_activity_log_is_kept_across_restarts_bounded_and_survives_a_cut_line(tmp_path):
    path = tmp_path / "config" / "activity.jsonl"
    log = ActivityLog(max_entries=3, path=path)
    log.add("launch", "Launched #1", when=1_800_000_000)
    log.add("failure", "Rule x failed", when=1_800_000_001)
    with open(path, "a", encoding="utf-8") as out:  # a crash in the middle of a write
        out.write('{"when": 1800000002, "kind": "lau')
    again = ActivityLog(max_entries=3, path=path)
    assert [(a.kind, a.text) for a in again.entries()] == [("launch", "Launched #1"),
                                                          ("failure", "Rule x failed")]
    assert again.text() == log.text()
    for i in range(10):  # the file is cut back to the newest entries as it grows
        again.add("launch", f"Launched #{i + 2}", when=1_800_000_010 + i)
    assert len(path.read_text().splitlines()) <= 2 * 3
    assert [a.text for a in ActivityLog(max_entries=3, path=path).entries()] == [
        "Launched #9", "Launched #10", "Launched #11"]


def test_activity_log_on_an_unwritable_path_still_logs(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    log = ActivityLog(path=blocker / "activity.jsonl")
    log.add("launch", "Launched #1")
    assert [a.text for a in log.entries()] == ["Launched #1"]


def test_activity_view_follows_the_log_and_copies_it(qtbot):
    log = ActivityLog()
    log.add("cluster", "Connected to http://127.0.0.1:1")
    view = ActivityView(log)
    qtbot.addWidget(view)
    log.on_add = view.show_activity
    log.add("auto-launch", "Auto-launched rule r1 on PYME-CLUSTER:///auto/a.pcs")
    assert view.text.toPlainText().count("\n") == 1
    assert "Auto-launched rule r1" in view.text.toPlainText()
    view.copy_button.click()
    assert QGuiApplication.clipboard().text() == log.text()


def test_launches_and_failures_are_logged_and_the_failed_log_comes_forward(
        qtbot, window, rule_server, data_server, fixture_series_root):
    import helpers
    window.show()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    qtbot.waitUntil(lambda: window._reachable is True, timeout=10000)
    assert "Connected to " + rule_server.url in window.activity.text()
    window.set_series(SERIES)
    qtbot.waitUntil(lambda: "Camera.ADOffset" in window.metadata_panel.model.metadata(),
                    timeout=10000)
    window.chain_editor.validate_now()
    qtbot.waitUntil(lambda: window.launch_action.isEnabled(), timeout=5000)
    with qtbot.waitSignal(window.launcher.launched, timeout=20000) as blocker:
        window.launch_action.trigger()
    rule_id = blocker.args[1]
    assert f"rule {rule_id}" in window.activity.entries("launch")[-1].text
    assert "series.pcs" in window.activity.entries("launch")[-1].text

    (fixture_series_root / "LOGS" / "rules").mkdir(parents=True, exist_ok=True)
    (fixture_series_root / "LOGS" / "rules" / f"{rule_id}.log").write_text(
        "task 0 failed: frame 0 could not be decoded\n")
    window.bottom_tabs.setCurrentWidget(window.activity_view)
    assert helpers.work(rule_server.url, rule_id, status=helpers.FAILED, ids=[0])
    qtbot.waitUntil(lambda: bool(window.activity.entries("failure")), timeout=10000)
    assert f"LOGS/rules/{rule_id}.log" in window.activity.entries("failure")[0].text
    qtbot.waitUntil(lambda: "could not be decoded" in window.results_view.text_view.toPlainText(),
                    timeout=10000)
    assert window.bottom_tabs.currentWidget() is window.results_view
    # the next poll does not log it again
    window._watcher.poll_now()
    qtbot.wait(300)
    assert len(window.activity.entries("failure")) == 1


def test_worker_restarts_of_the_embedded_cluster_are_logged(qtbot, window, tmp_path):
    embedded = EmbeddedCluster(tmp_path / "data", workers=1)
    embedded.workersRestarted.connect(window.on_workers_restarted)
    try:
        with qtbot.waitSignal(embedded.started, timeout=30000) as blocker:
            embedded.start()
        assert blocker.args[0].root == str(tmp_path / "data")
        pool = embedded.cluster.pool
        process = pool.processes[0]
        os.kill(process.pid, 9)  # a worker this test's cluster started
        with qtbot.waitSignal(embedded.workersRestarted, timeout=20000) as restarted:
            pass
        assert restarted.args == [1, 1]
        assert "1 worker process(es) exited and were replaced" in window.activity.text()
    finally:
        embedded.stop()


def test_the_window_shows_the_activity_of_earlier_sessions(qtbot, window, tmp_path):
    from PyQt5.QtCore import QSettings

    from app.main_window import MainWindow
    window.activity.add("launch", "Launched #7 on PYME-CLUSTER:///sim/a.pcs")
    later = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat), tmp_path / "config")
    qtbot.addWidget(later)
    try:
        shown = later.activity_view.text.toPlainText().splitlines()
        assert "Launched #7 on PYME-CLUSTER:///sim/a.pcs" in shown[-2]
        assert shown[-1].endswith(f"Spoolside started (process {os.getpid()})")
        assert sum("Spoolside started" in line for line in shown) == 2
    finally:
        later.ask_before_closing = False
        later.close()
        later.shutdown()
