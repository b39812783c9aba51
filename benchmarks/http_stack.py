"""HTTP stack benchmark: our strict ``http.server`` layer against the same endpoint on h11.

Run ``python benchmarks/http_stack.py`` (h11 comes with ``pip install -e '.[bench]'``). A child
process serves one small ``GET /task_advertisements`` JSON reply twice: (a) through
:class:`cluster.http_base.RequestHandler` on :class:`cluster.http_base.Server` (every check our
servers run, answered with ``send_payload`` as the rule server does), (b) through an
``h11.Connection`` per socket on a threading ``socketserver`` (same response bytes). This
process's threads are the workers: 1 and 4 kept-alive ``http.client`` connections. Figures are
the median of 3 rounds (the two stacks alternate within each round); CPU is the server child's
own (``/proc``), per request. The child runs on one core and the clients on the other where the
OS allows pinning. Exits 1 if our stack's throughput falls below 80 % of h11's (issue 10, item 6).
"""
from __future__ import annotations

import argparse
import http.client
import os
import socket
import socketserver
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import cpu_seconds, servers_in_child, verdict  # noqa: E402

PATH = "/task_advertisements"
#: A small adverts reply, as the rule server sends it (under GZIP_MIN_BYTES: never compressed).
BODY = (b'[{"ruleID": "R3A9F0C2E1B7D4", "taskTemplate": "{\\"id\\": \\"{{ruleID}}~{{taskID}}\\", '
        b'\\"type\\": \\"localization\\"}", "availableTaskIDs": ['
        + b", ".join(str(i).encode() for i in range(1000, 1040)) + b"]}]")
ROUNDS = 3
TARGET = 0.80  # our requests/s at least this share of h11's


# -- server process --------------------------------------------------------------------------
def _pin(cpu: int) -> None:
    """Run this process on one core (where the OS and machine allow it)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def serve() -> None:
    import h11

    from cluster.http_base import RequestHandler, ServerThread

    class Ours(RequestHandler):
        def do_GET(self):  # noqa: N802 - stdlib naming
            self.read_body()
            self.send_payload(200, BODY)

    class H11Handler(socketserver.BaseRequestHandler):
        """One ``h11.Connection`` per socket; each reply written in one ``sendall``."""

        def handle(self) -> None:
            sock = self.request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = h11.Connection(h11.SERVER)
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        sock.sendall(conn.send(h11.Response(
                            status_code=exc.error_status_hint,
                            headers=[("Content-Length", "0"), ("Connection", "close")])))
                    return
                if event is h11.NEED_DATA:
                    data = sock.recv(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                elif isinstance(event, h11.EndOfMessage):  # request complete: answer it
                    sock.sendall(b"".join((
                        conn.send(h11.Response(status_code=200, reason=b"OK", headers=[
                            ("Content-Type", "application/json"),
                            ("Content-Length", str(len(BODY)))])),
                        conn.send(h11.Data(data=BODY)),
                        conn.send(h11.EndOfMessage()))))
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
                # Request and Data events: nothing to do until EndOfMessage

    class H11Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    _pin(1)
    ours = ServerThread(Ours, name="ours").start()
    h11_server = H11Server(("127.0.0.1", 0), H11Handler)
    threading.Thread(target=h11_server.serve_forever, daemon=True).start()
    print(ours.url, f"http://127.0.0.1:{h11_server.server_address[1]}", os.getpid(), flush=True)
    sys.stdin.read()
    h11_server.shutdown()
    h11_server.server_close()
    ours.stop()


# -- client side -----------------------------------------------------------------------------
def _hammer(port: int, n: int, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(n):
            conn.request("GET", PATH)
            resp = conn.getresponse()
            if resp.read() != BODY or resp.status != 200:
                errors.append(resp.status)
                return
    finally:
        conn.close()


def run(port: int, server_pid: int, clients: int, requests: int) -> tuple[float, float | None]:
    """``requests`` GETs over ``clients`` kept-alive connections: (requests/s, server CPU µs per
    request or None)."""
    errors: list = []
    threads = [threading.Thread(target=_hammer, args=(port, requests // clients, errors))
               for _ in range(clients)]
    cpu0 = cpu_seconds([server_pid])
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    cpu1 = cpu_seconds([server_pid])
    if errors:
        raise RuntimeError(f"port {port} answered status {errors[0]} or another body")
    done = requests // clients * clients
    cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / done * 1e6
    return done / wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=10000, help="requests per run")
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    try:
        import h11
    except ImportError:
        print("h11 is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    _pin(0)
    load = f"; load {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"h11 {h11.__version__}, {len(BODY)}-byte reply, {args.requests} requests a run, "
          f"median of {ROUNDS}{load}")
    rows = []
    checks = []
    with servers_in_child([__file__, "--serve"], timeout=10) as (ours_url, h11_url, pid):
        ports = {"ours": int(ours_url.rsplit(":", 1)[1]), "h11": int(h11_url.rsplit(":", 1)[1])}
        for name, port in ports.items():  # warm up both (threads, code paths)
            run(port, int(pid), 1, 200)
        for clients in (1, 4):
            results: dict[str, list[tuple[float, float | None]]] = {name: [] for name in ports}
            for _ in range(ROUNDS):
                for name, port in ports.items():
                    results[name].append(run(port, int(pid), clients, args.requests))
            medians = {}
            for name, runs in results.items():
                rate = statistics.median(r for r, _ in runs)
                cpus = [c for _, c in runs if c is not None]
                cpu = statistics.median(cpus) if cpus else None
                medians[name] = rate
                rows.append((f"{name}, {clients} connection{'s' * (clients > 1)}",
                             f"{rate:,.0f} req/s",
                             "n/a" if cpu is None else f"{cpu:.0f} µs CPU/req (server)",
                             ", ".join(f"{r:,.0f}" for r, _ in runs)))
            share = medians["ours"] / medians["h11"]
            rows.append((f"ours / h11, {clients} connection{'s' * (clients > 1)}", f"{share:.0%}",
                         "", ""))
            checks.append((f"ours >= {TARGET:.0%} of h11's requests/s with {clients} "
                           f"connection{'s' * (clients > 1)} ({share:.0%})", share >= TARGET))
    for row in rows:
        print(f"{row[0]:<28} {row[1]:>14}  {row[2]:<26} {row[3]}")
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
