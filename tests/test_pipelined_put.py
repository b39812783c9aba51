"""Pipelined PUTs to a real data server on loopback: every file stored and confirmed in order,
refusals and a lost server raised, the listing cache of the client dropped."""
from __future__ import annotations

import pytest

from rules.dataserver_client import DataClient
from rules.errors import ClusterUnreachable, RequestRefused


def test_files_are_stored_and_confirmed_in_order(data_server, data_root):
    stored = []
    with DataClient([data_server.url]) as client:
        assert client.listdir("run") == []
        with client.pipelined_puts(on_stored=stored.append, window=8) as puts:
            for i in range(300):
                puts.put(f"run/s.pcs/frame{i:05d}.pzf", bytes([i % 256]) * (1000 + i))
            puts.flush()
        assert stored == [f"run/s.pcs/frame{i:05d}.pzf" for i in range(300)]
        assert len(client.listdir("run/s.pcs")) == 300      # the cached listing was dropped
        assert client.get_file("run/s.pcs/frame00299.pzf") == bytes([299 % 256]) * 1299
    assert (data_root / "run" / "s.pcs" / "frame00007.pzf").read_bytes() == bytes([7]) * 1007


def test_a_refusal_is_raised_and_later_files_are_not_confirmed(data_server):
    stored = []
    with DataClient([data_server.url]) as client:
        client.put_file("run/taken.bin", b"first")
        with client.pipelined_puts(on_stored=stored.append) as puts:
            puts.put("run/a.bin", b"a")
            puts.put("run/taken.bin", b"again")
            with pytest.raises(RequestRefused, match="already exists"):
                puts.flush()
            with pytest.raises(RequestRefused):
                puts.put("run/b.bin", b"b")
        assert stored == ["run/a.bin"]
        assert client.get_file("run/taken.bin") == b"first"


def test_a_stopped_server_is_reported(data_server):
    with DataClient([data_server.url]) as client:
        puts = client.pipelined_puts()
        puts.put("run/one.bin", b"1")
        puts.flush()
        data_server.stop()
        with pytest.raises(ClusterUnreachable):
            for i in range(1000):           # the loss shows on a write or on the next flush
                puts.put(f"run/f{i}.bin", b"x" * 10_000)
            puts.flush()
        puts.close()


def test_bad_names_are_refused_before_anything_is_sent(data_server):
    with DataClient([data_server.url]) as client, client.pipelined_puts() as puts:
        with pytest.raises(ValueError):
            puts.put("../escape.bin", b"x")
        puts.put("run/ok.bin", b"x")
        puts.flush()
