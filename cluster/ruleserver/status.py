"""Status replies that never starve the workers: served from a snapshot, at a bounded pace.

Status polling (``/distributor/queues``, its long-poll twin, ``/spoolside/rules``) needs the
table's lock and the interpreter for every rule's counters; fifty pollers in a tight loop used to
take most of both from the workers' adverts, bids and hand-ins. Here one JSON snapshot is built per
change of the table (and at most every ``MAX_AGE`` seconds), and status replies are paced by a
global gate — at most ``per_second`` of them, a poller over its turn sleeping (no CPU, no lock)
— so status traffic costs a bounded share of the server whatever the number of pollers.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

#: A snapshot is rebuilt when the table changed, or when it is older than this (time-based fields).
MAX_AGE = 0.25
#: Status replies per second across all clients.
STATUS_PER_SECOND = 200


class StatusGate:
    """Snapshots of status replies keyed by the table's change counter, and a pacing gate."""

    def __init__(self, version: Callable[[], int], per_second: float = STATUS_PER_SECOND):
        self._version = version
        self._interval = 1.0 / per_second
        self._gate = threading.Lock()
        self._next = 0.0
        self._snapshots: dict[str, tuple[int, float, bytes]] = {}
        self._build_lock = threading.Lock()

    def wait_turn(self) -> None:
        """Sleep until this status request's turn (immediately when status traffic is light)."""
        with self._gate:
            now = time.monotonic()
            turn = max(now, self._next)
            self._next = turn + self._interval
        if turn > now:
            time.sleep(turn - now)

    def snapshot(self, name: str, build: Callable[[], Any]) -> bytes:
        """The JSON of ``build()``, rebuilt only when the table changed or the copy is stale."""
        with self._build_lock:  # one builder at a time; the others reuse its result
            version, now = self._version(), time.monotonic()
            cached = self._snapshots.get(name)
            if cached is not None and cached[0] == version and now - cached[1] < MAX_AGE:
                return cached[2]
            body = json.dumps(build()).encode("utf-8")
            self._snapshots[name] = (version, now, body)
            return body
