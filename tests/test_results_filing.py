"""Results reach the ``.h5r`` once and the file survives faults: task identities on appends,
crash-safe writes, a full disk (a real small file system), readable modes, freed locks."""
from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import requests

from cluster import h5r, h5r_shadow
from cluster.dataserver import DataServer
from cluster.tasks import ClusterFiles, TaskError, TaskRunner
from rules.dataserver_client import DataClient

DTYPE = np.dtype([("tIndex", "<i4"), ("x", "<f4")])


def _rows(frames, per_frame=3):
    out = np.zeros(len(frames) * per_frame, DTYPE)
    out["tIndex"] = np.repeat(frames, per_frame)
    out["x"] = np.arange(len(out))
    return out


def _npy(records) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, records)
    return buffer.getvalue()


def _put(url, records, rule="r1", counts=None):
    headers = {}
    if counts is not None:
        headers = {"X-Spoolside-Rule": rule,
                   "X-Spoolside-Task-Rows": ",".join(f"{t}:{n}" for t, n in counts)}
    return requests.put(url, data=_npy(records), headers=headers, timeout=10)


def test_a_refiled_task_lands_once_whatever_the_batching(data_root, data_server):
    url = data_server.url + "/__aggregate_h5r/a/r.h5r/FitResults"
    assert _put(url, _rows([0, 1, 2]), counts=[(0, 3), (1, 3), (2, 3)]).status_code == 200
    # the same batch again (a worker killed before its hand-in, re-run) and an overlapping one
    assert _put(url, _rows([0, 1, 2]), counts=[(0, 3), (1, 3), (2, 3)]).status_code == 200
    assert _put(url, _rows([2, 3]), counts=[(2, 3), (3, 3)]).status_code == 200
    rows = h5r.read_table(data_root / "a" / "r.h5r", "FitResults")
    assert sorted(rows["tIndex"].tolist()) == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # another rule's tasks with the same IDs are its own
    assert _put(url, _rows([0]), rule="r2", counts=[(0, 3)]).status_code == 200
    assert len(h5r.read_table(data_root / "a" / "r.h5r", "FitResults")) == 15
    assert h5r.filed_tasks(data_root / "a" / "r.h5r", "FitResults", "r1") == {0, 1, 2, 3}
    # PYME's readers see only the tables
    assert h5r.list_tables(data_root / "a" / "r.h5r") == ["FitResults"]


def test_task_rows_that_do_not_match_the_batch_are_refused(data_root, data_server):
    url = data_server.url + "/__aggregate_h5r/b/r.h5r/FitResults"
    for counts, needle in (([(0, 2)], "add up to 2"), ([(0, "x")], "task rows"),
                           ([(0, 3), (0, 3)], "twice")):
        reply = _put(url, _rows([0]), counts=counts)
        assert reply.status_code == 400 and needle in reply.json()["error"], reply.text
    reply = requests.put(url, data=_npy(_rows([0])), headers={"X-Spoolside-Rule": "r"}, timeout=10)
    assert reply.status_code == 400 and "both" in reply.json()["error"]
    assert not (data_root / "b" / "r.h5r").exists()


def test_results_files_are_readable_and_file_locks_are_freed(data_root, data_server):
    url = data_server.url + "/__aggregate_h5r/m/r.h5r/"
    assert requests.put(url + "MetaData", json={"A.b": 1}, timeout=10).status_code == 200
    assert _put(url + "FitResults", _rows([0])).status_code == 200
    mode = stat.S_IMODE(os.stat(data_root / "m" / "r.h5r").st_mode)
    assert mode == 0o644
    assert data_server._locks == {}
    # the hidden shadow copy (one change behind) is never listed, and goes once the file is idle
    assert list(requests.get(data_server.url + "/m/", timeout=10).json()) == ["r.h5r"]
    h5r_shadow.drop_idle(0)
    assert [p.name for p in (data_root / "m").iterdir()] == ["r.h5r"]  # no temporary left


def test_a_write_killed_midway_leaves_the_committed_rows(tmp_path):
    """A process killed (SIGKILL) in the middle of appending leaves the previous file: on the first
    append of a process (the file copied) and on a later one (written into the shadow in place)."""
    path = tmp_path / "r.h5r"
    h5r.append_table(path, "FitResults", _rows(range(10)))
    code = f"""
import os, signal, numpy as np, tables
from cluster import h5r
rows = np.zeros(1000, [("tIndex", "<i4"), ("x", "<f4")])
h5r.append_table({str(path)!r}, "FitResults", rows)  # committed
original = tables.Table.append
def die(self, rows):
    original(self, rows)
    self._v_file.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # mid-write: rows written, file not yet committed
tables.Table.append = die
h5r.append_table({str(path)!r}, "FitResults", rows[:10])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert out.returncode == -9, out.stderr
    committed = np.concatenate([_rows(range(10)), np.zeros(1000, DTYPE)])
    np.testing.assert_array_equal(h5r.read_table(path, "FitResults"), committed)
    # this process's own shadow of the file is stale now: the next append notices and copies
    h5r.append_table(path, "FitResults", _rows([7]))
    assert len(h5r.read_table(path, "FitResults")) == len(committed) + 3


def test_appends_write_two_copies_in_place_and_never_the_public_file(tmp_path):
    """The public file is replaced whole at each commit and never written in place: its inode
    alternates between two copies (no copy of the whole file per append), and a copy being
    streamed to a reader is left alone."""
    path = tmp_path / "r.h5r"
    inodes = []
    for frame in range(6):
        h5r.append_table(path, "FitResults", _rows([frame]), h5r.TaskRows("r", ((frame, 3),)))
        inodes.append(os.stat(path).st_ino)
        assert h5r.read_table(path, "FitResults")["tIndex"].tolist() == \
            np.repeat(np.arange(frame + 1), 3).tolist()
    assert len(set(inodes[1:])) == 2 and inodes[1:4:2] == inodes[3:6:2]
    with open(path, "rb") as reader, h5r_shadow.reading(path):
        before = reader.read()
        for frame in (6, 7):
            h5r.append_table(path, "FitResults", _rows([frame]), h5r.TaskRows("r", ((frame, 3),)))
        reader.seek(0)
        assert reader.read() == before  # the file being read was not the one written in place
    assert len(h5r.read_table(path, "FitResults")) == 8 * 3
    assert h5r.filed_tasks(path, "FitResults", "r") == set(range(8))
    # idle shadows are deleted; the next append copies the file once and carries on
    assert h5r_shadow.drop_idle(0) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5r"]
    h5r.append_table(path, "FitResults", _rows([8, 0]), h5r.TaskRows("r", ((8, 3), (0, 3))))
    assert len(h5r.read_table(path, "FitResults")) == 9 * 3


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB file system of its own (tmpfs); skipped only where mounting is impossible."""
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_fails_the_append_and_keeps_every_committed_row(small_disk):
    rng = np.random.default_rng(0)
    server = DataServer(root=small_disk, serverfilter="full").start()
    try:
        url = server.url + "/__aggregate_h5r/r.h5r/FitResults"
        committed, frame, reply = 0, 0, None
        for _ in range(200):
            batch = np.zeros(4000, DTYPE)  # incompressible: fills the disk in a few batches
            batch["tIndex"] = frame
            batch["x"] = rng.random(len(batch))
            reply = _put(url, batch, counts=[(frame, len(batch))])
            if reply.status_code != 200:
                break
            committed += len(batch)
            frame += 1
        assert reply.status_code == 507 and "disk full" in reply.json()["error"], reply.text
        assert committed > 0
        rows = h5r.read_table(small_disk / "r.h5r", "FitResults")
        assert len(rows) == committed
        assert not [p for p in small_disk.iterdir() if p.name != "r.h5r"]  # no temporaries left
        # the worker's filing turns it into a task failure that says so
        runner = TaskRunner(ClusterFiles(DataClient([server.url], "full"), None, "full"))
        with pytest.raises(TaskError, match="disk full"):
            runner._put_records(url, batch, ("r9", [(0, len(batch))]))
        # once space is freed, the file takes appends again
        (small_disk / "r.h5r").rename(small_disk / "old.h5r")
        os.unlink(small_disk / "old.h5r")
        assert _put(url, _rows([0]), counts=[(0, 3)]).status_code == 200
    finally:
        server.stop()
