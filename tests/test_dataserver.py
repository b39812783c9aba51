"""Data server conformance (protocol §4.3): real HTTP on a loopback port, real files."""
from __future__ import annotations

import gzip
import io
import json
import os
import socket
import time

import numpy as np
import pytest
import requests
import tables

from cluster import h5r
from cluster.dataserver.records import records_from_pickle


# -- raw HTTP helpers (requests would normalise paths and hide pipelining) ----------------------
def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(stream) -> tuple[int, dict, bytes]:
    """PYME's minimal client parser: status line, headers split on ': ', body by Content-Length."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while True:
        line = stream.readline().rstrip(b"\r\n")
        if not line:
            break
        key, value = line.decode("latin-1").split(": ", 1)
        headers[key.lower()] = value
    assert "content-length" in headers, headers
    body = stream.read(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


def _put_request(name: str, body: bytes, close: bool = False) -> bytes:
    connection = "close" if close else "keep-alive"
    return (f"PUT /{name} HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _fits(pyme_fixtures):
    return h5r.read_table(pyme_fixtures / "results.h5r", "FitResults")


# -- GET --------------------------------------------------------------------------------------
def test_listing_flags_on_pyme_series(fixture_series_root, data_server):
    (fixture_series_root / "pyme" / "running.pcs").mkdir()
    (fixture_series_root / "pyme" / "running.pcs" / "metadata.json").write_text("{}")
    (fixture_series_root / "pyme" / "plain").mkdir()
    root = requests.get(data_server.url + "/")
    assert root.status_code == 200 and root.headers["Content-Type"] == "application/json"
    assert root.json() == {"pyme/": [1, 4]}
    listing = requests.get(data_server.url + "/pyme/").json()
    assert listing == {"results.h5r": [0, 16847], "series.pcs/": [7, 10],
                       "running.pcs/": [3, 1], "plain/": [1, 0]}
    series = requests.get(data_server.url + "/pyme/series.pcs/").json()
    assert series["metadata.json"] == [0, 540] and series["events.json"] == [0, 107]
    assert sorted(series) == sorted(os.listdir(fixture_series_root / "pyme" / "series.pcs"))


def test_directory_without_slash_redirects(fixture_series_root, data_server):
    reply = requests.get(data_server.url + "/pyme/series.pcs", allow_redirects=False)
    assert reply.status_code == 301
    assert reply.headers["Location"] == "/pyme/series.pcs/"
    assert reply.headers["Content-Length"] == "0"


def test_get_file_bytes_type_and_length(fixture_series_root, data_server, pyme_fixtures):
    reply = requests.get(data_server.url + "/pyme/series.pcs/metadata.json")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    expected = (pyme_fixtures / "series.pcs" / "metadata.json").read_bytes()
    assert reply.content == expected and reply.headers["Content-Length"] == str(len(expected))
    frame = requests.get(data_server.url + "/pyme/series.pcs/frame00003.pzf")
    assert frame.content == (pyme_fixtures / "series.pcs" / "frame00003.pzf").read_bytes()
    assert frame.headers["Content-Type"] == "application/octet-stream"
    missing = requests.get(data_server.url + "/pyme/nothing.txt")
    assert missing.status_code == 404 and missing.json()["ok"] == "False"
    head = requests.head(data_server.url + "/pyme/results.h5r")
    assert head.status_code == 200 and head.headers["Content-Length"] == "16847"


def test_large_file_is_streamed_whole(data_root, data_server):
    payload = os.urandom(3 << 20)
    (data_root / "big.bin").write_bytes(payload)
    reply = requests.get(data_server.url + "/big.bin")
    assert reply.content == payload


def test_status_says_what_clients_need_and_nothing_about_the_host(data_server):
    status = requests.get(data_server.url + "/__status").json()
    assert status["Port"] == data_server.port and status["Protocol"] == "HTTP/1.1"
    assert status["BindAddress"] == "127.0.0.1"
    assert status["ServerFilter"] == "testcluster" == data_server.serverfilter
    assert status["Uptime"] >= 0
    assert not {"Disk", "ComputerName", "IPAddress"} & set(status)  # no disk or host details
    assert status["CPUUsage"] == [] and status["MemUsage"] == {} == status["Network"]


def test_glob_is_relative_and_confined(fixture_series_root, data_server, tmp_path):
    url = data_server.url + "/__glob?pattern="
    assert requests.get(url + "pyme/*.pcs").json() == ["pyme/series.pcs"]
    assert requests.get(url + "pyme/series.pcs/frame0000[0-1].pzf").json() == [
        "pyme/series.pcs/frame00000.pzf", "pyme/series.pcs/frame00001.pzf"]
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("x")
    os.symlink(tmp_path / "outside", fixture_series_root / "escape")
    assert requests.get(url + "escape/*").json() == []
    for bad in ("/etc/*", "../*", "pyme/../../*", "%2Fetc%2F*", "~/*", "pyme//*"):
        reply = requests.get(url + bad)
        assert reply.status_code == 403, bad
        assert reply.json()["ok"] == "False"
    assert requests.get(data_server.url + "/__glob").status_code == 400


# -- PUT --------------------------------------------------------------------------------------
def test_put_is_write_once_with_parents(data_root, data_server):
    url = data_server.url + "/u/s1.pcs/frame00000.pzf"
    reply = requests.put(url, data=b"abc")
    assert reply.status_code == 200 and reply.headers["Content-Length"] == "0"
    assert (data_root / "u" / "s1.pcs" / "frame00000.pzf").read_bytes() == b"abc"
    again = requests.put(url, data=b"other")
    assert again.status_code == 405 and again.json()["ok"] == "False"
    assert requests.get(url).content == b"abc"
    gz = requests.put(data_server.url + "/u/gz.txt", data=gzip.compress(b"zipped"),
                      headers={"Content-Encoding": "gzip"})
    assert gz.status_code == 200 and (data_root / "u" / "gz.txt").read_bytes() == b"zipped"
    assert [n for n in os.listdir(data_root / "u" / "s1.pcs")] == ["frame00000.pzf"]


def test_put_directory(data_root, data_server):
    assert requests.put(data_server.url + "/a/b/").status_code == 200
    assert (data_root / "a" / "b").is_dir()
    assert requests.put(data_server.url + "/a/b/").status_code == 405
    assert requests.get(data_server.url + "/a/").json() == {"b/": [1, 0]}


def test_aggregate_txt_appends(data_root, data_server):
    url = data_server.url + "/__aggregate_txt/logs/run.log"
    for line in (b"one\n", b"two\n"):
        assert requests.put(url, data=line).status_code == 200
    assert requests.put(url, data=gzip.compress(b"three\n"),
                        headers={"Content-Encoding": "gzip"}).status_code == 200
    assert (data_root / "logs" / "run.log").read_bytes() == b"one\ntwo\nthree\n"


def test_dropped_put_leaves_no_file(data_root, data_server):
    with _connect(data_server) as sock:
        sock.sendall(b"PUT /cut/frame.pzf HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
                     + b"x" * 5000)
        deadline = time.monotonic() + 5
        while not (data_root / "cut").is_dir() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (data_root / "cut").is_dir()  # the server is receiving into a temporary file
    deadline = time.monotonic() + 5
    while os.listdir(data_root / "cut") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.listdir(data_root / "cut") == []  # no half file, no temporary left behind
    assert requests.put(data_server.url + "/cut/frame.pzf", data=b"whole").status_code == 200
    assert requests.get(data_server.url + "/cut/").json() == {"frame.pzf": [0, 5]}


def test_pipelined_puts_answered_in_order(data_root, data_server):
    names = [f"pipe/frame{i:05d}.pzf" for i in range(30)]
    payload = b"".join(_put_request(n, bytes([i]) * (100 + i)) for i, n in enumerate(names))
    payload += _put_request(names[3], b"duplicate")                 # 405, in its place
    payload += b"GET /pipe/frame00007.pzf HTTP/1.1\r\nHost: x\r\n\r\n"
    payload += _put_request("pipe/../../escape.txt", b"no")         # 403, body drained
    payload += _put_request("pipe/last.pzf", b"end", close=True)
    with _connect(data_server) as sock:
        sock.sendall(payload)  # everything before reading any reply
        stream = sock.makefile("rb")
        replies = [_read_response(stream) for _ in range(len(names) + 4)]
        assert stream.read() == b""  # closed after the request that said close
    statuses = [status for status, _, _ in replies]
    assert statuses == [200] * 30 + [405, 200, 403, 200]
    assert replies[31][2] == bytes([7]) * 107
    assert json.loads(replies[32][2])["ok"] == "False"
    for i, name in enumerate(names):
        assert (data_root / name).read_bytes() == bytes([i]) * (100 + i)
    assert not (data_root.parent / "escape.txt").exists()


# -- h5r aggregation --------------------------------------------------------------------------
def test_h5r_append_batches_and_read_back(data_root, data_server, pyme_fixtures):
    fits = _fits(pyme_fixtures)
    batches = [np.concatenate([fits] * 40)[i::3] for i in range(3)]
    url = data_server.url + "/__aggregate_h5r/u/s1.h5r/FitResults"
    assert requests.put(url, data=_npy(batches[0])).status_code == 200
    assert requests.put(url, data=gzip.compress(_npy(batches[1])),
                        headers={"Content-Encoding": "gzip"}).status_code == 200
    rows = [{"tIndex": int(r["tIndex"]),
             **{f"{group}_{field}": float(r[group][field])
                for group in ("fitResults", "fitError") for field in fits.dtype[group].names},
             "resultCode": int(r["resultCode"]),
             **{f"slicesUsed_{a}_{k}": int(r["slicesUsed"][a][k])
                for a in "xyz" for k in ("start", "stop", "step")},
             "subtractedBackground": float(r["subtractedBackground"]), "nchi2": float(r["nchi2"])}
            for r in batches[2]]
    assert requests.put(url, json=rows).status_code == 200  # JSON records, flattened names
    everything = np.concatenate(batches)
    got = np.load(io.BytesIO(requests.get(data_server.url + "/u/s1.h5r/FitResults.npy").content))
    np.testing.assert_array_equal(got, everything)
    part = requests.get(data_server.url + "/u/s1.h5r/FitResults.npy?from=10&to=25")
    np.testing.assert_array_equal(np.load(io.BytesIO(part.content)), everything[10:25])
    as_json = requests.get(data_server.url + "/u/s1.h5r/FitResults.json?from=2&to=4").json()
    assert len(as_json) == 2
    assert as_json[0]["fitResults_x0"] == pytest.approx(float(everything[2]["fitResults"]["x0"]))
    assert as_json[1]["slicesUsed_z_step"] == int(everything[3]["slicesUsed"]["z"]["step"])
    csv_text = requests.get(data_server.url + "/u/s1.h5r/FitResults.csv?to=3").text
    assert csv_text.splitlines()[0].startswith("tIndex,fitResults_A,fitResults_x0")
    assert len(csv_text.splitlines()) == 4
    assert requests.get(data_server.url + "/u/s1.h5r/Nope.npy").status_code == 404
    # no extension: a pickled numpy array, as PYME serves it (what PYME's clients unpickle)
    pickled = requests.get(data_server.url + "/u/s1.h5r/FitResults?from=3&to=9")
    assert pickled.status_code == 200 and pickled.content.startswith(b"\x80\x02")
    np.testing.assert_array_equal(records_from_pickle(pickled.content), everything[3:9])
    assert requests.get(data_server.url + "/u/s1.h5r/FitResults.xls").status_code == 400
    assert requests.get(data_server.url + "/u/s1.h5r/Nope").status_code == 404
    assert requests.get(data_server.url + "/u/s1.h5r/FitResults.npy?from=x").status_code == 400


def test_h5r_metadata_merged_and_served(data_root, data_server):
    url = data_server.url + "/__aggregate_h5r/r.h5r/MetaData"
    assert requests.put(url, json={"Camera.ADOffset": 100.0, "Analysis.BGRange": [-30, 0]}
                        ).status_code == 200
    assert requests.put(url, data=gzip.compress(json.dumps({"Camera.ADOffset": 99.0,
                                                            "voxelsize.x": 0.1}).encode()),
                        headers={"Content-Encoding": "gzip"}).status_code == 200
    expected = {"Analysis.BGRange": [-30, 0], "Camera.ADOffset": 99.0, "voxelsize.x": 0.1}
    assert requests.get(data_server.url + "/r.h5r/MetaData").json() == expected
    assert requests.get(data_server.url + "/r.h5r/Metadata").json() == expected


def test_h5r_bad_bodies_write_nothing(data_root, data_server, pyme_fixtures):
    url = data_server.url + "/__aggregate_h5r/bad/r.h5r/FitResults"
    for body, status in ((b"not npy, not json", 400), (b"", 400), (b'{"a": 1}', 400),
                         (b"\x80\x02cnumpy\n...", 400), (b"\x80\x02cos\nsystem\n.", 415), (_npy(np.arange(5)), 400),
                         (_npy(np.array([object()], dtype=object)), 400)):
        reply = requests.put(url, data=body)
        assert reply.status_code == status, body[:20]
        assert reply.json()["ok"] == "False" and reply.json()["error"]
    assert not (data_root / "bad" / "r.h5r").exists()
    assert requests.put(url, data=_npy(_fits(pyme_fixtures))).status_code == 200
    wrong = np.zeros(3, dtype=[("tIndex", "<i4"), ("x", "<f4")])
    reply = requests.put(url, data=_npy(wrong))
    assert reply.status_code == 400 and "does not match" in reply.json()["error"]
    assert requests.put(url, json=[{"tIndex": 1}]).status_code == 400
    assert requests.put(url, data=b"\x1f\x8bnot gzip",
                        headers={"Content-Encoding": "gzip"}).status_code == 400
    assert requests.put(data_server.url + "/__aggregate_h5r/bad/r.h5r/MetaData",
                        data=b"{nope").status_code == 400
    assert requests.put(data_server.url + "/__aggregate_h5r/bad/r.h5r",
                        data=b"\x80\x02").status_code == 415
    assert len(h5r.read_table(data_root / "bad" / "r.h5r", "FitResults")) == 5
    assert h5r.read_metadata(data_root / "bad" / "r.h5r") == {}


def test_h5r_from_server_matches_pyme_layout(data_root, data_server, pyme_fixtures):
    fixture = pyme_fixtures / "results.h5r"
    base = data_server.url + "/__aggregate_h5r/same/results.h5r/"
    md = json.loads((pyme_fixtures / "series.pcs" / "metadata.json").read_text())
    assert requests.put(base + "MetaData", json=md).status_code == 200
    fits = _fits(pyme_fixtures)
    for chunk in (fits[:2], fits[2:]):
        assert requests.put(base + "FitResults", data=_npy(chunk)).status_code == 200
    events = h5r.read_table(fixture, "Events")
    assert requests.put(base + "Events", data=_npy(events)).status_code == 200

    def layout(path):
        with tables.open_file(str(path)) as f:
            return {node._v_pathname: (type(node).__name__,
                                       getattr(node, "dtype", None) and node.dtype.descr,
                                       repr(getattr(node, "filters", None)),
                                       sorted(node._v_attrs._f_list("user")))
                    for node in f.walk_nodes("/")}
    ours = data_root / "same" / "results.h5r"
    assert layout(ours) == layout(fixture)
    assert h5r.read_metadata(ours) == h5r.read_metadata(fixture)
    np.testing.assert_array_equal(h5r.read_table(ours, "FitResults"), fits)
    np.testing.assert_array_equal(h5r.read_table(ours, "Events"), events)


def test_concurrent_h5r_appends_all_land(data_root, data_server, pyme_fixtures):
    import threading
    fits = _fits(pyme_fixtures)
    body = _npy(fits)
    errors = []

    def hand_in(n):
        with requests.Session() as session:
            for _ in range(n):
                reply = session.put(data_server.url + "/__aggregate_h5r/c/r.h5r/FitResults",
                                    data=body)
                if reply.status_code != 200:
                    errors.append(reply.text)
            session.put(data_server.url + "/__aggregate_h5r/c/r.h5r/MetaData",
                        json={f"Worker.{threading.current_thread().name}": n})

    threads = [threading.Thread(target=hand_in, args=(8,), name=f"w{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    rows = h5r.read_table(data_root / "c" / "r.h5r", "FitResults")
    assert len(rows) == 4 * 8 * len(fits)
    assert h5r.read_metadata(data_root / "c" / "r.h5r") == {f"Worker.w{i}": 8 for i in range(4)}


def test_aggregate_txt_onto_write_once_file_refused(data_root, data_server):
    assert requests.put(data_server.url + "/done.txt", data=b"final").status_code == 200
    reply = requests.put(data_server.url + "/__aggregate_txt/done.txt", data=b"more")
    assert reply.status_code == 409 and reply.json()["ok"] == "False"
    assert (data_root / "done.txt").read_bytes() == b"final"
    assert requests.put(data_server.url + "/done.h5r", data=b"final").status_code == 200
    reply = requests.put(data_server.url + "/__aggregate_h5r/done.h5r/MetaData", json={"a": 1})
    assert reply.status_code == 409
    assert (data_root / "done.h5r").read_bytes() == b"final"


def test_server_defaults_and_lifecycle(data_root):
    from cluster.dataserver import DataServer
    idle = DataServer(data_root)
    assert idle.serverfilter == socket.gethostname()
    assert idle.root == data_root.resolve()
    idle.stop()  # never started: returns at once
    with DataServer(data_root, serverfilter="") as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert requests.get(server.url + "/__status").json()["ServerFilter"] == ""
    server.stop()  # second stop is harmless
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/__status", timeout=2)
    with pytest.raises(NotADirectoryError):
        DataServer(data_root / "missing")
