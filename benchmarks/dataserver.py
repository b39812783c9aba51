"""Data server benchmark: spooling PUTs, kept-alive PUT latency, h5r appends, table reads.

Run: ``.venv/bin/python benchmarks/dataserver.py [SCRATCH_PARENT]``. Prints one line per figure.
The data root is a temporary folder in SCRATCH_PARENT (default: the current directory), since file
creation cost depends a lot on the directory (a crowded ``/tmp`` can be 40x slower).
"""
from __future__ import annotations

import io
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.dataserver import DataServer  # noqa: E402

FRAME = 8256  # bytes of a 64x64 uint16 PZF frame, as in the PYME fixture
FIT_DTYPE = np.dtype([("tIndex", "<i4"), ("fitResults", [(n, "<f4") for n in "A x0 y0 s b bx by".split()]),
                      ("nchi2", "<f4")])


def pipelined_spool(server: DataServer, frames: int, batch: int = 50) -> float:
    """Frames/s for PYME-style pipelined PUTs on one connection (``batch`` requests per write)."""
    body = np.random.default_rng(0).integers(0, 65535, FRAME // 2, dtype=np.uint16).tobytes()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = sock.makefile("rb")
    start = time.perf_counter()
    for first in range(0, frames, batch):
        payload = b"".join(
            f"PUT /spool/s1.pcs/frame{i:05d}.pzf HTTP/1.1\r\nConnection: keep-alive\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            for i in range(first, min(first + batch, frames)))
        sock.sendall(payload)
        for _ in range(first, min(first + batch, frames)):
            status = stream.readline()
            assert b" 200 " in status, status
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            stream.read(length)
    elapsed = time.perf_counter() - start
    sock.close()
    return frames / elapsed


def put_latency(server: DataServer, count: int) -> tuple[float, float]:
    session = requests.Session()
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        reply = session.put(f"{server.url}/lat/f{i:05d}.bin", data=b"x" * 1024)
        times.append(time.perf_counter() - t0)
        reply.raise_for_status()
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.95 * len(times))] * 1e3


def h5r_appends(server: DataServer, batches: int, rows: int) -> tuple[float, float]:
    session = requests.Session()
    records = np.zeros(rows, dtype=FIT_DTYPE)
    buffer = io.BytesIO()
    np.save(buffer, records)
    body = buffer.getvalue()
    start = time.perf_counter()
    for _ in range(batches):
        session.put(f"{server.url}/__aggregate_h5r/r/res.h5r/FitResults", data=body).raise_for_status()
    elapsed = time.perf_counter() - start
    t0 = time.perf_counter()
    got = session.get(f"{server.url}/r/res.h5r/FitResults.npy")
    read_s = time.perf_counter() - t0
    assert len(np.load(io.BytesIO(got.content))) == batches * rows
    return batches / elapsed, read_s * 1e3


def main() -> None:
    parent = sys.argv[1] if len(sys.argv) > 1 else "."
    with tempfile.TemporaryDirectory(prefix="dataserver-bench-", dir=parent) as root, \
            DataServer(root) as server:
        rate = pipelined_spool(server, 5000)
        print(f"pipelined spool PUTs (8 KB frames, one connection): {rate:,.0f} frames/s "
              f"({rate * FRAME / 1e6:,.1f} MB/s)")
        p50, p95 = put_latency(server, 500)
        print(f"kept-alive PUT latency (requests, 1 KB): p50 {p50:.2f} ms, p95 {p95:.2f} ms")
        per_s, read_ms = h5r_appends(server, 300, 100)
        print(f"h5r appends (100-row .npy batches): {per_s:,.0f} batches/s; "
              f"read back 30,000 rows as .npy: {read_ms:.1f} ms")


if __name__ == "__main__":
    main()  # figures only, no targets: exits non-zero only when a measurement fails
