"""The strict HTTP layer of both embedded servers, driven with raw sockets (malformed on purpose)."""
from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import time

import pytest
import requests

from cluster.dataserver import DataServer
from cluster.http_base import Limits
from cluster.ruleserver import RuleServer


@pytest.fixture
def small_data_server(data_root):
    """A data server with small limits and short timeouts, so bounds are cheap to hit."""
    limits = Limits(max_body=4 << 20, max_memory_body=1 << 20, idle_timeout=1.0,
                    header_timeout=1.0)
    with DataServer(root=data_root, port=0, serverfilter="t", limits=limits) as server:
        yield server


def _exchange(server, data: bytes, timeout: float = 5.0) -> tuple[list[tuple[int, dict]], bool]:
    """Send ``data`` on a fresh connection; every response read back (until the server closes
    or ``timeout`` passes without a byte), and whether the server closed the connection."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    replies: list[tuple[int, dict]] = []
    with sock, sock.makefile("rb") as stream:
        sock.sendall(data)
        while True:
            try:
                status_line = stream.readline()
            except (TimeoutError, socket.timeout):
                return replies, False
            except ConnectionResetError:
                return replies, True
            if not status_line:
                return replies, True
            headers = {}
            for line in iter(stream.readline, b"\r\n"):
                key, _, value = line.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = stream.read(int(headers["content-length"]))
            replies.append((int(status_line.split()[1]), json.loads(body) if body else {}))


def _only_reply(server, data: bytes) -> tuple[int, dict]:
    replies, closed = _exchange(server, data)
    assert len(replies) == 1, replies
    assert closed, "a request with broken framing must end its connection"
    return replies[0]


# -- framing ---------------------------------------------------------------------------------
def test_put_without_content_length_is_411_and_stores_nothing(data_root, data_server):
    status, body = _only_reply(data_server, b"PUT /a.txt HTTP/1.1\r\nHost: x\r\n\r\nhello")
    assert status == 411 and "Content-Length" in body["error"]
    assert not (data_root / "a.txt").exists()


@pytest.mark.parametrize("headers", [
    b"Content-Length: -5\r\n",
    b"Content-Length: 1_0\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: 0x5\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
])
def test_bad_content_length_is_400(data_root, data_server, rule_server, headers):
    status, body = _only_reply(data_server, b"PUT /a.txt HTTP/1.1\r\n" + headers
                               + b"\r\nhello0123456789")
    assert status == 400, body
    assert not (data_root / "a.txt").exists()
    status, _ = _only_reply(rule_server, b"POST /add_integer_id_rule HTTP/1.1\r\n" + headers
                            + b"\r\n{}   0123456789")
    assert status == 400


def test_chunked_body_is_411(data_root, data_server, rule_server):
    chunked = b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    status, body = _only_reply(data_server, b"PUT /a.txt HTTP/1.1\r\n" + chunked)
    assert status == 411 and "Content-Length" in body["error"]
    assert not (data_root / "a.txt").exists()
    assert _only_reply(rule_server, b"POST /handin HTTP/1.1\r\n" + chunked)[0] == 411


def test_get_with_body_cannot_smuggle_a_request(data_root, data_server, rule_server):
    (data_root / "secret.txt").write_text("x")
    smuggled = b"GET /secret.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (b"GET /__status HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
    status, body = _only_reply(data_server, request)
    assert status == 400 and "no request body" in body["error"]
    request = (b"GET /distributor/queues HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
               % len(smuggled)) + smuggled
    assert _only_reply(rule_server, request)[0] == 400


def test_pyme_node_server_bids_with_a_get_body(rule_server):
    """PYME's node server sends its bids as the body of a GET: still accepted, on one connection."""
    bids = b"[]"
    request = (b"GET /bid_on_tasks HTTP/1.1\r\nContent-Length: 2\r\n\r\n" + bids
               + b"GET /distributor/queues HTTP/1.1\r\n\r\n")
    replies, _ = _exchange(rule_server, request, timeout=2)
    assert [status for status, _ in replies] == [200, 200]


def test_pyme_spoolers_pipelined_puts_without_host_are_stored_in_order(data_root, data_server):
    # PYME's put_files / Streamer: raw socket, no Host header, the last request says close
    frames = [b"frame %d " % i * (i + 1) for i in range(5)]
    request = b"".join(
        b"PUT /pyme/s.pcs/frame%05d.pzf HTTP/1.1\r\nConnection: %s\r\nContent-Length: %d\r\n\r\n"
        % (i, b"close" if i == len(frames) - 1 else b"keep-alive", len(body)) + body
        for i, body in enumerate(frames))
    replies, closed = _exchange(data_server, request)
    assert [status for status, _ in replies] == [200] * 5 and closed
    assert [(data_root / "pyme" / "s.pcs" / f"frame{i:05d}.pzf").read_bytes()
            for i in range(5)] == frames


def test_more_than_one_host_is_400(data_server, rule_server):
    head = b"GET /__status HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    status, body = _only_reply(data_server, head)
    assert status == 400 and "Host" in body["error"]
    assert _only_reply(rule_server, head.replace(b"/__status", b"/queue_info"))[0] == 400


def test_huge_header_sections_are_431(data_server, rule_server):
    many = b"".join(b"X-%d: y\r\n" % i for i in range(200))
    assert _only_reply(data_server, b"GET /__status HTTP/1.1\r\n" + many + b"\r\n")[0] == 431
    long_line = b"X-Long: " + b"a" * 70000 + b"\r\n"
    assert _only_reply(rule_server, b"GET / HTTP/1.1\r\n" + long_line + b"\r\n")[0] == 431


def test_body_over_the_limit_is_413_before_it_is_sent(data_root, data_server, rule_server):
    head = b"PUT /big.bin HTTP/1.1\r\nContent-Length: 1000000000000000\r\n\r\n"
    started = time.monotonic()
    status, body = _only_reply(data_server, head)
    assert status == 413 and "limit" in body["error"]
    assert time.monotonic() - started < 2
    assert not (data_root / "big.bin").exists()
    head = b"POST /add_integer_id_rule HTTP/1.1\r\nContent-Length: 200000000\r\n\r\n{"
    assert _only_reply(rule_server, head)[0] == 413
    # With Expect: 100-continue the refusal comes instead of the go-ahead.
    head = (b"PUT /big.bin HTTP/1.1\r\nExpect: 100-continue\r\n"
            b"Content-Length: 1000000000000000\r\n\r\n")
    assert _only_reply(data_server, head)[0] == 413


def test_http2_preface_is_505_json(data_server, rule_server):
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for server in (data_server, rule_server):
        status, body = _only_reply(server, preface)
        assert status == 505 and body["ok"] == "False"


def test_garbage_request_line_is_400_json(rule_server):
    status, body = _only_reply(rule_server, b"HELLO\r\n\r\n")
    assert status == 400 and body["ok"] == "False"


def test_refused_put_keeps_pipelined_connection_in_step(data_root, data_server):
    (data_root / "a.txt").write_text("old")
    request = (b"PUT /a.txt HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
               b"PUT /b.txt HTTP/1.1\r\nContent-Length: 5\r\n\r\nworld")
    replies, _ = _exchange(data_server, request, timeout=1)
    assert [status for status, _ in replies] == [405, 200]
    assert (data_root / "b.txt").read_text() == "world"


# -- bounded decompression ------------------------------------------------------------------
def _gzip_bomb(total: int) -> bytes:
    """``total`` zero bytes as a multi-member gzip stream (cheap to build, ~1000:1)."""
    member = gzip.compress(bytes(8 << 20), compresslevel=9)
    return member * (total // (8 << 20))


def test_gzip_bomb_is_413_and_stores_nothing(data_root, small_data_server):
    bomb = _gzip_bomb(64 << 20)
    headers = {"Content-Encoding": "gzip"}
    url = small_data_server.url
    for path in ("/bomb.bin", "/__aggregate_txt/bomb.txt", "/__aggregate_h5r/r.h5r/MetaData"):
        reply = requests.put(url + path, data=bomb, headers=headers, timeout=10)
        assert reply.status_code == 413, (path, reply.text)
        assert "decompressed" in reply.json()["error"]
    assert sorted(p.name for p in data_root.iterdir()) == []


def test_gzip_bodies_within_the_limit_are_stored_whole(data_root, small_data_server):
    payload = bytes(range(256)) * 3000  # 768 kB, under the 1 MiB limit
    body = gzip.compress(payload[:400000]) + gzip.compress(payload[400000:])  # two members
    reply = requests.put(small_data_server.url + "/ok.bin", data=body,
                         headers={"Content-Encoding": "gzip"}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert (data_root / "ok.bin").read_bytes() == payload
    truncated = gzip.compress(payload)[:-100]
    reply = requests.put(small_data_server.url + "/bad.bin", data=truncated,
                         headers={"Content-Encoding": "gzip"}, timeout=10)
    assert reply.status_code == 400
    assert not (data_root / "bad.bin").exists()
    reply = requests.put(small_data_server.url + "/enc.bin", data=b"x",
                         headers={"Content-Encoding": "br"}, timeout=10)
    assert reply.status_code == 415


def test_rule_server_refuses_a_gzip_bomb_rule(data_root):
    limits = Limits(max_body=1 << 20, max_memory_body=1 << 20)
    with RuleServer(port=0, limits=limits) as server:
        reply = requests.post(server.url + "/add_integer_id_rule", data=_gzip_bomb(16 << 20),
                              headers={"Content-Encoding": "gzip"}, timeout=10)
        assert reply.status_code == 413
        assert requests.get(server.url + "/distributor/queues", timeout=5).json()["result"] == {}


# -- time bounds ----------------------------------------------------------------------------
def test_idle_connections_are_closed(small_data_server):
    sock = socket.create_connection(("127.0.0.1", small_data_server.port), timeout=5)
    with sock:
        sock.sendall(b"GET /__status HTTP/1.1\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server ends the kept-alive connection
        assert 0.5 < time.monotonic() - started < 3


def test_slowloris_is_cut_off_and_never_delays_others(small_data_server):
    """A byte-a-tick client gets 408 at the header deadline; others are served meanwhile."""
    sock = socket.create_connection(("127.0.0.1", small_data_server.port), timeout=5)
    result: dict = {}

    def dribble():
        started = time.monotonic()
        try:
            for byte in b"GET /__status HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass
        result["reply"] = sock.recv(4096)
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=dribble)
    thread.start()
    latencies = []
    with requests.Session() as session:
        while thread.is_alive():
            started = time.monotonic()
            assert session.get(small_data_server.url + "/__status", timeout=5).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
    thread.join()
    sock.close()
    assert result["reply"].startswith(b"HTTP/1.1 408")
    assert result["seconds"] < 2.5
    assert len(latencies) > 5 and max(latencies) < 0.5


def test_one_integer_parser_for_both_servers(data_server, rule_server):
    """``int()`` would take ``1_0``, `` 5`` and ``+5``; query parameters are plain decimals."""
    records = json.dumps([{"x": 1.0}, {"x": 2.0}])
    assert requests.put(data_server.url + "/__aggregate_h5r/r.h5r/FitResults", data=records,
                        timeout=5).status_code == 200
    table = f"{data_server.url}/r.h5r/FitResults.json"
    assert requests.get(table + "?from=1", timeout=5).json() == [{"x": 2.0}]
    for bad in ("1_0", "+5", "%205", "5.0", "-1"):
        reply = requests.get(f"{table}?from={bad}", timeout=5)
        assert reply.status_code == 400, reply.text
        if bad == "-1":  # an integer, refused by the data server as a negative row
            continue
        reply = requests.get(f"{rule_server.url}/release_rule_tasks?ruleID=x&release_start={bad}"
                             "&release_end=3", timeout=5)
        assert reply.status_code == 400 and "integer" in reply.json()["error"]
