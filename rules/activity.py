"""The activity log: what happened to the analyses, with times, as plain lines anyone can copy.

Launches, failures, the cluster going away and coming back, automatic launches, worker restarts:
the places that know call :meth:`ActivityLog.add`; a window shows :meth:`ActivityLog.entries`
and copies :meth:`ActivityLog.text`. Bounded (the oldest entries go first), thread-safe, no Qt.

Given a ``path``, the log is kept across restarts: each entry is appended to that file as one JSON
line as it happens, and the last entries are read back at start (a line cut short by a crash is
skipped). The file is rewritten to its newest entries when it has grown to twice the bound.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .files import atomic_write

logger = logging.getLogger(__name__)

#: What an entry is about (its ``kind``), in the words the log shows.
KINDS = ("launch", "failure", "cluster", "auto-launch", "workers", "acquisition", "abort", "session")
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

    def to_json(self) -> str:
        return json.dumps({"when": self.when, "kind": self.kind, "text": self.text})

    @classmethod
    def from_json(cls, line: str) -> "Activity":
        """ValueError for a line that is not a whole entry."""
        try:
            fields = json.loads(line)
            activity = cls(float(fields["when"]), str(fields["kind"]), str(fields["text"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not an activity entry: {line[:80]!r}") from exc
        if activity.kind not in KINDS:
            raise ValueError(f"unknown activity kind {activity.kind!r}")
        return activity


class ActivityLog:
    """The last ``max_entries`` activities, oldest first; ``on_add(activity)`` is called (on the
    adding thread) for each new one. With ``path`` (a file), kept there across restarts."""

    def __init__(self, max_entries: int = MAX_ENTRIES,
                 on_add: Callable[[Activity], None] | None = None, path: str | Path | None = None):
        self._entries: deque[Activity] = deque(maxlen=max_entries)
        self._lock = threading.Lock()
        self.on_add = on_add
        self.path = Path(path) if path is not None else None
        self._lines_in_file = 0
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.warning("cannot read the activity log %s: %s", self.path, exc)
            return
        self._lines_in_file = len(lines)
        for line in lines:
            try:
                self._entries.append(Activity.from_json(line))
            except ValueError:
                logger.info("skipped a damaged line of %s", self.path)

    def _save(self, activity: Activity) -> None:
        """Append one entry (rewrite the file to the newest entries when it has grown to twice
        the bound); a full or read-only disk costs the file, never the window its log."""
        assert self.path is not None
        try:
            if self._lines_in_file >= 2 * self.max_entries:
                atomic_write(self.path, "".join(a.to_json() + "\n" for a in self._entries))
                self._lines_in_file = len(self._entries)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(activity.to_json() + "\n")
                out.flush()
                os.fsync(out.fileno())
            self._lines_in_file += 1
        except OSError as exc:
            logger.warning("cannot write the activity log %s: %s", self.path, exc)

    def add(self, kind: str, text: str, when: float | None = None) -> Activity:
        """Record one activity (``kind`` one of :data:`KINDS`; ValueError otherwise)."""
        if kind not in KINDS:
            raise ValueError(f"unknown activity kind {kind!r} (known: {', '.join(KINDS)})")
        activity = Activity(time.time() if when is None else float(when), kind,
                            " ".join(str(text).split()))  # one line each
        with self._lock:
            self._entries.append(activity)
            if self.path is not None:
                self._save(activity)
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
