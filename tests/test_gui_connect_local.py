"""Several clusters on one machine: *Connect to Cluster…* lists them, the window says so at start.

Real clusters on free loopback ports, registered in the test's private name service (conftest)."""
from __future__ import annotations

import pytest

from app.launcher import ClusterAddress
from cluster.local import start_local_cluster
from widgets.server_dialog import LOOKING, ServerDialog


@pytest.fixture
def two_clusters(tmp_path):
    with start_local_cluster(tmp_path / "a", serverfilter="bench-a", register=True) as a, \
            start_local_cluster(tmp_path / "b", serverfilter="bench-b", register=True) as b:
        yield a, b


def _embedded(lc) -> ClusterAddress:
    return ClusterAddress(lc.ruleserver_url, (lc.dataserver_url,), lc.serverfilter, embedded=True,
                          root=str(lc.root))


def _start_on_own(qtbot, window, lc) -> list:
    """Point ``window`` at ``lc`` as at its start; the other clusters its look-up found."""
    with qtbot.waitSignal(window._signals.done, timeout=10000,
                          check_params_cb=lambda tag, _result: tag == "other clusters") as blocker:
        window.set_cluster(_embedded(lc))
    return blocker.args[1]


def test_connect_dialog_lists_the_clusters_here_and_choosing_one_connects(
        qtbot, monkeypatch, two_clusters, window, tmp_path):
    a, b = two_clusters
    window.set_cluster(_embedded(a))  # a plays the window's own embedded cluster
    shown = {}

    def choose_b(dialog):
        assert dialog.cluster_list.item(0).text() == LOOKING or dialog.clusters_listed
        qtbot.waitUntil(lambda: dialog.clusters_listed, timeout=10000)  # looked up off the GUI
        shown["items"] = [dialog.cluster_list.item(i).text() for i in range(dialog.cluster_list.count())]
        row = next(i for i, c in enumerate(dialog.clusters) if c[0] == "bench-b")
        dialog.pick(row)
        shown["enabled"] = dialog.ok_button.isEnabled()
        dialog.grab().save(str(tmp_path / "connect.png"))
        return ServerDialog.Accepted
    monkeypatch.setattr(ServerDialog, "exec_", choose_b)
    window.connect_action.trigger()

    items = shown["items"]
    assert len(items) == 3 and items[-1] == "Enter URLs…"
    own = next(t for t in items if t.startswith("bench-a"))
    other = next(t for t in items if t.startswith("bench-b"))
    assert "this window's embedded cluster" in own and "embedded" not in other
    assert b.ruleserver_url in other and b.dataserver_url in other
    assert shown["enabled"]
    assert window.address == ClusterAddress(b.ruleserver_url, (b.dataserver_url,), "bench-b")
    qtbot.waitUntil(lambda: window._reachable is True, timeout=10000)
    settings = window.settings
    assert settings.value("cluster/ruleserver") == b.ruleserver_url
    assert settings.value("cluster/serverfilter") == "bench-b"

    # Back to the window's own cluster: it is used again, and nothing is saved for the next start.
    def choose_a(dialog):
        qtbot.waitUntil(lambda: dialog.clusters_listed, timeout=10000)
        dialog.pick(next(i for i, c in enumerate(dialog.clusters) if c[0] == "bench-a"))
        return ServerDialog.Accepted
    monkeypatch.setattr(ServerDialog, "exec_", choose_a)
    window.connect_action.trigger()
    assert window.address == _embedded(a)
    assert settings.value("cluster/ruleserver") is None


def test_typed_urls_pick_enter_urls_and_a_listed_clusters_urls_pick_it(qtbot, two_clusters):
    a, b = two_clusters
    from rules import nameservice
    dialog = ServerDialog(clusters=nameservice.local_clusters())
    qtbot.addWidget(dialog)
    enter = dialog.cluster_list.count() - 1
    dialog.rule_edit.setText("http://10.0.0.2:15346")
    dialog.data_edit.setText("http://10.0.0.2:15348")
    assert dialog.cluster_list.currentRow() == enter and dialog.serverfilter() is None
    dialog.rule_edit.setText(a.ruleserver_url + "/")
    dialog.data_edit.setText(a.dataserver_url)
    assert dialog.serverfilter() == "bench-a"
    assert dialog.cluster_list.currentItem().text().startswith("bench-a")


def test_clusters_listed_later_keep_what_was_typed(qtbot, two_clusters):
    a, b = two_clusters
    from rules import nameservice
    dialog = ServerDialog(clusters=None)
    qtbot.addWidget(dialog)
    assert [dialog.cluster_list.item(i).text() for i in range(dialog.cluster_list.count())] \
        == [LOOKING]
    dialog.rule_edit.setText(b.ruleserver_url)
    dialog.data_edit.setText(b.dataserver_url)
    assert dialog.ok_button.isEnabled() and dialog.serverfilter() is None
    dialog.set_clusters(nameservice.local_clusters())
    assert dialog.rule_edit.text() == b.ruleserver_url and dialog.serverfilter() == "bench-b"
    assert dialog.cluster_list.currentItem().text().startswith("bench-b")


def test_no_cluster_here_says_so_in_the_list(qtbot):
    dialog = ServerDialog(clusters=[])
    qtbot.addWidget(dialog)
    assert dialog.cluster_list.count() == 1
    assert "No cluster is registered" in dialog.cluster_list.item(0).text()


def test_the_window_on_its_own_cluster_says_other_clusters_run_here(qtbot, two_clusters, window):
    a, b = two_clusters
    assert [c[0] for c in _start_on_own(qtbot, window, a)] == ["bench-b"]
    text = next(e.text for e in window.activity.entries("cluster") if "bench-b" in e.text)
    assert text.startswith("1 other cluster runs on this machine") and b.ruleserver_url in text
    assert "bench-a" not in text and "Connect to Cluster" in text
    assert "bench-b" in window.statusBar().currentMessage()


@pytest.fixture
def one_cluster(tmp_path):
    with start_local_cluster(tmp_path / "only", serverfilter="solo", register=True) as only:
        yield only


def test_the_window_alone_on_this_machine_says_nothing(qtbot, one_cluster, window):
    assert _start_on_own(qtbot, window, one_cluster) == []
    assert not any("other cluster" in e.text for e in window.activity.entries())
