"""Following a whole chain on any rule server (Spoolside's, and one with only PYME's endpoints),
through retention, restarts and failures; real servers on loopback ports, real worker processes."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from helpers import pyme_only_rule_server, wait_for, work

from rules.chainwatch import ChainWatch, chain_followons
from rules.cli import run_launch, watch_chain
from rules.connection import Cluster
from rules.errors import ClusterUnreachable
from rules.ruleserver_client import RuleServerClient


def template(name: str) -> str:
    return json.dumps({"id": "{{ruleID}}~{{taskID}}", "type": "recipe", "inputs": {"name": name},
                       "taskdef": {"recipe": "[]"}})


CHAIN = {"template": template("one"),
         "on_completion": {"template": template("two"), "max_tasks": 1,
                           "on_completion": {"template": template("three"), "max_tasks": 2}}}


@pytest.fixture
def pyme_server():
    server = pyme_only_rule_server().start()
    yield server
    server.stop()


def push(client: RuleServerClient, spec: dict = CHAIN, n: int = 2) -> str:
    rule_id = client.add_rule(spec, max_tasks=n, release_start=0, release_end=n)
    client.mark_release_complete(rule_id)
    return rule_id


def test_followons_recognised_without_the_followon_endpoint(pyme_server):
    url = pyme_server.url
    with RuleServerClient(url) as client:
        assert client.followon_ids("x") is None  # the server really lacks the endpoint
        root = push(client)
        watch = ChainWatch(client, root, chain_followons(CHAIN))
        work(url, root, ids=[0])
        progress = watch.poll()
        assert [s.state for s in progress.statuses] == ["running"] and progress.outcome is None
        # listed later than the parent's last unfinished listing, one task posted, advertised
        # with another template: not the follow-on
        other = client.add_rule({"template": template("other")}, max_tasks=1, release_start=0,
                                release_end=1)
        work(url, root, ids=[1])  # step 1 finished: the server creates step 2 ...
        same = client.add_rule({"template": template("two")}, max_tasks=1, release_start=0,
                               release_end=1)  # ... before this look-alike (larger ID counter)
        step2 = pyme_server.table.followons(root)[0]
        progress = watch.poll()
        assert watch.followon_endpoint is False
        assert watch.chain == [root, step2] and other not in watch.chain and same not in watch.chain
        assert [s.state for s in progress.statuses] == ["finished", "waiting"]

        work(url, step2)
        step3 = pyme_server.table.followons(step2)[0]
        work(url, step3)  # taken at once: no advert left to compare templates with
        client.add_rule({"template": template("decoy")}, max_tasks=2, release_start=0,
                        release_end=2)
        progress = watch.poll()
        assert watch.chain == [root, step2, step3]
        assert progress.outcome == "finished" and progress.ok
        assert [s.state for s in progress.statuses] == ["finished"] * 3


def test_followon_watched_past_its_parents_retention(pyme_server):
    """Step 2 still running more than 60 s after step 1 finished is a healthy chain."""
    table = pyme_server.table
    offset = [0.0]
    table.clock = lambda: time.time() + offset[0]
    spec = {"template": template("one"), "on_completion": {"template": template("two"), "max_tasks": 2}}
    with RuleServerClient(pyme_server.url) as client:
        root = push(client, spec)
        watch = ChainWatch(client, root, chain_followons(spec))
        watch.poll()
        work(pyme_server.url, root)
        step2 = table.followons(root)[0]
        work(pyme_server.url, step2, ids=[0])
        offset[0] = 61.0   # step 1's 60 s retention has passed: listed expired, then dropped
        assert client.queue_info()[root]["expired"] is True
        assert [s.state for s in watch.poll().statuses] == ["finished", "running"]
        table.tick()
        assert root not in client.queue_info()
        progress = watch.poll()
        assert [s.state for s in progress.statuses] == ["finished", "running"]
        assert progress.outcome is None
        work(pyme_server.url, step2, ids=[1])
        assert watch.poll().outcome == "finished"


@pytest.mark.parametrize("pyme_only", [False, True])
def test_restarted_cluster_reported_as_rules_lost(pyme_only):
    """The rule server killed and started again on the same port: one line while it is away,
    then "cluster restarted — rules lost" (its rules are gone), exit status false."""
    from cluster.ruleserver import RuleServer
    make = pyme_only_rule_server if pyme_only else RuleServer
    server = make().start()
    port = server.port
    cluster = Cluster(server.url, "http://127.0.0.1:1", serverfilter="t")
    out = io.StringIO()
    try:
        root = push(cluster.rules)
        work(server.url, root, ids=[0])
        result = []
        thread = threading.Thread(target=lambda: result.append(
            watch_chain(cluster, root, chain_followons(CHAIN), interval=0.05, timeout=30, out=out)))
        thread.start()
        wait_for(lambda: "running" in out.getvalue(), what="the first progress line")
        server.stop()
        wait_for(lambda: "not answering" in out.getvalue(), what="the outage line")
        server = make(port=port).start()
        thread.join(30)
    finally:
        server.stop()
        cluster.close()
    text = out.getvalue()
    assert result == [False], text
    assert "connection refused); still trying" in text and "answering again" in text
    assert "cluster restarted — rules lost (step 1" in text
    assert text.count("not answering") == 1


def test_unanswered_polls_end_nothing(rule_server):
    """Unanswered polls alone end nothing: a watch carries on where the rules still exist."""
    with RuleServerClient(rule_server.url) as client:
        root = push(client)
        watch = ChainWatch(client, root, chain_followons(CHAIN))
        watch.poll()
        with RuleServerClient(f"http://127.0.0.1:{_closed_port()}") as dead:
            watch.client = dead
            with pytest.raises(ClusterUnreachable):
                watch.poll()
        watch.client = client
        assert watch.poll().outcome is None
        work(rule_server.url, root)
        progress = watch.poll()
        assert len(progress.statuses) == 2 and progress.outcome is None


def test_a_step_dropped_during_an_outage_counts_as_finished_when_its_followon_exists(rule_server):
    """The watch could not look while step 1 finished and its retention passed: Spoolside's server
    still names the follow-on, so step 1 had finished and the chain carries on."""
    table = rule_server.table
    offset = [0.0]
    table.clock = lambda: time.time() + offset[0]
    with RuleServerClient(rule_server.url) as client:
        root = push(client)
        watch = ChainWatch(client, root, chain_followons(CHAIN))
        assert [s.state for s in watch.poll().statuses] == ["waiting"]
        with RuleServerClient(f"http://127.0.0.1:{_closed_port()}") as dead:
            watch.client = dead
            with pytest.raises(ClusterUnreachable):
                watch.poll()
        work(rule_server.url, root)
        offset[0] = 61.0
        table.tick()
        assert root not in client.queue_info()
        watch.client = client
        progress = watch.poll()
        assert progress.outcome is None, progress.message
        assert [s.state for s in progress.statuses] == ["finished", "waiting"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_launch_watch_names_the_failed_step_and_prints_its_log(tmp_path, data_server, capsys):
    """``launch --watch`` on a server with only PYME's endpoints and a real worker process: both
    steps of a chain with a broken recipe fail; each is named with the first lines of its log."""
    from rules import RecipeRuleFactory
    from rules.presets import save_preset
    server = pyme_only_rule_server().start()
    worker = subprocess.Popen([sys.executable, "-m", "cluster.worker", "--ruleserver", server.url,
                               "--dataserver", data_server.url, "--serverfilter", "testcluster"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = RecipeRuleFactory(recipe="- nosuchmodule.Thing: {}\n")
        first.chain(RecipeRuleFactory(recipe="- anothermissing.Thing: {}\n"))
        preset = tmp_path / "broken.yaml"
        save_preset(preset, first)
        code = run_launch([str(preset), "--series", "PYME-CLUSTER://testcluster/x/s.pcs",
                           "--server", server.url, "--dataserver", data_server.url,
                           "--serverfilter", "testcluster", "--watch", "--interval", "0.2",
                           "--timeout", "60"])
    finally:
        worker.terminate()
        worker.wait(10)
        server.stop()
    out = capsys.readouterr().out
    assert code == 1, out
    assert "watching the first step only" not in out
    for step in (1, 2):
        assert f"step {step} " in out and "): 1 of 1 tasks failed" in out
    assert out.count("first lines of LOGS/rules/") == 2
    assert "| === task" in out and "nosuchmodule" in out and "anothermissing" in out
    assert out.rstrip().endswith("chain failed")


def test_launch_fails_within_10_s_on_a_server_that_never_answers(tmp_path, capsys):
    from rules import RecipeRuleFactory
    from rules.presets import save_preset
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (in the kernel) and never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    preset = tmp_path / "p.yaml"
    save_preset(preset, RecipeRuleFactory(recipe="- a: b\n"))
    try:
        start = time.monotonic()
        code = run_launch([str(preset), "--series", "PYME-CLUSTER://t/x/s.pcs", "--server", url,
                           "--dataserver", url, "--watch"])
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    err = capsys.readouterr().err
    assert code == 1 and elapsed < 10, (elapsed, err)
    assert err.count("\n") == 1 and url in err and "no answer" in err
