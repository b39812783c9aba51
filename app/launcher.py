"""Pushing a chain to the cluster from a pool thread, never the GUI thread.

:class:`Launcher` turns a chain's factories into rules for one series and pushes the first (the
server creates the follow-ons when each step finishes). It remembers which launch, step and series
each first rule belongs to, for the rule table. A failure is reported as one clear sentence; the
chain itself is never touched.
"""
from __future__ import annotations

import itertools
import logging
import posixpath
import time
from dataclasses import dataclass
from typing import Any

from PyQt5.QtCore import QObject, pyqtSignal

from rules.chain import pushed_outputs, rule_for_series
from rules.connection import Cluster
from rules.errors import ClusterError, ClusterUnreachable, RequestRefused
from rules.patterns import PatternError
from rules.uris import parse_cluster_uri
from widgets.background import BackgroundCall, CallSignals, TaskPool
from widgets.rule_table import RuleLabel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterAddress:
    """Where a cluster is: its rule server, data servers and name (plain data for threads)."""

    ruleserver: str
    dataservers: tuple[str, ...]
    serverfilter: str | None = None
    embedded: bool = False
    #: the data folder on this machine (the embedded cluster's), for *Show in folder*
    root: str | None = None

    def connect(self) -> Cluster:
        return Cluster(self.ruleserver, list(self.dataservers), self.serverfilter)


@dataclass
class LaunchRequest:
    """One launch: a chain's factories (first one chained to the rest) for one series."""

    number: int
    factories: list
    series_uri: str
    step_names: list[str]
    address: ClusterAddress
    spooler: Any = None

    @property
    def label(self) -> str:
        return f"#{self.number} {time.strftime('%H:%M')}"


def describe_error(exc: BaseException) -> str:
    """One sentence for a failed launch (no traceback)."""
    if isinstance(exc, ClusterUnreachable):
        return f"The cluster did not answer ({exc.url}). Is it running? Nothing was launched."
    if isinstance(exc, RequestRefused):
        detail = exc.server_message or str(exc)
        return f"The cluster refused the chain: {detail}"
    if isinstance(exc, PatternError):
        return f"A pattern could not be filled in: {exc}"
    if isinstance(exc, ClusterError):
        return f"The cluster could not take the chain: {exc}"
    return f"The chain is not valid: {exc}"


def push_first_rule(request: LaunchRequest) -> tuple:
    """Push ``request``'s first rule; returns ``(request, rule, cluster, outputs)`` where
    ``outputs`` are the ``(label, URI)`` files the chain really writes.

    Runs on a pool thread. On failure the cluster connection is closed and the error raised.
    """
    cluster = request.address.connect()
    try:
        rule = rule_for_series(request.factories, request.series_uri, request.spooler)
        rule.push(cluster)
        outputs = pushed_outputs(rule)
    except BaseException:
        cluster.close()
        raise
    return request, rule, cluster, outputs


def series_label(series_uri: str) -> str:
    return posixpath.basename(parse_cluster_uri(series_uri).path.rstrip("/")) or series_uri


class Launcher(QObject):
    """Pushes chains off the GUI thread and keeps their rules' labels.

    Signals
    -------
    launched(str, str)
        A chain was pushed: its launch label and its first rule's ID.
    launchFailed(str)
        A launch failed; the argument is the message to show.
    labelsChanged(dict)
        ``{rule_id: RuleLabel}`` of every rule launched from this window.
    """

    launched = pyqtSignal(str, str)
    launchFailed = pyqtSignal(str)
    labelsChanged = pyqtSignal(dict)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pool = TaskPool(2, name='launcher')
        self._numbers = itertools.count(1)
        self._labels: dict[str, RuleLabel] = {}
        self._rules: list = []
        self._clusters: list[Cluster] = []
        self._pending = 0
        self._outputs: dict[str, list[tuple[str, str]]] = {}
        self._signals = CallSignals(self)
        self._signals.done.connect(self._on_succeeded)
        self._signals.failed.connect(self._on_failed)

    @property
    def labels(self) -> dict[str, RuleLabel]:
        return dict(self._labels)

    def outputs(self, rule_id: str) -> list[tuple[str, str]]:
        """``(label, URI)`` of the files the chain launched as ``rule_id`` really writes."""
        return list(self._outputs.get(rule_id, []))

    @property
    def busy(self) -> bool:
        return self._pending > 0

    @property
    def rules(self) -> list:
        """Rules pushed from this window (their release loops run until :meth:`shutdown`)."""
        return list(self._rules)

    def launch(self, factories: list, series_uri: str, step_names: list[str],
               address: ClusterAddress, spooler: Any = None) -> int:
        """Start pushing ``factories`` (already chained) for ``series_uri`` (live from an in-process
        ``spooler`` when given); returns the launch number.

        The result arrives as :attr:`launched` or :attr:`launchFailed`.
        """
        if not factories:
            raise ValueError("the chain is empty")
        request = LaunchRequest(next(self._numbers), list(factories), series_uri,
                                list(step_names), address, spooler)
        self._pending += 1
        self._pool.start(BackgroundCall(f"launch {request.number}",
                                        lambda: push_first_rule(request), self._signals,
                                        describe=describe_error))
        return request.number

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Wait for pushes in flight, stop release loops and close connections."""
        done = self._pool.waitForDone(timeout_ms)
        for rule in self._rules:
            rule.cleanup()
        for cluster in self._clusters:
            cluster.close()
        self._rules, self._clusters = [], []
        return done

    def _on_succeeded(self, _tag: str, pushed: tuple) -> None:
        request, rule, cluster, outputs = pushed
        self._pending -= 1
        self._outputs[rule.rule_id] = list(outputs)
        self._rules.append(rule)
        self._clusters.append(cluster)
        names = request.step_names or ["step 1"]
        launch = request.label
        self._labels[rule.rule_id] = RuleLabel(launch, names[0], series_label(request.series_uri),
                                               tuple(names[1:]))
        logger.info("launch %s: rule %s for %s", launch, rule.rule_id, request.series_uri)
        self.labelsChanged.emit(self.labels)
        self.launched.emit(launch, rule.rule_id)

    def _on_failed(self, _tag: str, message: str) -> None:
        self._pending -= 1
        self.launchFailed.emit(message)
