"""Status replies that never starve the workers: served from a snapshot, at a bounded pace.

Status polling (``/distributor/queues``, its long-poll twin, ``/spoolside/rules``) needs the
table's lock and the interpreter for every rule's counters; fifty pollers in a tight loop used to
take most of both from the workers' adverts, bids and hand-ins. Here one JSON snapshot is built per
change of the table (and at most every ``MAX_AGE`` seconds; its gzipped form is made once too),
and status replies are paced: each connection gets at most one every ``PER_CONNECTION_SECONDS``
(after a short burst, while several poll that fast) and all of them together at most
``per_second``, a poller over its turn sleeping (no CPU, no lock) — so status traffic costs a
bounded share of the server whatever the number of pollers, while a client polling once a second
is answered at once.
"""
from __future__ import annotations

import gzip
import json
import threading
import time
from typing import Any, Callable

#: A snapshot is rebuilt when the table changed, or when it is older than this (time-based fields).
MAX_AGE = 0.25
#: Status replies per second across all clients.
STATUS_PER_SECOND = 100
#: One connection gets at most one status reply of a kind this often, after a burst of a few (a
#: tight-loop poller waits its turn; a client asking twice in a row does not).
PER_CONNECTION_SECONDS = 1.0
PER_CONNECTION_BURST = 4.0
#: Per-connection pacing applies once so many connections went past their budget in a second.
CONTENDED_CONNECTIONS = 4


class Snapshot:
    """A status reply's JSON bytes and, made on first use and kept, their gzipped form."""

    __slots__ = ("body", "_gzipped")

    def __init__(self, body: bytes):
        self.body = body
        self._gzipped: bytes | None = None

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=3)
        return self._gzipped


class StatusGate:
    """Snapshots of status replies keyed by the table's change counter, and a pacing gate."""

    def __init__(self, version: Callable[[], int], per_second: float = STATUS_PER_SECOND):
        self._version = version
        self._interval = 1.0 / per_second
        self._gate = threading.Lock()
        self._next = 0.0
        self._snapshots: dict[str, tuple[int, float, Snapshot]] = {}
        self._build_lock = threading.Lock()
        self._pollers: dict[int, float] = {}  # id of a paced connection → when it last asked

    def wait_turn(self, connection: Any = None, name: str = "") -> None:
        """Sleep until this status request's turn (immediately when status traffic is light).
        While several connections poll past their budget (:data:`CONTENDED_CONNECTIONS` in the
        last second), ``connection`` (the request handler, one per kept-alive connection) is also paced on its
        own per kind of status ``name``: a burst of ``PER_CONNECTION_BURST`` replies, then one
        every ``PER_CONNECTION_SECONDS``."""
        with self._gate:
            now = time.monotonic()
            turn = max(now, self._next)  # a slot of the global pace, taken now
            self._next = turn + self._interval
            if connection is not None:
                buckets = getattr(connection, "status_buckets", None)
                if buckets is None:
                    buckets = connection.status_buckets = {}
                tokens, last = buckets.get(name, (PER_CONNECTION_BURST, now))
                tokens = min(PER_CONNECTION_BURST, tokens + (now - last) / PER_CONNECTION_SECONDS)
                if tokens < 1.0 and self._contended(connection, now):
                    turn = max(turn, now + (1.0 - tokens) * PER_CONNECTION_SECONDS)
                    tokens = 1.0
                buckets[name] = (max(tokens - 1.0, 0.0), max(turn, now))
        if turn > now:
            time.sleep(turn - now)

    def _contended(self, connection: Any, now: float) -> bool:
        """Whether several connections went past their budget in the last second (the caller
        holds the gate); a lone client, however eager, is only held to the global pace."""
        self._pollers[id(connection)] = now
        if len(self._pollers) > 4 * CONTENDED_CONNECTIONS:
            self._pollers = {k: t for k, t in self._pollers.items() if now - t < 1.0}
        return sum(1 for t in self._pollers.values() if now - t < 1.0) >= CONTENDED_CONNECTIONS

    def snapshot(self, name: str, build: Callable[[], Any]) -> Snapshot:
        """The JSON of ``build()``, rebuilt only when the table changed or the copy is stale."""
        with self._build_lock:  # one builder at a time; the others reuse its result
            version, now = self._version(), time.monotonic()
            cached = self._snapshots.get(name)
            if cached is not None and cached[0] == version and now - cached[1] < MAX_AGE:
                return cached[2]
            snapshot = Snapshot(json.dumps(build()).encode("utf-8"))
            self._snapshots[name] = (version, now, snapshot)
            return snapshot
