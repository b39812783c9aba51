"""Many new files PUT to one data server over one kept-alive connection, pipelined.

A spooler writes hundreds of frames a second; waiting for each reply before sending the next
costs a round trip per frame.  :class:`PipelinedPuts` sends each PUT as soon as it is given (HTTP/1.1
pipelining, which PYME's data server and ours answer in order) and reads the replies on a thread
of its own; ``on_stored(path)`` is called once the server has confirmed a file, in the order
given.  At most ``window`` requests wait for their reply.  The first refusal or lost connection
is raised by the next :meth:`put` or by :meth:`flush`; files after it may not have been written.
"""
from __future__ import annotations

import collections
import os
import socket
import threading
from typing import Callable
from urllib.parse import quote, urlsplit

from .errors import ClusterError, ClusterUnreachable, RequestRefused
from .ruleserver_client import TOKEN_ENV, TOKEN_HEADER
from .uris import check_name

MAX_REPLY_BYTES = 1 << 20


class PipelinedPuts:
    """Write-once PUTs of files (bare cluster paths) to the data server at ``url``."""

    def __init__(self, url: str, *, on_stored: Callable[[str], None] | None = None,
                 window: int = 64, timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"pipelined PUTs need an http:// data server URL, got {url!r}")
        self.url = url.rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self._host = parts.netloc
        self._on_stored = on_stored
        self._timeout = timeout
        try:
            self._sock = socket.create_connection((parts.hostname, parts.port or 80), timeout)
        except OSError as exc:
            raise ClusterUnreachable(url, str(exc)) from exc
        self._sock.settimeout(None)     # replies may be far apart; waits are bounded below
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._replies = self._sock.makefile("rb")
        token = os.environ.get(TOKEN_ENV)
        self._extra = f"{TOKEN_HEADER}: {token}\r\n" if token else ""
        self._pending: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._window = window
        self._closed = False
        self.error: ClusterError | None = None
        self._reader = threading.Thread(target=self._read_replies, name="pipelined-puts",
                                        daemon=True)
        self._reader.start()

    # -- writing ------------------------------------------------------------------------------
    def put(self, path: str, data: bytes) -> None:
        """Send ``data`` as the new file ``path`` (waits while ``window`` replies are due)."""
        bare = check_name(path)
        with self._cond:
            if not self._cond.wait_for(lambda: self.error is not None or self._closed
                                       or len(self._pending) < self._window, self._timeout):
                self._fail(ClusterUnreachable(self.url, f"no answer for {self._timeout:g} s"))
            self._raise_error()
            if self._closed:
                raise ClusterError("these pipelined PUTs are closed")
            self._pending.append(bare)
        head = (f"PUT {self._prefix}/{quote(bare)} HTTP/1.1\r\nHost: {self._host}\r\n"
                f"Content-Length: {len(data)}\r\n{self._extra}\r\n").encode("latin-1")
        try:
            self._sock.sendall(head + data)
        except OSError as exc:
            self._fail(ClusterUnreachable(self.url, f"lost while writing {bare}: {exc}"))
            self._raise_error()

    def flush(self) -> None:
        """Wait until every file sent is confirmed; raise the first error."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.error is not None or not self._pending,
                                       self._timeout):
                self._fail(ClusterUnreachable(
                    self.url, f"{len(self._pending)} file(s) unconfirmed after {self._timeout:g} s"))
            self._raise_error()

    def close(self) -> None:
        """Stop (without waiting for replies still due: :meth:`flush` first to keep them)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._reader.join(5)

    def __enter__(self) -> "PipelinedPuts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- replies ------------------------------------------------------------------------------
    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _fail(self, error: ClusterError) -> None:
        with self._cond:
            if self.error is None:
                self.error = error
            self._cond.notify_all()

    def _read_replies(self) -> None:
        try:
            while True:
                status, body = self._read_reply()
                if status is None:
                    break
                with self._cond:
                    path = self._pending.popleft() if self._pending else None
                if path is None:
                    raise ClusterError(f"the data server {self.url} answered a request never sent")
                if status == 405:
                    raise FileExistsError(f"{path} already exists (cluster files are write-once)")
                if status >= 400:
                    message = body.decode("utf-8", "replace").strip()[:500]
                    raise RequestRefused(f"PUT {path} refused ({status}): {message}",
                                         status=status, server_message=message, url=self.url)
                if self._on_stored is not None:
                    self._on_stored(path)
                with self._cond:
                    self._cond.notify_all()
        except ClusterError as exc:
            self._fail(exc)
        except FileExistsError as exc:
            self._fail(RequestRefused(str(exc), status=405, url=self.url))
        except OSError as exc:
            if not self._closed:
                self._fail(ClusterUnreachable(self.url, f"connection lost: {exc}"))
        with self._cond:
            if self._pending and self.error is None and not self._closed:
                self.error = ClusterUnreachable(
                    self.url, f"closed the connection with {len(self._pending)} file(s) unconfirmed")
            self._cond.notify_all()

    def _read_reply(self) -> tuple[int | None, bytes]:
        """One reply's status and body; ``(None, b"")`` at the end of the connection."""
        line = self._replies.readline(65537)
        if not line:
            return None, b""
        try:
            status = int(line.split()[1])
        except (IndexError, ValueError):
            raise ClusterError(f"the data server {self.url} sent {line[:80]!r}, not an HTTP reply") \
                from None
        length = 0
        while (header := self._replies.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length > MAX_REPLY_BYTES:
            raise ClusterError(f"the data server {self.url} sent a {length}-byte reply to a PUT")
        return status, self._replies.read(length)
