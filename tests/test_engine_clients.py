"""Engine clients against the embedded rule and data servers over real HTTP, plus error mapping."""
from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest

from cluster.dataserver import DataServer
from cluster.http_base import free_port
from rules.connection import (
    DATASERVER_ENV,
    RULESERVER_ENV,
    Cluster,
    default_cluster,
    local_serverfilter,
    set_default_cluster,
)
from rules.dataserver_client import DataClient
from rules.errors import ClusterError, ClusterUnreachable, ProtocolError, RequestRefused
from rules.ruleserver_client import RuleServerClient
from rules.uris import check_name, make_cluster_uri, parse_cluster_uri, results_filename_for, series_stub

SERIES = "pyme/series.pcs"


class RawServer:
    """A socket server answering every request with fixed bytes; records the requests' bytes."""

    def __init__(self, reply: bytes):
        self.reply = reply
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                conn.settimeout(2)
                try:
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    while len(body) < length:
                        body += conn.recv(65536)
                except (OSError, ValueError):
                    continue
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(self.reply)

    def close(self) -> None:
        self._sock.close()


def http_reply(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


@pytest.fixture
def raw_server():
    servers = []

    def make(reply: bytes) -> RawServer:
        servers.append(RawServer(reply))
        return servers[-1]
    yield make
    for server in servers:
        server.close()


@pytest.fixture
def data_client(data_server, fixture_series_root):
    with DataClient(data_server.url, "testcluster") as client:
        yield client


# -- URIs ---------------------------------------------------------------------------------------
def test_cluster_uris_parse_make_and_name():
    assert parse_cluster_uri("PYME-CLUSTER://lab2/u/s1.pcs") == ("lab2", "u/s1.pcs", {})
    assert parse_cluster_uri("pyme-cluster:///u/r.h5r?table=FitResults") == (
        "", "u/r.h5r", {"table": "FitResults"})
    assert parse_cluster_uri("/u/s1.pcs") == ("", "u/s1.pcs", {})
    assert make_cluster_uri("/u/s1.pcs", "lab2") == "PYME-CLUSTER://lab2/u/s1.pcs"
    assert make_cluster_uri("u/s1.pcs") == "PYME-CLUSTER:///u/s1.pcs"
    assert results_filename_for("PYME-CLUSTER://lab2/u/2024_5_3/s1.pcs") == "u/2024_5_3/analysis/s1.h5r"
    assert results_filename_for("s1.pcs") == "analysis/s1.h5r"
    assert series_stub("PYME-CLUSTER://lab2/u/s1.pcs") == "s1"
    assert check_name("PYME-CLUSTER://lab2/u/a-b_c.1.pcs") == "u/a-b_c.1.pcs"
    for bad, word in (("u/s~1.pcs", "~"), ("u/a b.pcs", "' '"), ("u/../etc", ".."), ("", "empty")):
        with pytest.raises(ValueError, match=word if word != "' '" else "characters"):
            check_name(bad)


# -- rule server ----------------------------------------------------------------------------------
def test_rule_client_lifecycle(rule_server):
    with RuleServerClient(rule_server.url) as client:
        rule_id = client.add_rule({"template": "{}"}, max_tasks=10, release_start=0, release_end=4)
        assert client.queue_info()[rule_id]["tasksPosted"] == 4
        client.release_tasks(rule_id, 4, 6)
        client.mark_release_complete(rule_id)
        info = client.queue_info()[rule_id]
        assert info["tasksPosted"] == 6 and info["active"] is True
        assert client.followon_ids(rule_id) == []
        assert rule_id in client.extra_rule_info()
        client.inactivate_rule(rule_id)
        assert client.queue_info()[rule_id]["active"] is False
        chosen = client.add_rule({"template": "{}"}, rule_id="mine-1")
        assert chosen == "mine-1" and "mine-1" in client.queue_info()


def test_rule_client_refusals_carry_server_message(rule_server):
    with RuleServerClient(rule_server.url) as client:
        with pytest.raises(RequestRefused) as info:
            client.release_tasks("no-such-rule", 0, 1)
        assert info.value.status == 404 and "no-such-rule" in info.value.server_message
        with pytest.raises(RequestRefused):  # a 404 about the rule, not a missing endpoint
            client.followon_ids("no-such-rule")
        rule_id = client.add_rule({"template": "{}"}, max_tasks=10)
        with pytest.raises(RequestRefused) as info:
            client.release_tasks(rule_id, 0, 100)
        assert 400 <= info.value.status < 500 and info.value.server_message
        with pytest.raises(ValueError):
            client.add_rule({"no": "template"})


def test_rule_client_sends_what_pyme_sends(raw_server):
    server = raw_server(http_reply("200 OK", b'{"ok": "True", "ruleID": "000001-abc"}'))
    with RuleServerClient(server.url) as client:
        assert client.add_rule({"template": "{\"x\": 1}"}, release_start=0, release_end=8) == "000001-abc"
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("POST /add_integer_id_rule?")
    query = dict(p.split("=") for p in lines[0].split()[1].split("?")[1].split("&"))
    assert query == {"timeout": "3600", "max_tasks": "1000000", "release_start": "0",
                     "release_end": "8"}
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    assert headers["content-type"] == "application/json"
    assert "gzip" in headers["accept-encoding"]
    assert json.loads(body) == {"template": "{\"x\": 1}"}


def test_ok_false_at_status_200_is_refused(raw_server):
    server = raw_server(http_reply("200 OK", b'{"ok": "False", "error": "rule is gone"}'))
    with RuleServerClient(server.url) as client, pytest.raises(RequestRefused) as info:
        client.mark_release_complete("r")
    assert info.value.status == 200 and info.value.server_message == "rule is gone"


def test_spoolside_endpoints_absent_on_pyme(raw_server):
    server = raw_server(http_reply("404 Not Found", b"No handler for /spoolside/followons",
                                   "text/plain"))
    with RuleServerClient(server.url) as client:
        assert client.followon_ids("r") is None
        assert client.extra_rule_info() is None


def test_unreachable_servers_name_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with RuleServerClient(url, timeout=2) as client, pytest.raises(ClusterUnreachable) as info:
        client.queue_info()
    assert url in str(info.value)
    with DataClient(url, retries=2, timeout=2) as data, pytest.raises(ClusterUnreachable) as info:
        data.get_file("a/b.pcs")
    assert url in str(info.value)


def test_a_server_that_never_answers_is_asked_once():
    """Connection errors are retried; a server that accepted and did not answer in time is not
    (asking again would only wait as long again), and the error says so in a few words."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    accepted: list[socket.socket] = []

    def accept() -> None:  # accepts, counts and never answers
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with DataClient(url, retries=3, timeout=(1.0, 0.3)) as data:
            with pytest.raises(ClusterUnreachable) as info:
                data.exists("a/b.pcs/metadata.json")
        assert len(accepted) == 1  # one request: not retried, and no second look for a directory
        assert str(info.value) == (f"cannot reach {url}/a/b.pcs/: GET failed: connected, but no "
                                   "answer (timed out)")
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


@pytest.mark.parametrize("reply", [
    b"this is not HTTP at all\r\n\r\n",
    http_reply("200 OK", b"<html>hello</html>", "text/html"),
    http_reply("200 OK", b'{"ok": true, "result": [1, 2]}'),
])
def test_garbage_replies_are_protocol_errors(raw_server, reply):
    server = raw_server(reply)
    with RuleServerClient(server.url) as client, pytest.raises(ProtocolError):
        client.queue_info()
    with DataClient(server.url, retries=1) as data, pytest.raises(ProtocolError):
        data.listdirectory("x")


def test_errors_form_one_family():
    for cls in (ClusterUnreachable, RequestRefused, ProtocolError):
        assert issubclass(cls, ClusterError) and issubclass(cls, RuntimeError)


# -- data server ----------------------------------------------------------------------------------
def test_listing_and_lookup(data_client, pyme_fixtures):
    top = data_client.listdirectory("pyme")
    assert top["series.pcs/"].flags == 7 and top["series.pcs/"].is_complete
    assert top["results.h5r"].size == (pyme_fixtures / "results.h5r").stat().st_size
    names = data_client.listdir(f"PYME-CLUSTER://testcluster/{SERIES}")
    assert names[:2] == ["events.json", "frame00000.pzf"] and len(names) == 10
    assert data_client.listdirectory("nowhere") == {}
    assert data_client.isdir(SERIES) and not data_client.isdir(SERIES + "/events.json")
    assert data_client.exists(SERIES + "/events.json") and data_client.exists(SERIES)
    assert not data_client.exists("pyme/missing.pcs")
    assert data_client.locate_file(SERIES + "/metadata.json") == [data_client.urls[0]]
    assert data_client.get_file(SERIES + "/frame00003.pzf") == (
        pyme_fixtures / "series.pcs" / "frame00003.pzf").read_bytes()
    with pytest.raises(FileNotFoundError):
        data_client.get_file(SERIES + "/frame99999.pzf")


def test_cglob_gives_full_uris(data_client):
    # '[' and ']' must survive the trip (the pattern is URL-encoded)
    assert data_client.cglob(SERIES + "/frame0000[0-2].pzf") == [
        f"PYME-CLUSTER://testcluster/{SERIES}/frame0000{i}.pzf" for i in range(3)]
    assert data_client.cglob("PYME-CLUSTER://other/pyme/*.h5r") == [
        "PYME-CLUSTER://other/pyme/results.h5r"]
    assert data_client.cglob("pyme/*.tif") == []


def test_writes_are_write_once_and_visible_at_once(data_client):
    assert data_client.listdir("out") == []
    data_client.put_file("out/a.txt", b"first")
    assert data_client.listdir("out") == ["a.txt"]  # the write dropped the cached listing
    with pytest.raises(FileExistsError):
        data_client.put_file("PYME-CLUSTER://testcluster/out/a.txt", b"second")
    assert data_client.get_file("out/a.txt") == b"first"
    with pytest.raises(ValueError):
        data_client.put_file("out/bad~name.txt", b"")
    data_client.append_text("LOGS/rules/r1.log", "one\n")
    data_client.append_text("LOGS/rules/r1.log", "twö\n")
    assert data_client.get_file("LOGS/rules/r1.log").decode() == "one\ntwö\n"


def test_aggregate_url_and_read_table(data_client, data_server):
    assert data_client.aggregate_url("pyme/results.h5r") == (
        f"{data_server.url}/__aggregate_h5r/pyme/results.h5r")
    assert data_client.aggregate_url("new/x.h5r", "txt") == f"{data_server.url}/__aggregate_txt/new/x.h5r"
    table = data_client.read_table("pyme/results.h5r", "FitResults")
    assert len(table) == 5 and "fitResults" in table.dtype.names
    part = data_client.read_table("pyme/results.h5r", "FitResults", 1, 3)
    assert np.array_equal(part, table[1:3])
    with pytest.raises(FileNotFoundError, match="NoSuchTable"):
        data_client.read_table("pyme/results.h5r", "NoSuchTable")


@pytest.mark.parametrize("compress", [True, False])
def test_append_records_and_put_url(data_client, compress):
    fits = data_client.read_table("pyme/results.h5r", "FitResults")
    target = data_client.aggregate_url("new/r.h5r")
    data_client.append_records(target + "/FitResults", fits[:2], compress=compress)
    data_client.append_records(target + "/FitResults", fits[2:], compress=compress)
    data_client.put_url(target + "/MetaData", json.dumps({"Camera.ADOffset": 90.5}).encode())
    assert np.array_equal(data_client.read_table("new/r.h5r", "FitResults"), fits)
    with pytest.raises(RequestRefused) as refused:
        data_client.append_records(target + "/FitResults", np.zeros(2, [("a", "<i4")]))
    assert refused.value.status == 400 and "FitResults" in str(refused.value)


def test_several_data_servers_form_one_tree(data_server, fixture_series_root, tmp_path):
    other_root = tmp_path / "other"
    (other_root / "pyme" / "series.pcs").mkdir(parents=True)
    (other_root / "pyme" / "series.pcs" / "frame00008.pzf").write_bytes(b"x")
    with DataServer(other_root, port=0) as other, \
            DataClient([data_server.url, other.url], "testcluster") as client:
        merged = client.listdirectory("pyme")
        assert merged["series.pcs/"].size == 11  # 10 entries + 1 entry, summed
        assert merged["series.pcs/"].flags & 7 == 7 and "results.h5r" in merged
        assert len([n for n in client.listdir(SERIES) if n.endswith(".pzf")]) == 9
        assert client.locate_file(SERIES + "/frame00008.pzf") == [other.url]
        assert client.get_file(SERIES + "/frame00008.pzf") == b"x"
        assert len(client.cglob(SERIES + "/*.pzf")) == 9
        with pytest.raises(FileExistsError):  # exists on the first server, whichever is next
            for _ in range(2):
                client.put_file(SERIES + "/frame00008.pzf", b"y")


# -- connection -----------------------------------------------------------------------------------
def test_cluster_holds_lazy_clients(rule_server, data_server):
    with Cluster(rule_server.url + "/", [data_server.url]) as cluster:
        assert cluster.serverfilter == local_serverfilter() == socket.gethostname()
        assert cluster.ruleserver_url == rule_server.url
        assert cluster.rules is cluster.rules and cluster.data is cluster.data
        assert cluster.rules.queue_info() == {}
        assert cluster.data.listdir("") == []
    named = Cluster(rule_server.url, f"{data_server.url}, {data_server.url}", serverfilter="lab")
    assert named.dataserver_urls == [data_server.url] * 2 and named.data.serverfilter == "lab"
    named.close()


def test_default_cluster_order(monkeypatch, rule_server, data_server):
    monkeypatch.delenv(RULESERVER_ENV, raising=False)
    monkeypatch.delenv(DATASERVER_ENV, raising=False)
    set_default_cluster(None)
    try:
        try:
            import zeroconf  # noqa: F401
        except ImportError:
            with pytest.raises(ClusterError, match=RULESERVER_ENV):
                default_cluster()
        monkeypatch.setenv(RULESERVER_ENV, rule_server.url)
        monkeypatch.setenv(DATASERVER_ENV, f"{data_server.url},{data_server.url}")
        from_env = default_cluster()
        assert from_env.ruleserver_url == rule_server.url
        assert from_env.dataserver_urls == [data_server.url] * 2
        mine = Cluster(rule_server.url, data_server.url, serverfilter="x")
        set_default_cluster(mine)
        assert default_cluster() is mine
    finally:
        set_default_cluster(None)
