"""``spoolside worker``: worker processes on another PC join a cluster, stop on SIGTERM and give up
when the cluster is gone for good."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from helpers import wait_for

from rules import Cluster, LocalisationRuleFactory
from rules.metadata import MetaDataHandler


def _start_worker_command(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _pids(first_line: str) -> list[int]:
    return [int(p) for p in re.search(r"PIDs ([\d, ]+)\)", first_line).group(1).split(", ")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_command_analyses_for_a_cluster_and_stops_on_sigterm(rule_server, data_server,
                                                                    data_root, pyme_fixtures,
                                                                    tmp_path):
    import shutil

    from cluster.dataserver import DataServer
    shutil.copytree(pyme_fixtures / "series_huffman.pcs", data_root / "pyme" / "series_huffman.pcs")
    # a cluster of two data servers: the series is on the second one listed
    (tmp_path / "other_root").mkdir()
    first_server = DataServer(tmp_path / "other_root").start()
    urls = [first_server.url, data_server.url]
    process = _start_worker_command("--server", rule_server.url, "--dataserver", ",".join(urls),
                                    "--workers", "2")
    try:
        first = process.stdout.readline()
        pids = _pids(first)
        assert len(pids) == 2 and rule_server.url in first
        assert f"data from {urls[0]}, {urls[1]}" in first
        with Cluster(rule_server.url, urls, serverfilter="testcluster") as engine:
            rule = LocalisationRuleFactory(analysisMetadata=MetaDataHandler(
                {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
                 "Analysis.BGRange": [-10, 0]})).get_rule(
                context={"seriesName": "PYME-CLUSTER://testcluster/pyme/series_huffman.pcs"})
            rule.push(cluster=engine)
            rule.join(timeout=90)
            assert rule.status()["tasksCompleted"] == 8
            assert len(engine.data.read_table("pyme/analysis/series_huffman.h5r", "FitResults")) == 24
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        first_server.stop()
    assert process.returncode == 0, err
    assert "workers stopped" in out
    assert not any(_alive(pid) for pid in pids)


def test_worker_command_exits_when_the_cluster_is_gone_for_good(data_server):
    from cluster.ruleserver import RuleServer

    server = RuleServer(bind="127.0.0.1", port=0).start()
    process = _start_worker_command("--server", server.url, "--dataserver", data_server.url,
                                    "--workers", "1", "--give-up", "1", "--check-interval", "0.2",
                                    "--low-priority")
    try:
        pids = _pids(process.stdout.readline())
        lowered = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        wait_for(lambda: os.getpriority(os.PRIO_PROCESS, pids[0]) == lowered, 30,
                 "the worker below normal priority")
        server.stop()
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1
    assert "lost the cluster" in err and server.url in err
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize("args, words", [
    (["--server", "http://127.0.0.1:9", "--dataserver", "http://127.0.0.1:9"],
     "cannot reach the rule server"),
    (["--server", "http://127.0.0.1:9", "--dataserver", "http://127.0.0.1:9", "--workers", "0"],
     "--workers must be 1 or more"),
])
def test_worker_command_refuses_a_cluster_it_cannot_reach(args, words):
    process = _start_worker_command(*args)
    out, err = process.communicate(timeout=30)
    assert process.returncode != 0 and words in err
