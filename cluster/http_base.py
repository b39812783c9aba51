"""The HTTP layer shared by the embedded rule server and data server.

Both speak HTTP/1.1 with keep-alive, answer every request with a ``Content-Length`` and write
each response in a single ``sendall`` (headers and body together), so a kept-alive client never
meets the 40 ms delayed-ACK stall. Replies are gzip-compressed only when the client asks.

Requests are framed strictly (RFC 9112), so no request can hide another one in its body:
exactly one decimal ``Content-Length`` or none; ``Transfer-Encoding`` is refused with 411 (no
client of either server sends chunked bodies); ``PUT``/``POST`` without a length get 411; a body
where the endpoint takes none gets 400; a body above the endpoint's limit 413 (before any of it is
read); oversized header sections 431; other protocol versions (an HTTP/2 preface) 505; more
than one ``Host`` header 400 (none is accepted: PYME's spooler sends none). A body the
handler left unread is drained (or the connection closed) before the next request is parsed.
Gzip bodies are decompressed in bounded steps, never beyond the limit. Connections idle longer
than ``Limits.idle_timeout`` are closed, and a request head must arrive within
``Limits.header_timeout`` of its first byte (a byte-a-second client is cut off with 408); every
connection has its own thread, so a slow client never delays the others.

Why ``http.server`` plus these checks rather than an HTTP library: measured against h11 0.16.0
serving the same reply (``benchmarks/http_stack.py``, BENCHMARKS.md) this stack is as fast
(99–118 % of h11's requests/s, no more CPU per request), and h11 would leave most of the above to
write by hand anyway (505, 411, bodies on GET, 413, timeouts, threads, access); it would only
take over ``Content-Length`` parsing, 431 and chunked bodies.
"""
from __future__ import annotations

import contextlib
import gzip
import hmac
import http.client
import io
import ipaddress
import json
import logging
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Mapping, overload
from urllib.parse import urlsplit

from rules.ruleserver_client import TOKEN_HEADER

logger = logging.getLogger(__name__)

#: Replies shorter than this go out uncompressed even when gzip is accepted (cheaper for both).
GZIP_MIN_BYTES = 1024
#: Unread request bodies up to this size are read and dropped to keep the connection usable.
MAX_DRAIN_BYTES = 64 << 20
#: Read and decompression step.
CHUNK = 1 << 20
#: Methods whose requests carry no body unless the endpoint says otherwise.
BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})

_DECIMAL = re.compile(r"[0-9]{1,19}")
_INTEGER = re.compile(r"-?[0-9]{1,18}")


@dataclass(frozen=True)
class Limits:
    """Size and time bounds of one server (all configurable; defaults fit a 2,000-frame series
    spooled or PUT whole, and a 1,000,000-task rule)."""

    #: Largest body streamed to disk (a data-server PUT of a file), after decompression.
    max_body: int = 8 << 30
    #: Largest body held in memory (rules, bids, hand-ins, appends, any gzip body), after
    #: decompression (a batch of fit results is well under a megabyte).
    max_memory_body: int = 64 << 20
    #: A kept-alive connection with no new request, or a body/reply that stalls, is closed after this.
    idle_timeout: float = 60.0
    #: The request line and headers must all arrive within this many seconds of their first byte.
    header_timeout: float = 10.0


_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class Access:
    """Who may talk to a server: loopback always; beyond it, clients in ``networks`` (PYME's
    clients and workers, which send no token) and clients that send ``token``."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    token: str | None = None
    #: Loopback clients are admitted without a token (tests turn this off to see refusals).
    loopback: bool = True

    @classmethod
    def parse(cls, networks: list[str] | tuple[str, ...] = (),
              token: str | None = None) -> "Access":
        """From ``--allow`` texts (``192.168.1.0/24``, ``10.0.0.5``); ValueError names a bad one."""
        parsed = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"--allow {text!r} is not a network or address: {exc}") from None
        return cls(tuple(parsed), token or None)

    def admits(self, client: str, token: str | None) -> bool:
        try:
            address = ipaddress.ip_address(client.split("%")[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped
        trusted = (_LOOPBACK if self.loopback else ()) + self.networks
        if any(address in net for net in trusted):
            return True
        return (self.token is not None and token is not None
                and hmac.compare_digest(token.encode(), self.token.encode()))


def is_loopback(bind: str) -> bool:
    """Whether a bind address only listens on this machine."""
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def _known_host_names() -> frozenset[str]:
    names = {"localhost", socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return frozenset(names)


class HTTPError(Exception):
    """Raised inside a handler to answer with an error status and a JSON body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@overload
def query_int(params: Mapping[str, str], name: str, default: int,
              minimum: int | None = None) -> int: ...
@overload
def query_int(params: Mapping[str, str], name: str, default: None = None,
              minimum: int | None = None) -> int | None: ...
def query_int(params: Mapping[str, str], name: str, default: int | None = None,
              minimum: int | None = None) -> int | None:
    """Integer query parameter ``name`` (plain decimal; absent or blank: ``default``); 400 if it
    is not one or is below ``minimum``. The one parser both servers use."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if not _INTEGER.fullmatch(value):
        raise HTTPError(400, f"query parameter {name} must be an integer, got {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise HTTPError(400, f"query parameter {name} must be at least {minimum}, got {number}")
    return number


class Server(ThreadingHTTPServer):
    """A threaded HTTP server whose connection threads never block interpreter exit."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    #: The application object (rule server, data server) that handlers serve.
    owner: Any = None

    def __init__(self, *args, limits: Limits | None = None, access: Access | None = None,
                 **kwargs):
        self.limits = limits or Limits()
        self.access = access or Access()
        self.host_names = _known_host_names()
        self.trusted_clients: set[str] = set()  # addresses admitted without a token (a cache)
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


class _DeadlineReader(io.RawIOBase):
    """Socket reads that give up after ``idle`` seconds without data or at ``deadline``."""

    def __init__(self, sock: socket.socket, idle: float):
        super().__init__()
        self.sock = sock
        self.idle = idle
        self.deadline: float | None = None
        self.expired = False  # the deadline passed (or a read stalled) while it was set

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        timeout = self.idle
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                self.expired = True
                raise TimeoutError("request head not complete in time")
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            self.expired = self.deadline is not None
            raise


class RequestHandler(BaseHTTPRequestHandler):
    server: Server
    """Base handler: strict framing, bounded body reading (with gzip), single-write replies."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "Spoolside"
    sys_version = ""

    # -- connection and framing ------------------------------------------------------------
    @property
    def limits(self) -> Limits:
        return self.server.limits

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection, self.limits.idle_timeout)
        self._buffer = io.BufferedReader(self._reader, CHUNK // 16)
        self.rfile = self._buffer
        self.body_left = 0
        self._framed = False

    def handle_one_request(self) -> None:
        """Wait (at most the idle timeout) for a request, read its head against the header
        deadline, run ``do_<METHOD>``, then drain what the handler left of the body."""
        self._reader.deadline = None
        self.body_left, self._framed = 0, False
        try:
            if not self._buffer.peek(1):
                self.close_connection = True
                return
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        self._reader.deadline = time.monotonic() + self.limits.header_timeout
        self._reader.expired = False
        super().handle_one_request()  # parse_request → do_<METHOD>; a timeout closes
        if self._reader.expired:  # a slow (or slowloris) client: say why, then hang up
            self._reader.deadline = None
            self.connection.settimeout(1.0)
            self.send_error(408, "request head not received in time")
            return
        if not self.close_connection:
            self.finish_body()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._reader.deadline = None
        self.connection.settimeout(self.limits.idle_timeout)
        return ok and self._check_framing() and self._check_access()

    def handle_expect_100(self) -> bool:
        # Refuse a bad or oversized body before the client sends it.
        return self._check_framing() and super().handle_expect_100()

    def _check_access(self) -> bool:
        """403 unless the client is admitted (loopback, ``--allow`` network or token), a web
        browser's request names this machine as Host (no DNS rebinding) and a state-changing
        request comes from no other web origin (no cross-site requests)."""
        try:
            self._access_problem()
        except HTTPError as exc:
            self.close_connection = True
            self.send_error_json(exc.status, exc.message)
            return False
        return True

    def _access_problem(self) -> None:
        server = self.server
        client = self.client_address[0]
        if client in server.trusted_clients:
            pass
        elif server.access.admits(client, None):
            if len(server.trusted_clients) < 4096:
                server.trusted_clients.add(client)
        elif not server.access.admits(client, self.headers.get(TOKEN_HEADER)):
            raise HTTPError(403, f"{self.client_address[0]} is not allowed: it is not in the "
                                 "cluster's --allow networks and sent no valid token")
        host = self.headers.get("Host")
        browser = (self.headers.get("User-Agent", "").startswith("Mozilla/")
                   or "Sec-Fetch-Mode" in self.headers or "Origin" in self.headers)
        if host is not None and browser:  # a web page on a rebound DNS name: refuse
            try:
                name = (urlsplit("//" + host).hostname or "").lower()
            except ValueError:
                name = ""
            if name not in server.host_names:
                try:
                    ipaddress.ip_address(name)
                except ValueError:
                    raise HTTPError(403, f"Host {host!r} is not this machine") from None
        if self.command in ("POST", "PUT", "DELETE", "PATCH") or self.changes_state():
            origin = self.headers.get("Origin")
            if origin is not None and origin.split("://", 1)[-1].rstrip("/").lower() \
                    != (host or "").lower():
                raise HTTPError(403, f"cross-origin request from {origin!r} refused")
            site = self.headers.get("Sec-Fetch-Site")
            if site is not None and site not in ("same-origin", "none"):
                raise HTTPError(403, f"{site} request from a web page refused")

    def changes_state(self) -> bool:
        """Whether this request (whatever its method) changes the server's state."""
        return False

    def _check_framing(self) -> bool:
        if self._framed:
            return True
        self._framed = True
        try:
            self._check_host()
            self.body_left = self._body_length()
        except HTTPError as exc:
            self.close_connection = True
            self.send_error_json(exc.status, exc.message)
            return False
        return True

    def _check_host(self) -> None:
        """At most one Host header (RFC 9112 §3.2). A request without one is served although
        HTTP/1.1 asks for it: PYME's spooler (``put_files`` / ``Streamer``) pipelines its frame
        PUTs over a raw socket without a Host header (pyme-protocol.md §4)."""
        if len(self.headers.get_all("Host") or []) > 1:
            raise HTTPError(400, "more than one Host header")

    def _body_length(self) -> int:
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get_all("Transfer-Encoding"):
            if lengths:
                raise HTTPError(400, "a request may not have both Transfer-Encoding and "
                                     "Content-Length")
            raise HTTPError(411, "chunked (Transfer-Encoding) request bodies are not supported; "
                                 "send Content-Length")
        if len(lengths) > 1:
            raise HTTPError(400, "more than one Content-Length header")
        if not lengths:
            if self.command in ("PUT", "POST"):
                raise HTTPError(411, f"{self.command} needs a Content-Length header")
            return 0
        text = lengths[0].strip()
        if not _DECIMAL.fullmatch(text):
            raise HTTPError(400, f"Content-Length must be a non-negative decimal integer, "
                                 f"got {lengths[0]!r}")
        length = int(text)
        if length:
            limit = self.body_limit()
            if limit == 0:
                raise HTTPError(400, f"{self.command} {self.path.partition('?')[0]} takes no "
                                     "request body")
            if length > limit:
                raise HTTPError(413, f"request body of {length} bytes is over this server's "
                                     f"limit of {limit} bytes")
        return length

    def body_limit(self) -> int:
        """Largest body this request may carry (0: none). Servers refine this per endpoint."""
        if self.command in BODYLESS_METHODS:
            return 0
        return self.limits.max_memory_body

    def finish_body(self) -> None:
        """Consume what the handler left of the body (or close), so the next request parses."""
        if self.body_left <= 0:
            return
        if self.body_left > MAX_DRAIN_BYTES:
            self.close_connection = True
            return
        try:
            for _ in self._raw_body():
                pass
        except HTTPError:
            self.close_connection = True

    # -- requests -------------------------------------------------------------------------
    def _raw_body(self) -> Iterator[bytes]:
        while self.body_left > 0:
            try:
                chunk = self._buffer.read1(min(self.body_left, CHUNK))
            except (TimeoutError, OSError):
                chunk = b""
            if not chunk:
                self.body_left = 0
                self.close_connection = True
                raise HTTPError(400, "request body ended before its Content-Length")
            self.body_left -= len(chunk)
            yield chunk

    def iter_body(self, limit: int | None = None) -> Iterator[bytes]:
        """The request body in pieces, gunzipped if it says so; 413 once it passes ``limit``
        (default: the in-memory limit), 415 for encodings other than gzip."""
        limit = self.limits.max_memory_body if limit is None else limit
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            yield from self._raw_body()
        elif encoding in ("gzip", "x-gzip"):
            yield from _gunzip(self._raw_body(), limit)
        else:
            self.close_connection = True
            raise HTTPError(415, f"Content-Encoding {encoding!r} is not supported (gzip is)")

    def read_body(self) -> bytes:
        """The whole request body in memory (gunzipped if it says so), within the limit."""
        return b"".join(self.iter_body())

    # -- replies --------------------------------------------------------------------------
    def send_payload(self, status: int, body: bytes, content_type: str = "application/json",
                     headers: dict[str, str] | None = None, compress: bool = True) -> None:
        """Write status line, headers and body in one send (gzipped when the client asks and
        ``compress``)."""
        if (compress and len(body) >= GZIP_MIN_BYTES
                and "gzip" in self.headers.get("Accept-Encoding", "")):
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
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        self.log_request(status, len(body))

    def send_json(self, obj: Any, status: int = 200) -> None:
        self.send_payload(status, json.dumps(obj).encode("utf-8"))

    def send_error_json(self, status: int, message: str) -> None:
        """PYME-shaped error: ``{"ok": "False", "error": "..."}``."""
        self.send_json({"ok": "False", "error": message}, status)

    def send_error(self, code, message=None, explain=None) -> None:
        """Errors found by ``http.server`` itself (bad request line, 431, 505, 501), as JSON."""
        if not hasattr(self, "headers"):
            self.headers = http.client.HTTPMessage()
        for name in ("command", "requestline"):
            if not hasattr(self, name):
                setattr(self, name, "")
        self.close_connection = True
        if not message:
            try:
                message = HTTPStatus(code).phrase
            except ValueError:
                message = str(code)
        self.send_error_json(int(code), message)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if logger.isEnabledFor(logging.DEBUG):  # one line per request: not built unless shown
            logger.debug("%s %s", self.address_string(), format % args)


def _gunzip(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """Decompress (possibly multi-member) gzip ``chunks`` in bounded steps; 413 past ``limit``."""
    inflater, fed, produced = zlib.decompressobj(wbits=31), False, 0

    def step(data: bytes) -> bytes:
        nonlocal produced
        try:
            out = inflater.decompress(data, CHUNK)
        except zlib.error as exc:
            raise HTTPError(400, f"body says gzip but does not decompress: {exc}") from exc
        produced += len(out)
        if produced > limit:
            raise HTTPError(413, f"decompressed body is over this server's limit of "
                                 f"{limit} bytes")
        return out

    for data in chunks:
        while data or (fed and not inflater.eof):
            fed = True
            out = step(data)
            if out:
                yield out
            if inflater.eof:  # a next gzip member may follow
                data = inflater.unused_data
                inflater, fed = zlib.decompressobj(wbits=31), False
            elif inflater.unconsumed_tail:
                data = inflater.unconsumed_tail
            elif out:
                data = b""  # all input taken; collect what zlib still holds
            else:
                break
    if fed and not inflater.eof:
        raise HTTPError(400, "body says gzip but is truncated")


#: How often an idle server's accept loop wakes up by itself; :meth:`ServerThread.stop` wakes it
#: at once with a connection of its own, so this only costs idle CPU, not stop time.
ACCEPT_POLL_SECONDS = 5.0


class ServerThread:
    """Runs a :class:`Server` in a daemon thread; ``url`` is where it listens."""

    def __init__(self, handler_class: type[RequestHandler], bind: str = "127.0.0.1",
                 port: int = 0, name: str = "http", limits: Limits | None = None,
                 access: Access | None = None):
        self.server = Server((bind, port), handler_class, limits=limits, access=access)
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": ACCEPT_POLL_SECONDS},
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
        if started and self._thread.is_alive():
            shutdown = threading.Thread(target=self.server.shutdown, daemon=True)
            shutdown.start()
            while shutdown.is_alive():  # the accept loop sleeps in select(): wake it
                self._poke()
                shutdown.join(0.05)
        self.server.server_close()
        self.server.close_connections()
        if started:
            self._thread.join(timeout=5)

    def _poke(self) -> None:
        """Connect to the listening socket and hang up (wakes the accept loop)."""
        with contextlib.suppress(OSError):
            socket.create_connection((self.host, self.port), timeout=0.5).close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port(bind: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for tests that need to know it in advance)."""
    with socket.socket() as sock:
        sock.bind((bind, 0))
        return sock.getsockname()[1]
