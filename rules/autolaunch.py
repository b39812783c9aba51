"""Hands-free analysis: launch a chain on every new series that appears on the cluster.

:class:`AutoLauncher` polls the data servers' glob endpoint for ``<pattern>/metadata.json`` (PYME's
spooler writes ``metadata.json`` first, §5.1), so a series is seen as soon as it starts spooling,
whoever spools it. Series present when watching starts are left alone; each new one is launched
once, with the chain's launch context, and a live series is followed as frames arrive (the
localisation rule's release loop). Launches are reported to a callback.

A pattern may name today's date: ``{{date}}`` is ``<year>_<month>_<day>`` without leading zeros,
the day folder PYME Acquire spools into (``<user>/2026_1_5``), so ``*/{{date}}/*.pcs`` follows
today's acquisitions; ``{{year}}``, ``{{month}}`` and ``{{day}}`` are its parts. The date is taken
at each poll, so a watch left running moves on to the next day's folder at midnight.
"""
from __future__ import annotations

import datetime
import fnmatch
import logging
import posixpath
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .chain import rule_for_series
from .connection import Cluster
from .errors import ClusterError
from .factories import RuleFactory
from .patterns import PatternError, substitute
from .rule import Rule
from .uris import cluster_path, make_cluster_uri

logger = logging.getLogger(__name__)

SERIES_SUFFIX = ".pcs"
_GLOB_CHARS = "*?["


def date_variables(today: datetime.date) -> dict[str, str]:
    """``{{date}}`` (PYME Acquire's day folder, ``2026_1_5``), ``{{year}}``, ``{{month}}``,
    ``{{day}}`` of ``today``."""
    return {"date": f"{today.year}_{today.month}_{today.day}", "year": str(today.year),
            "month": str(today.month), "day": str(today.day)}


def series_glob(pattern: str, today: datetime.date | None = None) -> str:
    """The cluster glob for a series pattern: ``auto/*.pcs`` as is, a folder ``auto`` →
    ``auto/*.pcs``, date variables filled in for ``today`` (default: the local date);
    ValueError for an empty pattern, an unknown variable, or a pattern that can match no
    series."""
    pattern = substitute(pattern, date_variables(today or datetime.date.today()))
    bare = cluster_path(pattern).strip().strip("/")
    if not bare:
        raise ValueError("give a pattern for the series, e.g. 'auto/*.pcs' or a folder")
    if not any(c in bare for c in _GLOB_CHARS) and not bare.endswith(SERIES_SUFFIX):
        bare = posixpath.join(bare, "*" + SERIES_SUFFIX)
    if not (bare.endswith(SERIES_SUFFIX) or bare.endswith("*")):
        raise ValueError(f"pattern {pattern!r} cannot match a series (series are '<name>.pcs' "
                         "folders)")
    return bare


@dataclass(frozen=True)
class Launch:
    """One auto-launch: the series, the first rule's ID (None if it failed) and the time it took
    from seeing ``metadata.json`` to the pushed rule; ``error`` when it failed."""

    series_uri: str
    rule_id: str | None
    seconds: float
    error: str | None = None


class AutoLauncher:
    """Launch the chain ``factories`` on each new series matching ``pattern`` (see
    :func:`series_glob`), built as the window and ``spoolside launch`` build it
    (:func:`rules.chain.rule_for_series`: a series on the cluster, followed while it spools).

    :meth:`poll` does one round (for tests and callers with their own loop); :meth:`start` polls
    every ``interval`` seconds on a thread until :meth:`stop`.
    """

    def __init__(self, cluster: Cluster, factories: list[RuleFactory], pattern: str, *,
                 on_launch: Callable[[Launch], None] | None = None, interval: float = 0.2):
        if not factories:
            raise ValueError("the chain is empty")
        self.cluster = cluster
        self.factories = list(factories)
        self.pattern = pattern
        series_glob(pattern)  # refused here, not at the first poll
        self.on_launch = on_launch
        self.interval = interval
        self._seen: set[str] | None = None
        self._rules: list[Rule] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def glob(self) -> str:
        """The glob of today (a pattern with ``{{date}}`` changes at midnight)."""
        return series_glob(self.pattern)

    def matches(self, series_path: str) -> bool:
        return fnmatch.fnmatchcase(cluster_path(series_path).strip("/"), self.glob)

    def _series_with_metadata(self) -> set[str]:
        uris = self.cluster.data.cglob(self.glob + "/metadata.json")
        return {cluster_path(uri).strip("/").rsplit("/", 1)[0] for uri in uris}

    def poll(self) -> list[Launch]:
        """One round: launch the chain on every series that got a ``metadata.json`` since the
        last round (the first round only records what is already there)."""
        found = self._series_with_metadata()
        if self._seen is None:
            self._seen = found
            logger.info("watching %s: %d series already there are left alone", self.glob,
                        len(found))
            return []
        new = sorted(found - self._seen)
        self._seen |= found
        launches = [self._launch(path) for path in new]
        self._rules = [r for r in self._rules if r.releasing]
        return launches

    def _launch(self, path: str) -> Launch:
        started = time.monotonic()
        uri = make_cluster_uri(path, self.cluster.serverfilter)
        try:
            rule = rule_for_series(self.factories, uri)
            rule.push(self.cluster)
        except (ClusterError, PatternError, ValueError, TypeError, FileExistsError,
                FileNotFoundError) as exc:
            launch = Launch(uri, None, time.monotonic() - started, str(exc))
            logger.warning("auto-launch on %s failed: %s", uri, exc)
        else:
            self._rules.append(rule)
            launch = Launch(uri, rule._pushed_id(), time.monotonic() - started)
            logger.info("auto-launched rule %s on %s", launch.rule_id, uri)
        if self.on_launch is not None:
            self.on_launch(launch)
        return launch

    # -- background polling ---------------------------------------------------------------
    def start(self) -> "AutoLauncher":
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="spoolside-autolaunch",
                                            daemon=True)
            self._thread.start()
        return self

    def run(self) -> None:
        """Poll until :meth:`stop`; an unreachable cluster is retried, not fatal."""
        while not self._stop.is_set():
            try:
                self.poll()
            except ClusterError as exc:
                logger.warning("auto-launch: cannot list series: %s", exc)
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for rule in self._rules:
            rule.cleanup()
        self._rules.clear()
