"""The HTTP layer shared by the embedded rule server and data server.

Both speak HTTP/1.1 with keep-alive, answer every request with a ``Content-Length`` and write
each response in a single ``sendall`` (headers and body together), so a kept-alive client never
meets the 40 ms delayed-ACK stall. Replies are gzip-compressed only when the client asks.
"""
from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

#: Replies shorter than this go out uncompressed even when gzip is accepted (cheaper for both).
GZIP_MIN_BYTES = 1024


class HTTPError(Exception):
    """Raised inside a handler to answer with an error status and a JSON body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Server(ThreadingHTTPServer):
    """A threaded HTTP server whose connection threads never block interpreter exit."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    #: The application object (rule server, data server) that handlers serve.
    owner: Any = None

    def __init__(self, *args, **kwargs):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every open keep-alive connection, so a stopped server answers nobody."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):  # noqa: D401 - socketserver override
        logger.debug("connection from %s closed with an error", client_address, exc_info=True)


class RequestHandler(BaseHTTPRequestHandler):
    server: Server
    """Base handler: body reading (with gzip), single-write replies, JSON helpers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "Spoolside"
    sys_version = ""

    # -- requests -------------------------------------------------------------------------
    def read_body(self) -> bytes:
        """Read the request body by ``Content-Length``; gunzip it if it says so."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as exc:
            raise HTTPError(400, "Content-Length is not an integer") from exc
        if length < 0:
            raise HTTPError(400, "negative Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise HTTPError(411, "chunked request bodies are not supported; send Content-Length")
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise HTTPError(400, "request body shorter than its Content-Length")
        if body and "gzip" in self.headers.get("Content-Encoding", "").lower():
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as exc:
                raise HTTPError(400, f"body says gzip but does not decompress: {exc}") from exc
        return body

    # -- replies --------------------------------------------------------------------------
    def send_payload(self, status: int, body: bytes, content_type: str = "application/json",
                     headers: dict[str, str] | None = None) -> None:
        """Write status line, headers and body in one send."""
        if len(body) >= GZIP_MIN_BYTES and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=3)
            headers = dict(headers or {}, **{"Content-Encoding": "gzip"})
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {status} {reason}",
                 f"Content-Type: {content_type}",
                 f"Content-Length: {len(body)}"]
        for key, value in (headers or {}).items():
            lines.append(f"{key}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + body if self.command != "HEAD" else head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        self.log_request(status, len(body))

    def send_json(self, obj: Any, status: int = 200) -> None:
        self.send_payload(status, json.dumps(obj).encode("utf-8"))

    def send_error_json(self, status: int, message: str) -> None:
        """PYME-shaped error: ``{"ok": "False", "error": "..."}``."""
        self.send_json({"ok": "False", "error": message}, status)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s %s", self.address_string(), format % args)


class ServerThread:
    """Runs a :class:`Server` in a daemon thread; ``url`` is where it listens."""

    def __init__(self, handler_class: type[RequestHandler], bind: str = "127.0.0.1",
                 port: int = 0, name: str = "http"):
        self.server = Server((bind, port), handler_class)
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"{name}-{self.port}", daemon=True)

    @property
    def host(self) -> str:
        host = str(self.server.server_address[0])
        return "127.0.0.1" if host in ("", "0.0.0.0") else host

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        started = self._thread.ident is not None  # shutdown() would wait forever otherwise
        if started:
            self.server.shutdown()
        self.server.server_close()
        self.server.close_connections()
        if started:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port(bind: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for tests that need to know it in advance)."""
    with socket.socket() as sock:
        sock.bind((bind, 0))
        return sock.getsockname()[1]
