"""The activity log: what happened to the analyses, with times, as plain lines anyone can copy.

Launches, failures, the cluster going away and coming back, automatic launches, worker restarts:
the places that know call :meth:`ActivityLog.add`; a window shows :meth:`ActivityLog.entries`
and copies :meth:`ActivityLog.text`. Bounded (the oldest entries go first), thread-safe, no Qt.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

#: What an entry is about (its ``kind``), in the words the log shows.
KINDS = ("launch", "failure", "cluster", "auto-launch", "workers", "acquisition", "abort")
MAX_ENTRIES = 2000


@dataclass(frozen=True)
class Activity:
    """One thing that happened: when (seconds since the epoch), what kind, and a sentence."""

    when: float
    kind: str
    text: str

    def line(self) -> str:
        """``2026-11-30 01:02:03  launch       Launched #1 …`` (local time)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.when))
        return f"{stamp}  {self.kind:<12} {self.text}"


class ActivityLog:
    """The last ``max_entries`` activities, oldest first; ``on_add(activity)`` is called (on the
    adding thread) for each new one."""

    def __init__(self, max_entries: int = MAX_ENTRIES,
                 on_add: Callable[[Activity], None] | None = None):
        self._entries: deque[Activity] = deque(maxlen=max_entries)
        self._lock = threading.Lock()
        self.on_add = on_add

    def add(self, kind: str, text: str, when: float | None = None) -> Activity:
        """Record one activity (``kind`` one of :data:`KINDS`; ValueError otherwise)."""
        if kind not in KINDS:
            raise ValueError(f"unknown activity kind {kind!r} (known: {', '.join(KINDS)})")
        activity = Activity(time.time() if when is None else float(when), kind,
                            " ".join(str(text).split()))  # one line each
        with self._lock:
            self._entries.append(activity)
        if self.on_add is not None:
            self.on_add(activity)
        return activity

    @property
    def max_entries(self) -> int:
        return self._entries.maxlen or 0

    def entries(self, kind: str | None = None) -> list[Activity]:
        with self._lock:
            return [a for a in self._entries if kind is None or a.kind == kind]

    def text(self) -> str:
        """Every entry, one line each (what *Copy* puts on the clipboard)."""
        return "\n".join(a.line() for a in self.entries())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
