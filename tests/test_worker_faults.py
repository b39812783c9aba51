"""Workers killed, frozen or orphaned: leases, refused late hand-ins, exact counts, parent death.

The rule-server cases run on a real server with a controlled clock; the worker cases on real
worker processes (``kill -9``, ``SIGSTOP``/``SIGCONT``) of a real cluster of one.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import helpers
import numpy as np
import pytest
import requests

from cluster.local import start_local_cluster
from cluster.simulator import SampleModel, SimulatedAcquisition
from rules import Cluster, LocalisationRuleFactory, nameservice
from rules.metadata import MetaDataHandler

pytestmark = pytest.mark.skipif(os.name != "posix", reason="kill/SIGSTOP of worker processes")

ANALYSIS = {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
            "Analysis.BGRange": [-10, 0], "Analysis.StartAt": 10}


# -- the rule server on its own (controlled clock) ---------------------------------------------
def _rule(url, n=4):
    reply = requests.post(url + "/add_integer_id_rule",
                          params={"max_tasks": n, "release_start": 0, "release_end": n},
                          data=json.dumps({"template": "{}"}), timeout=10)
    return reply.json()["ruleID"]


def _bid(url, rule_id, ids, worker=None, cost=0.01):
    bid = {"ruleID": rule_id, "taskIDs": ids, "costs": [cost] * len(ids)}
    if worker:
        bid["worker"] = worker
    return requests.post(url + "/bid_on_tasks", json=[bid], timeout=10).json()[0]["taskIDs"]


def _handin(url, rule_id, ids, worker=None):
    entry = {"ruleID": rule_id, "taskIDs": ids, "status": [3] * len(ids)}
    if worker:
        entry["worker"] = worker
    requests.post(url + "/handin", json=[entry], timeout=10).raise_for_status()


def _after(table, now, seconds):
    now[0] += seconds
    ticks = table.ticks
    helpers.wait_for(lambda: table.ticks >= ticks + 2)


def test_leases_requeue_a_silent_workers_tasks_and_refuse_its_late_handin(rule_server):
    url, table = rule_server.url, rule_server.table
    now = [time.time()]
    table.clock = lambda: now[0]
    rid = _rule(url)
    assert _bid(url, rid, [0, 1], worker="frozen") == [0, 1]
    assert _bid(url, rid, [2, 3], worker="alive") == [2, 3]
    for _ in range(4):  # "alive" keeps renewing, "frozen" is silent
        _after(table, now, table.lease / 2)
        reply = requests.post(url + "/spoolside/heartbeat", params={"worker": "alive"}, timeout=10)
        assert reply.json()["lease"] == table.lease
    info = helpers.queue_info(url)[rid]
    assert info["tasksRunning"] == 2 and info["tasksTimedOut"] == 2  # 0, 1 back in the queue
    assert _bid(url, rid, [0, 1], worker="other") == [0, 1]
    _handin(url, rid, [0, 1], worker="frozen")  # wakes up late: refused, the re-run counts
    info = helpers.queue_info(url)[rid]
    assert info["tasksCompleted"] == 0 and info["tasksRefusedLate"] == 2
    _handin(url, rid, [0, 1], worker="other")
    _handin(url, rid, [2, 3], worker="alive")
    info = helpers.queue_info(url)[rid]
    assert info["tasksCompleted"] == 4 and info["finished"] and info["tasksRefusedLate"] == 2
    # a dead worker's tasks are re-queued at once
    rid2 = _rule(url, 2)
    assert _bid(url, rid2, [0, 1], worker="dies") == [0, 1]
    assert table.worker_gone("dies") == 2
    assert helpers.queue_info(url)[rid2]["tasksRunning"] == 0
    assert table.worker_gone("never-seen") == 0


def test_a_late_bid_does_not_revive_a_finished_rule(rule_server):
    url, table = rule_server.url, rule_server.table
    now = [time.time()]
    table.clock = lambda: now[0]
    rid = _rule(url, 2)
    _handin(url, rid, _bid(url, rid, [0, 1]))
    assert helpers.queue_info(url)[rid]["finished"]
    _after(table, now, 30)
    for cost in (0.01, 5.0):  # fast path and auction
        assert _bid(url, rid, [0, 1], cost=cost) == []
    _after(table, now, 35)
    assert rid not in helpers.queue_info(url)


def test_idle_workers_long_poll_for_adverts(rule_server):
    url = rule_server.url
    started = time.monotonic()
    assert requests.get(url + "/task_advertisements", params={"wait": 0.5}, timeout=10).json() == []
    assert time.monotonic() - started >= 0.45
    got = {}

    def poll():
        t0 = time.monotonic()
        got["adverts"] = requests.get(url + "/task_advertisements", params={"wait": 20},
                                      timeout=30).json()
        got["waited"] = time.monotonic() - t0

    import threading
    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    # others are answered while the long poll waits
    assert requests.get(url + "/distributor/queues", timeout=2).status_code == 200
    rid = _rule(url, 3)
    thread.join(10)
    assert [a["ruleID"] for a in got["adverts"]] == [rid] and got["waited"] < 2
    assert requests.get(url + "/task_advertisements", params={"wait": "x"},
                        timeout=10).status_code == 400


# -- real worker processes ------------------------------------------------------------------
def _simulate(engine, name, frames):
    acquisition = SimulatedAcquisition(engine.data, name, frames=frames, fps=5000.0, size=96,
                                       seed=3, serverfilter=engine.serverfilter,
                                       sample=SampleModel(emitters_per_frame=8))
    acquisition.run()
    return acquisition.series_uri


def _analyse(engine, series, output):
    md = dict(ANALYSIS)
    rule = LocalisationRuleFactory(analysisMetadata=MetaDataHandler(md)).get_rule(
        context={"seriesName": series, "resultsFilename": f"{output}/s.h5r"})
    rule.push(cluster=engine)
    return rule


def _rows(engine, path):
    rows = engine.data.read_table(path, "FitResults")
    return len(rows), len(np.unique(rows))


@pytest.fixture
def faulty_cluster(tmp_path):
    with start_local_cluster(tmp_path / "root", workers=1, serverfilter="faults", lease=2.0,
                             task_timeout=120) as lc, \
            Cluster(lc.ruleserver_url, lc.dataserver_url, serverfilter="faults") as engine:
        yield lc, engine


def _holding(lc, rule_id):
    return helpers.wait_for(lambda: helpers.queue_info(lc.ruleserver_url)[rule_id]["tasksRunning"],
                            30, "a worker holding tasks", interval=0.005)


def test_killed_and_frozen_workers_rerun_fast_with_exact_rows(faulty_cluster, tmp_path):
    lc, engine = faulty_cluster
    frames = 256
    series = _simulate(engine, "kill/s", frames)
    reference = _analyse(engine, series, "ref")
    reference.join(timeout=120)
    expected = _rows(engine, "ref/s.h5r")
    assert expected[0] == expected[1] > 0

    # kill -9 the worker while it holds a batch: re-run within 5 s, rows exact
    rule = _analyse(engine, series, "killed")
    _holding(lc, rule.rule_id)
    victim = lc.pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    helpers.wait_for(lambda: helpers.queue_info(lc.ruleserver_url)[rule.rule_id]["tasksTimedOut"], 5,
                     "the killed worker's tasks to be re-queued")
    helpers.wait_for(lambda: lc.pool.pids[0] != victim and
                     helpers.queue_info(lc.ruleserver_url)[rule.rule_id]["tasksRunning"], 10,
                     "a new worker re-running them", interval=0.01)
    rerun_after_kill = time.monotonic() - killed_at
    rule.join(timeout=120)
    status = rule.status()
    assert status["tasksCompleted"] == frames and status["tasksFailed"] == 0
    assert _rows(engine, "killed/s.h5r") == expected
    assert rerun_after_kill < 5

    # SIGSTOP the worker while it holds a batch: another worker re-runs it after the lease;
    # the frozen one, woken after the rule finished, files and hands in late: both ignored
    rule = _analyse(engine, series, "frozen")
    _holding(lc, rule.rule_id)
    frozen = lc.pool.pids[0]
    os.kill(frozen, signal.SIGSTOP)
    frozen_at = time.monotonic()
    helper = subprocess.Popen([sys.executable, "-m", "cluster.worker", "--ruleserver",
                               lc.ruleserver_url, "--dataserver", lc.dataserver_url, "--root",
                               str(lc.root), "--serverfilter", "faults", "--worker-id", "helper"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        helpers.wait_for(lambda: helpers.queue_info(lc.ruleserver_url)[rule.rule_id]["tasksTimedOut"],
                         15, "the frozen worker's tasks to be re-queued")
        requeued_after_freeze = time.monotonic() - frozen_at
        rule.join(timeout=120)
        os.kill(frozen, signal.SIGCONT)
        helpers.wait_for(lambda: helpers.queue_info(lc.ruleserver_url)[rule.rule_id]
                         ["tasksRefusedLate"], 30, "the late hand-in")
    finally:
        os.kill(frozen, signal.SIGCONT)
        helper.terminate()
        helper.wait(30)
    status = rule.status()
    assert status["tasksCompleted"] == frames and status["tasksFailed"] == 0
    assert _rows(engine, "frozen/s.h5r") == expected
    assert requeued_after_freeze < 15
    print(f"re-run {rerun_after_kill:.2f} s after kill -9, re-queued {requeued_after_freeze:.2f} s "
          f"after SIGSTOP; rows {expected[0]} as expected")


def test_workers_and_name_service_rows_do_not_outlive_a_killed_cluster(tmp_path):
    code = f"""
import sys, time
from cluster.local import start_local_cluster
lc = start_local_cluster({str(tmp_path / 'root')!r}, workers=1, serverfilter="orphan",
                         register=True)
print(lc.pool.pids[0], flush=True)
time.sleep(120)
"""
    (tmp_path / "ns").mkdir()
    env = dict(os.environ, PYTHONPATH=os.getcwd(), **{nameservice.DIRECTORY_ENV: str(tmp_path / "ns")})
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        worker = int(parent.stdout.readline())
        os.environ[nameservice.DIRECTORY_ENV] = str(tmp_path / "ns")  # restored by conftest
        assert nameservice.services(nameservice.RULESERVER_SERVICE)
    finally:
        parent.kill()
        parent.wait(10)

    def gone():
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{worker}/stat") as stat:  # a zombie awaiting its (dead) parent
            return stat.read().split(") ")[1].startswith("Z")

    helpers.wait_for(gone, 10, "the orphaned worker to exit")
    for service in (nameservice.RULESERVER_SERVICE, nameservice.DATASERVER_SERVICE):
        assert nameservice.services(service) == {}
        with sqlite3.connect(tmp_path / "ns" / f"{service}.sqlite") as db:
            assert db.execute("SELECT count(*) FROM dns").fetchone() == (0,)


DATA_SERVER_SCRIPT = ("import sys\n"
                      "from cluster.dataserver import DataServer\n"
                      "server = DataServer(sys.argv[1], port=int(sys.argv[2]), "
                      "serverfilter='outage').start()\n"
                      "print(server.url, flush=True)\n"
                      "sys.stdin.read()\n")


def _data_server_process(root, port):
    proc = subprocess.Popen([sys.executable, "-c", DATA_SERVER_SCRIPT, str(root), str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip().endswith(f":{port}")
    return proc


def test_a_data_server_outage_mid_run_loses_nothing(rule_server, tmp_path):
    """The data server process dies with an analysis pushed and comes back 10 s later on the same
    port and root: a worker without local access to the data (an analysis PC), taking the tasks
    during the outage, waits through it reading frames with backoff; every frame is analysed
    once, nothing fails."""
    from cluster.http_base import free_port
    from cluster.local import WorkerPool
    root, port = tmp_path / "root", free_port()
    root.mkdir()
    server = _data_server_process(root, port)
    pool = None
    try:
        data_url = f"http://127.0.0.1:{port}"
        with Cluster(rule_server.url, data_url, serverfilter="outage") as engine:
            frames = 128
            series = _simulate(engine, "outage/s", frames)
            rule = _analyse(engine, series, "outage")
            server.kill()
            server.wait(10)
            down_at = time.monotonic()
            pool = WorkerPool(1, rule_server.url, data_url, None, "outage").start()  # no root
            helpers.wait_for(lambda: helpers.queue_info(rule_server.url)[rule.rule_id]
                             ["tasksRunning"] > 0, 60, "the worker taking tasks in the outage")
            time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
            info = helpers.queue_info(rule_server.url)[rule.rule_id]
            assert (info["tasksCompleted"], info["tasksFailed"]) == (0, 0)
            server = _data_server_process(root, port)
            rule.join(timeout=120)
            status = rule.status()
            assert (status["tasksCompleted"], status["tasksFailed"]) == (frames, 0)
            reference = _analyse(engine, series, "ref")
            reference.join(timeout=120)
            expected = _rows(engine, "ref/s.h5r")
            assert expected[0] == expected[1] > 0
            assert _rows(engine, "outage/s.h5r") == expected
    finally:
        if pool is not None:
            pool.stop()
        server.kill()
        server.wait(10)
        server.stdin.close()
        server.stdout.close()
