"""Live series: release as frames arrive, notify from a spooler, mark complete, the watchdog."""
from __future__ import annotations

import json
import logging
import shutil
import threading

from helpers import ANALYSIS, advert_for, queue_info, wait_for, work

import rules

LIVE = "PYME-CLUSTER://testcluster/live/s1.pcs"


class ListEventLogger:
    def __init__(self):
        self.events = []


class JSONEventLogger:
    def __init__(self):
        self._events = []

    def log(self, name, descr, when):
        self._events.append([name, descr, when])

    def to_JSON(self):
        return json.dumps(self._events)


class TestSpooler:
    """A spooler as ``rules.spooler`` describes it; frames are just counted."""

    __test__ = False

    def __init__(self, pyme_spelling: bool = False, listener: bool = True):
        self.metadata = {"Camera.ADOffset": 100.0, "Camera.ElectronsPerCount": 0.5,
                         "voxelsize.x": 0.1, "voxelsize.y": 0.1}
        self._n = 0
        self._finished = False
        self._listeners = []
        if pyme_spelling:
            self.evtLogger = JSONEventLogger()
            self.evtLogger.log("StartAq", "0", 1.0)
        else:
            self.event_logger = ListEventLogger()
            self.event_logger.events.append(["StartAq", "0", 1.0])
        if listener:
            self.add_frame_listener = self._listeners.append
            self.remove_frame_listener = self._listeners.remove

    def get_n_frames(self):
        return self._n

    def finished(self):
        return self._finished

    def add_frames(self, n):
        self._n += n
        for callback in list(self._listeners):
            callback()

    def finish(self):
        self._finished = True
        for callback in list(self._listeners):
            callback()


def posted(url, rule_id):
    return queue_info(url).get(rule_id, {}).get("tasksPosted", 0)


def test_spooler_notify_releases_and_finish_marks_complete(cluster, rule_server):
    spooler = TestSpooler()
    factory = rules.SpoolLocalLocalizationRuleFactory(analysisMetadata=ANALYSIS, poll_interval=60)
    rule = factory.get_rule({"spooler": spooler, "seriesName": LIVE}).push(cluster)
    url = rule_server.url
    assert rule.releasing and queue_info(url)[rule.rule_id]["tasksPosted"] == 0
    # with a 60 s poll interval only notify() can release these in time
    spooler.add_frames(5)
    wait_for(lambda: posted(url, rule.rule_id) == 5, timeout=5, what="5 released frames")
    spooler.add_frames(7)
    wait_for(lambda: posted(url, rule.rule_id) == 12, timeout=5, what="12 released frames")
    assert work(url, rule.rule_id) == list(range(12))
    assert not queue_info(url)[rule.rule_id]["finished"]  # target is still max_tasks
    spooler.add_frames(3)
    spooler.finish()
    wait_for(lambda: not rule.releasing, timeout=5, what="release loop to end")
    assert rule.loop_error is None and not rule.timed_out_waiting_for_data
    assert work(url, rule.rule_id) == [12, 13, 14]
    status = rule.join(timeout=10, interval=0.05)
    assert status["finished"] and status["tasksCompleted"] == 15
    assert spooler._listeners == []  # the rule unregistered itself
    # the spooler's events went to the results file
    events = wait_for(lambda: _events(cluster, "live/analysis/s1.h5r"), what="events")
    assert [bytes(e) for e in events["EventName"]] == [b"StartAq"]


def _events(cluster, path):
    try:
        table = cluster.data.read_table(path, "Events")
    except (FileNotFoundError, rules.errors.ClusterError):
        return None
    return table if len(table) else None


def test_pyme_event_logger_spelling_and_no_listener(cluster, rule_server):
    spooler = TestSpooler(pyme_spelling=True, listener=False)
    rule = rules.SpoolLocalLocalizationRule(spooler, LIVE, ANALYSIS, cluster=cluster,
                                            poll_interval=0.05).push()
    spooler.add_frames(4)
    wait_for(lambda: posted(rule_server.url, rule.rule_id) == 4, what="polled release")
    spooler.finish()
    wait_for(lambda: not rule.releasing, what="loop end")
    work(rule_server.url, rule.rule_id)
    assert rule.join(timeout=10, interval=0.05)["tasksCompleted"] == 4
    events = wait_for(lambda: _events(cluster, "live/analysis/s1.h5r"), what="events")
    assert events["EventName"][0] == b"StartAq"


def test_finished_spooler_pushes_everything_at_once(cluster, rule_server):
    spooler = TestSpooler()
    spooler.add_frames(6)
    spooler.finish()
    rule = rules.SpoolLocalLocalizationRule(spooler, LIVE, ANALYSIS, cluster=cluster, startAt=2).push()
    assert not rule.releasing
    assert advert_for(rule_server.url, rule.rule_id)["availableTaskIDs"] == [2, 3, 4, 5]
    work(rule_server.url, rule.rule_id)
    assert rule.join(timeout=10, interval=0.05)["tasksCompleted"] == 4


def test_cluster_series_released_as_it_is_spooled(cluster, rule_server, data_root, pyme_fixtures):
    live = data_root / "live" / "s1.pcs"
    live.mkdir(parents=True)
    shutil.copy(pyme_fixtures / "series.pcs" / "metadata.json", live / "metadata.json")
    rule = rules.LocalisationRule(LIVE, ANALYSIS, cluster=cluster, poll_interval=0.05).push()
    assert rule.releasing
    for i in range(3):
        shutil.copy(pyme_fixtures / "series.pcs" / f"frame{i:05d}.pzf", live / f"frame{i:05d}.pzf")
    wait_for(lambda: posted(rule_server.url, rule.rule_id) == 3, what="3 frames released")
    for i in range(3, 8):
        shutil.copy(pyme_fixtures / "series.pcs" / f"frame{i:05d}.pzf", live / f"frame{i:05d}.pzf")
    shutil.copy(pyme_fixtures / "series.pcs" / "events.json", live / "events.json")
    wait_for(lambda: not rule.releasing, what="release loop end")
    assert posted(rule_server.url, rule.rule_id) == 8 and rule.total_frames == 8
    work(rule_server.url, rule.rule_id)
    assert rule.join(timeout=10, interval=0.05)["tasksCompleted"] == 8


def test_watchdog_marks_complete_when_data_stops(cluster, rule_server, caplog):
    spooler = TestSpooler()
    rule = rules.SpoolLocalLocalizationRule(spooler, LIVE, ANALYSIS, cluster=cluster,
                                            poll_interval=0.05, data_timeout=0.5).push()
    spooler.add_frames(2)
    with caplog.at_level(logging.WARNING, logger="rules.rule"):
        wait_for(lambda: not rule.releasing, timeout=10, what="watchdog")
    assert rule.timed_out_waiting_for_data
    assert any("no new data" in r.getMessage() and "data_timeout" in r.getMessage()
               for r in caplog.records)
    work(rule_server.url, rule.rule_id)
    # marked complete at the 2 released tasks, so it finishes
    assert rule.join(timeout=10, interval=0.05)["tasksCompleted"] == 2


def test_cleanup_stops_the_loop_and_abort_inactivates(cluster, rule_server):
    spooler = TestSpooler()
    rule = rules.SpoolLocalLocalizationRule(spooler, LIVE, ANALYSIS, cluster=cluster).push()
    assert rule.releasing
    rule.cleanup()
    assert not rule.releasing
    spooler.add_frames(3)  # nobody listens any more
    assert posted(rule_server.url, rule.rule_id) == 0
    rule.abort()
    assert queue_info(rule_server.url)[rule.rule_id]["active"] is False


def test_notify_from_many_threads_is_safe(cluster, rule_server):
    spooler = TestSpooler()
    rule = rules.SpoolLocalLocalizationRule(spooler, LIVE, ANALYSIS, cluster=cluster,
                                            poll_interval=60).push()
    lock = threading.Lock()

    def spool():
        for _ in range(50):
            with lock:
                spooler.add_frames(1)

    threads = [threading.Thread(target=spool) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: posted(rule_server.url, rule.rule_id) == 200, what="200 frames released")
    spooler.finish()
    wait_for(lambda: not rule.releasing, what="loop end")
    assert advert_for(rule_server.url, rule.rule_id)["availableTaskIDs"] == list(range(200))
