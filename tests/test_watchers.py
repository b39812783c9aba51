"""RuleStatus, fetch_statuses, RuleWatcher and RuleGroupWatcher against the embedded rule server."""
from __future__ import annotations

import dataclasses
import socket
import threading

import pytest
import requests
from helpers import FAILED, SERIES, followon, run_fresh_python, wait_for, work

import rules
from rules.ruleserver_client import RuleServerClient, make_session
from rules.watchers import RuleStatus, fetch_statuses

INFO = {"tasksPosted": 10, "tasksRunning": 2, "tasksCompleted": 5, "tasksFailed": 1,
        "averageExecutionCost": 0.01, "active": True, "tasksTimedOut": 3,
        "tasksCompleteAfterTimeout": 1, "finished": False, "expired": False}


def status(**changes):
    info = dict(INFO)
    info.update(changes)
    return RuleStatus.from_info("000001-abc", info)


def test_rule_status_fields_and_states():
    s = status()
    assert (s.rule_id, s.posted, s.running, s.completed, s.failed, s.timed_out,
            s.complete_after_timeout, s.average_cost, s.active, s.finished, s.expired,
            s.parent_id, s.reachable) == ("000001-abc", 10, 2, 5, 1, 3, 1, 0.01, True, False, False,
                                          None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.posted = 3
    assert s.state == "running"
    assert status(tasksRunning=0, tasksCompleted=0, tasksFailed=0).state == "waiting"
    assert status(finished=True, tasksFailed=0).state == "finished"
    assert status(finished=True).state == "failed"
    assert status(active=False).state == "aborted"
    assert status(expired=True).state == "expired"
    assert {status(**c).state for c in ({}, {"tasksRunning": 0, "tasksCompleted": 0, "tasksFailed": 0},
                                        {"finished": True, "tasksFailed": 0}, {"finished": True},
                                        {"active": False}, {"expired": True})} == set(
        rules.watchers.STATES)
    assert RuleStatus.from_info("x", {}, parent_id="p").parent_id == "p"
    assert RuleStatus.from_info("x", {"tasksPosted": "junk"}).posted == 0


def recipe(cluster, n=1, chain=None):
    factory = rules.RecipeRuleFactory(recipe="- a: b\n", inputs={"input": [SERIES] * n})
    if chain:
        factory.chain(rules.RecipeRuleFactory(recipe="- c: d\n"))
    return factory.get_rule({}).push(cluster)


def test_fetch_statuses_with_parents(cluster, rule_server):
    parent = recipe(cluster, chain=True)
    other = recipe(cluster, n=3)
    work(rule_server.url, parent.rule_id)
    child = followon(rule_server.url, parent.rule_id)
    with RuleServerClient(rule_server.url) as client:
        statuses = fetch_statuses(client)
    by_id = {s.rule_id: s for s in statuses}
    assert [s.rule_id for s in statuses] == sorted(by_id)
    assert by_id[parent.rule_id].state == "finished"
    assert by_id[child].parent_id == parent.rule_id and by_id[child].state == "waiting"
    assert by_id[other.rule_id].posted == 3


def test_rule_watcher_one_thread_many_rules(cluster, rule_server):
    first, second = recipe(cluster), recipe(cluster, n=2)
    seen: dict[str, list[RuleStatus]] = {first.rule_id: [], second.rule_id: []}
    def watcher_threads() -> int:  # the in-process servers' connection threads come and go
        return sum(t.name == "RuleWatcher" for t in threading.enumerate())

    before = watcher_threads()
    watcher = rules.RuleWatcher(interval=0.05)
    try:
        watcher.watch(first, seen[first.rule_id].append)
        second.watch(watcher, seen[second.rule_id].append)
        assert watcher_threads() == before + 1
        wait_for(lambda: seen[first.rule_id] and seen[second.rule_id], what="first callbacks")
        work(rule_server.url, first.rule_id)
        work(rule_server.url, second.rule_id, status=FAILED, ids=[0])
        work(rule_server.url, second.rule_id)
        wait_for(lambda: not watcher.watching, what="both rules done")
        assert seen[first.rule_id][-1].state == "finished"
        assert seen[second.rule_id][-1].state == "failed"
        assert all(isinstance(s, RuleStatus) for s in seen[first.rule_id])
    finally:
        watcher.stop()
    wait_for(lambda: watcher_threads() == before, what="watcher thread to end")


def test_rule_watcher_reports_unreachable(cluster, rule_server, data_server):
    rule = recipe(cluster)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rule._cluster = rules.Cluster(f"http://127.0.0.1:{port}", data_server.url)
    got = []
    watcher = rules.RuleWatcher(interval=0.05, timeout=1)
    try:
        watcher.watch(rule, got.append)
        wait_for(lambda: got, what="a callback")
        assert got[0].reachable is False and rule.rule_id in watcher.watching
    finally:
        watcher.stop()


def test_rule_watcher_holds_on_through_a_restart():
    """While the server is away a rule keeps its last state (marked unreachable, never "aborted");
    after a restart that lost it, it is reported gone ("expired") once and forgotten."""
    from cluster.ruleserver import RuleServer
    server = RuleServer().start()
    port = server.port
    got: list[RuleStatus] = []
    watcher = rules.RuleWatcher(interval=0.05, ruleserver=server.url)
    try:
        with RuleServerClient(server.url) as client:
            rule_id = client.add_rule({"template": "{}"}, max_tasks=2, release_start=0, release_end=2)
        watcher.watch(rule_id, got.append)
        work(server.url, rule_id, ids=[0])
        wait_for(lambda: got and got[-1].state == "running", what="running")
        server.stop()
        wait_for(lambda: not got[-1].reachable, what="an unreachable report")
        assert got[-1].state == "running" and not got[-1].terminal
        assert rule_id in watcher.watching
        server = RuleServer(port=port).start()
        wait_for(lambda: not watcher.watching, what="the lost rule to be dropped")
        assert got[-1].reachable and got[-1].state == "expired"
        assert all(s.state != "aborted" for s in got)
    finally:
        watcher.stop()
        server.stop()


def test_group_watcher_one_request_per_poll(cluster, rule_server):
    ruleset = [recipe(cluster) for _ in range(20)]
    session = make_session()
    requests_seen = []
    session.hooks["response"].append(lambda r, *a, **k: requests_seen.append(r.request.path_url))
    watcher = rules.RuleGroupWatcher(interval=0.05, session=session, autostart=False)
    for rule in ruleset:
        watcher.watch(rule)
    assert not watcher._thread  # autostart=False: nothing running yet
    result = watcher.poll_once()
    assert requests_seen == ["/distributor/queues"]
    assert [s.rule_id for s in result[rule_server.url]] == [r.rule_id for r in ruleset]

    batches = []
    watcher.add_callback(batches.append)
    work(rule_server.url, ruleset[0].rule_id)
    watcher.start()
    try:
        wait_for(lambda: len(batches) >= 2, what="two polls")
        assert all(len(b) == 20 for b in batches)
        wait_for(lambda: watcher.latest[ruleset[0].rule_id].state == "finished", what="finished")
        polls = len(batches) + 1
        assert len(requests_seen) <= polls + 1  # one queue request per poll, whatever the rule count
    finally:
        watcher.stop()
    assert "<table>" in watcher.html() and ruleset[0].rule_id in watcher.html()
    session.close()


def test_group_watcher_display_needs_ipython():
    code = ("import sys, rules.watchers\n"
            "assert 'IPython' not in sys.modules\n"
            "w = rules.watchers.RuleGroupWatcher(autostart=False)\n"
            "try:\n    import IPython\n    has = True\nexcept ImportError:\n    has = False\n"
            "if not has:\n    assert w.register() is False\n"
            )
    run_fresh_python(code)


def test_watch_by_rule_id_on_given_server(cluster, rule_server):
    rule = recipe(cluster)
    got = []
    with rules.RuleWatcher(interval=0.05, ruleserver=rule_server.url) as watcher:
        watcher.watch(rule.rule_id, got.append)
        wait_for(lambda: got, what="callback")
    assert got[0].rule_id == rule.rule_id and got[0].posted == 1
    assert requests.get(rule_server.url + "/distributor/queues", timeout=5).ok
