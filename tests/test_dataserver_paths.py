"""Nothing outside the data root is read or written, whatever the request path looks like.

Requests go over raw sockets so no client library normalises the paths first.
"""
from __future__ import annotations

import json
import os
import socket

import pytest

SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"


@pytest.fixture
def layout(tmp_path, data_root):
    """``tmp_path/secret.txt`` outside the root, and symlinks inside it that lead out."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "secret.h5r").write_bytes(SECRET)
    (data_root / "inside").mkdir()
    (data_root / "inside" / "ok.txt").write_bytes(b"fine")
    os.symlink(tmp_path, data_root / "linkdir")
    os.symlink(tmp_path / "secret.txt", data_root / "linkfile.txt")
    os.symlink(data_root / "inside" / "ok.txt", data_root / "inside" / "alias.txt")
    return tmp_path


def _raw(server, method: str, target: bytes, body: bytes = b"") -> tuple[int, bytes]:
    request = (method.encode() + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert b"content-length:" in head.lower()
    return int(head.split()[1]), payload


TRAVERSALS = [
    b"/../secret.txt",
    b"/inside/../../secret.txt",
    b"/%2e%2e/secret.txt",
    b"/%2E%2E%2Fsecret.txt",
    b"/..%2fsecret.txt",
    b"/%252e%252e/secret.txt",
    b"/%252e%252e%252fsecret.txt",
    b"/..\\secret.txt",
    b"/%5c..%5csecret.txt",
    b"//etc/passwd",
    b"/%2Fetc%2Fpasswd",
    b"/%2F%2Fetc/passwd",
    b"/./../secret.txt",
    b"/~/secret.txt",
    b"/%7e/secret.txt",
    b"/inside/ok.txt%00.pzf",
    b"/secret.txt\x00",
    b"/%c0%ae%c0%ae/secret.txt",
    b"/linkdir/secret.txt",
    b"/linkfile.txt",
    b"/linkdir/",
    b"/linkdir",
    b"/linkdir/secret.h5r/MetaData",
    b"etc/passwd",
    b"http://x/../secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode("latin-1") for t in TRAVERSALS])
def test_get_traversal_refused(layout, data_server, target):
    status, payload = _raw(data_server, "GET", target)
    assert status in (403, 404), (status, payload)
    assert json.loads(payload)["ok"] == "False"
    assert SECRET not in payload


WRITE_TRAVERSALS = [
    b"/../written.txt",
    b"/%2e%2e/written.txt",
    b"/%252e%252e/written.txt",
    b"/..\\written.txt",
    b"/linkdir/written.txt",
    b"/linkdir/sub/written.txt",
    b"/__aggregate_txt/../written.txt",
    b"/__aggregate_txt//" + b"TMP/written.txt",
    b"/__aggregate_txt/%2e%2e/written.txt",
    b"/__aggregate_txt/linkdir/written.txt",
    b"/__aggregate_h5r/../written.h5r/FitResults",
    b"/__aggregate_h5r/linkdir/written.h5r/MetaData",
    b"/__aggregate_h5r/%252e%252e/written.h5r/MetaData",
    b"/~/written.txt",
]


@pytest.mark.parametrize("target", WRITE_TRAVERSALS,
                         ids=[t.decode("latin-1") for t in WRITE_TRAVERSALS])
def test_put_traversal_refused(layout, data_server, target):
    target = target.replace(b"TMP", str(layout).lstrip("/").encode())
    status, payload = _raw(data_server, "PUT", target, b'{"a": 1}')
    assert status in (403, 404), (status, payload)
    assert json.loads(payload)["ok"] == "False"
    outside = [p for p in layout.rglob("written*")]
    assert outside == []


def test_symlink_inside_root_is_served(layout, data_server):
    status, payload = _raw(data_server, "GET", b"/inside/alias.txt")
    assert (status, payload) == (200, b"fine")


def test_listing_hides_links_out_of_root(layout, data_server):
    status, payload = _raw(data_server, "GET", b"/")
    assert status == 200
    assert json.loads(payload) == {"inside/": [1, 2]}


def test_names_outside_pyme_rule_refused(layout, data_server):
    for target in (b"/inside/a%20b.txt", b"/inside/a+b.txt", b"/inside/a;b.txt",
                   b"/inside/%22.txt"):
        status, payload = _raw(data_server, "PUT", target, b"x")
        assert status == 403, target
    assert sorted(os.listdir(layout / "data" / "inside")) == ["alias.txt", "ok.txt"]
