"""The status watcher on its QThread, against real rule servers (in-process and in a subprocess)."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from app.watcher import StatusWatcher, start_watcher, stop_watcher
from cluster.http_base import free_port
from rules.watchers import RuleStatus
from widgets.rule_table import RuleTableModel, RuleTableView

TEMPLATE = '{"id": "{{ruleID}}~{{taskID}}", "type": "recipe", "inputs": {{taskInputs}}}'
SERVER_SCRIPT = ("import sys\n"
                 "from cluster.ruleserver import RuleServer\n"
                 "server = RuleServer(bind='127.0.0.1', port=int(sys.argv[1])).start()\n"
                 "print(server.url, flush=True)\n"
                 "sys.stdin.read()\n")


def _add_rule(session: requests.Session, url: str, n_tasks: int) -> str:
    reply = session.post(f"{url}/add_integer_id_rule",
                         params={"max_tasks": n_tasks, "release_start": 0, "release_end": n_tasks},
                         json={"template": TEMPLATE}, timeout=5)
    reply.raise_for_status()
    return reply.json()["ruleID"]


def _complete(session: requests.Session, url: str, rule_id: str, task_ids: list[int],
              status: int = 3) -> None:
    """Do what a worker does: read adverts, bid (buy-now cost), hand in ``status`` (3 = complete)."""
    adverts = session.get(f"{url}/task_advertisements", timeout=5).json()
    assert any(a["ruleID"] == rule_id for a in adverts)
    awards = session.post(f"{url}/bid_on_tasks", timeout=5,
                          json=[{"ruleID": rule_id, "taskIDs": task_ids,
                                 "costs": [0.01] * len(task_ids)}]).json()
    assert awards[0]["taskIDs"] == task_ids
    session.post(f"{url}/handin", timeout=5,
                 json=[{"ruleID": rule_id, "taskIDs": task_ids, "status": [status] * len(task_ids)}]
                 ).raise_for_status()


@pytest.fixture
def watchers():
    """Start watchers through this; every one is stopped (and its thread ended) afterwards."""
    started: list[tuple[StatusWatcher, object]] = []

    def start(watcher: StatusWatcher):
        thread = start_watcher(watcher)
        started.append((watcher, thread))
        return thread

    yield start
    for watcher, thread in started:
        assert stop_watcher(watcher, thread, 10000), "watcher thread did not end"


class _ServerProcess:
    """A rule server in its own process, so that killing it drops every connection like a crash."""

    def __init__(self, port: int):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            self.kill()
            raise RuntimeError(f"rule server on port {port} did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stdin.close()
        self.proc.stdout.close()


def test_watcher_emits_statuses_of_a_real_rule_server(qtbot, rule_server, watchers):
    with requests.Session() as session:
        rule_id = _add_rule(session, rule_server.url, 4)
        watcher = StatusWatcher(rule_server.url, interval_s=0.05)
        seen: list[list[RuleStatus]] = []
        watcher.statusesUpdated.connect(seen.append)
        with qtbot.waitSignal(watcher.reachabilityChanged, timeout=10000) as reach:
            watchers(watcher)
        assert reach.args == [True, rule_server.url]
        qtbot.waitUntil(lambda: bool(seen), timeout=10000)
        first = {s.rule_id: s for s in seen[-1]}[rule_id]
        assert isinstance(first, RuleStatus)
        assert (first.posted, first.completed, first.state) == (4, 0, "waiting")

        _complete(session, rule_server.url, rule_id, [0, 1])
        _complete(session, rule_server.url, rule_id, [2], status=4)

        def counted():
            status = {s.rule_id: s for s in seen[-1]}[rule_id]
            return (status.completed, status.failed) == (2, 1)
        qtbot.waitUntil(counted, timeout=10000)
        # Statuses arrive in the GUI thread (queued), as plain frozen objects.
        assert all(isinstance(s, RuleStatus) for batch in seen for s in batch)


def test_stop_is_safe_from_another_thread(qtbot, rule_server, watchers):
    watcher = StatusWatcher(rule_server.url, interval_s=5.0)
    with qtbot.waitSignal(watcher.statusesUpdated, timeout=10000):
        thread = watchers(watcher)
    with qtbot.waitSignal(watcher.finished, timeout=10000):
        stopper = threading.Thread(target=watcher.stop)
        stopper.start()
        stopper.join()
    assert thread.wait(10000)


def test_unreachable_cluster_shows_and_recovers(qtbot, watchers):
    port = free_port()
    server = _ServerProcess(port)
    model = RuleTableModel()
    view = RuleTableView(model, confirm_abort=False)
    qtbot.addWidget(view)
    view.show()
    try:
        with requests.Session() as session:
            first_rule = _add_rule(session, server.url, 2)
        watcher = StatusWatcher(server.url, interval_s=0.05, timeout_s=2.0)
        reachability: list[tuple[bool, str]] = []
        watcher.reachabilityChanged.connect(lambda ok, why: reachability.append((ok, why)))
        watcher.reachabilityChanged.connect(view.set_reachable)
        watcher.statusesUpdated.connect(model.set_statuses)
        lost: list[list] = []
        watcher.rulesLost.connect(lost.append)
        watchers(watcher)
        qtbot.waitUntil(lambda: model.row_of(first_rule) is not None, timeout=10000)
        assert reachability == [(True, server.url)]

        server.kill()
        qtbot.waitUntil(lambda: reachability[-1][0] is False, timeout=10000)
        assert view.banner.isVisible()
        assert model.row_of(first_rule) is not None  # last state kept while unreachable

        server = _ServerProcess(port)
        with requests.Session() as session:
            second_rule = _add_rule(session, server.url, 3)
        qtbot.waitUntil(lambda: model.row_of(second_rule) is not None, timeout=15000)
        assert reachability[-1] == (True, server.url)
        assert [ok for ok, _ in reachability] == [True, False, True]
        assert not view.banner.isVisible()
        # The restarted server does not know the first rule: it stays, marked as gone.
        assert model.is_gone(first_rule)
        assert model.status(second_rule).posted == 3
        # Said once ("cluster restarted — rules lost"), in the same cycle as the statuses but as a
        # separate queued signal, so it may be delivered a moment after them.
        qtbot.waitUntil(lambda: bool(lost), timeout=5000)
        assert lost == [[first_rule]]
    finally:
        server.kill()


def test_a_bad_server_url_is_reported_not_fatal(qtbot, watchers):
    watcher = StatusWatcher("localhost:5000", interval_s=0.05)
    with qtbot.waitSignals([watcher.errorOccurred, watcher.finished], timeout=10000):
        watchers(watcher)
    assert watcher.reachable is False


def test_a_server_that_never_answers_is_reported_within_10_s(qtbot, watchers):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (in the kernel) and never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        watcher = StatusWatcher(url, interval_s=0.05)
        start = time.monotonic()
        with qtbot.waitSignal(watcher.reachabilityChanged, timeout=10000) as blocker:
            watchers(watcher)
        assert time.monotonic() - start < 10
        assert blocker.args == [False, "no answer (timed out)"]
    finally:
        listener.close()


def test_an_idle_watcher_waits_in_a_long_poll_and_stops_at_once(qtbot, rule_server, watchers):
    """On Spoolside's rule server the watcher long-polls: an idle cluster costs one request per
    ``long_poll_s``, a change arrives at once, and stop() does not wait for the held request."""
    watcher = StatusWatcher(rule_server.url, interval_s=0.05, long_poll_s=30.0)
    seen: list[list[RuleStatus]] = []
    watcher.statusesUpdated.connect(seen.append)
    thread = watchers(watcher)
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=10000)
    qtbot.wait(500)  # ten intervals: a polling watcher would have emitted ten times
    assert len(seen) == 1 and watcher._long_poll
    with requests.Session() as session:
        rule_id = _add_rule(session, rule_server.url, 3)
    qtbot.waitUntil(lambda: len(seen) >= 2 and rule_id in {s.rule_id for s in seen[-1]},
                    timeout=5000)
    t0 = time.monotonic()
    assert stop_watcher(watcher, thread, 5000)
    assert time.monotonic() - t0 < 2.0


def test_status_long_poll_answers_on_a_change_or_after_the_wait(rule_server):
    url = rule_server.url + "/spoolside/status"
    with requests.Session() as session:
        now = session.get(url, timeout=5).json()
        assert now["ok"] is True and now["result"] == {} and now["rules"] == {}
        t0 = time.monotonic()
        same = session.get(url, params={"since": now["version"], "wait": 0.3}, timeout=5).json()
        assert time.monotonic() - t0 >= 0.25 and same["version"] == now["version"]
        rule_id = _add_rule(session, rule_server.url, 2)
        changed = session.get(url, params={"since": now["version"], "wait": 30}, timeout=5).json()
        assert changed["version"] != now["version"] and rule_id in changed["result"]
        assert changed["rules"][rule_id]["parent"] is None
        for bad in ({"since": 1, "wait": "soon"}, {"since": -1}, {"since": 1, "wait": -2}):
            reply = session.get(url, params=bad, timeout=5)
            assert reply.status_code == 400, bad


def test_on_a_pyme_rule_server_the_watcher_polls(qtbot, watchers):
    """PYME's rule server has no status long poll: the watcher polls /distributor/queues."""
    from helpers import pyme_only_rule_server
    server = pyme_only_rule_server().start()
    try:
        with requests.Session() as session:
            rule_id = _add_rule(session, server.url, 2)
        watcher = StatusWatcher(server.url, interval_s=0.05)
        seen: list[list[RuleStatus]] = []
        watcher.statusesUpdated.connect(seen.append)
        watchers(watcher)
        qtbot.waitUntil(lambda: len(seen) >= 3, timeout=10000)
        assert watcher._long_poll is False
        assert [s.rule_id for s in seen[-1]] == [rule_id] and seen[-1][0].state == "waiting"
    finally:
        server.stop()
