"""The status watcher: a ``QObject`` on its own ``QThread`` that polls the rule server.

On Spoolside's rule server one long-polled ``/spoolside/status`` request per cycle gives every
rule's counters and parent links as soon as anything changes (``rules.watchers.
fetch_status_changes``), at most one cycle per interval; an idle cluster costs one request per
``long_poll_s``. On a PYME server, ``/distributor/queues`` is polled every interval through
``rules.watchers.fetch_statuses``. The watcher
emits plain frozen ``RuleStatus`` lists and never touches a widget; the window connects
``statusesUpdated`` to the rule table model (a queued connection onto the GUI thread).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from PyQt5.QtCore import QObject, QThread, pyqtSignal, pyqtSlot

from rules.errors import ClusterError, ClusterUnreachable, short_reason
from rules.ruleserver_client import DEFAULT_TIMEOUT, RuleServerClient
from rules.watchers import fetch_status_changes, fetch_statuses

logger = logging.getLogger(__name__)

#: An idle cluster answers the watcher's long poll after this long (one request per this long).
LONG_POLL_S = 20.0


class _Stopped(Exception):
    """:meth:`StatusWatcher.stop` was called while a request was in flight."""


class StatusWatcher(QObject):
    """Polls a rule server every ``interval_s`` seconds until :meth:`stop`.

    Parameters
    ----------
    url
        ``http://host:port`` of the rule server.
    interval_s
        seconds between the starts of two polls.
    make_client
        builds the client on the watcher's thread (default ``RuleServerClient(url, timeout=...)``).
    timeout_s
        request timeout of the default client, seconds or ``(connect, read)``; a server that does
        not answer is reported after it (:meth:`stop` takes effect at once).
    long_poll_s
        how long Spoolside's rule server holds a status request while nothing changes.

    Signals
    -------
    statusesUpdated(list)
        ``list[RuleStatus]`` after every successful poll.
    reachabilityChanged(bool, str)
        the cluster became reachable (True, its URL) or unreachable (False, why); also once after
        the first poll.
    errorOccurred(str)
        the server answered but the reply was refused or malformed (polling goes on).
    rulesLost(list)
        IDs of rules that were running before the server stopped answering and are gone now that
        it answers again: the cluster restarted and lost them (rules still listed carry on).
    finished()
        :meth:`run` returned (connect it to the thread's ``quit``).
    """

    statusesUpdated = pyqtSignal(list)
    reachabilityChanged = pyqtSignal(bool, str)
    errorOccurred = pyqtSignal(str)
    rulesLost = pyqtSignal(list)
    finished = pyqtSignal()

    def __init__(self, url: str, interval_s: float = 1.0, *,
                 make_client: Callable[[], RuleServerClient] | None = None,
                 timeout_s: float | tuple[float, float] = DEFAULT_TIMEOUT,
                 long_poll_s: float = LONG_POLL_S):
        super().__init__()
        self.url = url
        self.interval_s = interval_s
        self.long_poll_s = long_poll_s
        self._long_poll = True              # until the server turns out to be PYME's
        self._version: int | None = None    # the server's state at the last long-poll answer
        self._make_client = make_client or (lambda: RuleServerClient(url, timeout=timeout_s))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reachable: bool | None = None
        self._unfinished: set[str] = set()  # rules running at the last answered poll
        self._outage = False                # a poll went unanswered since then

    @property
    def reachable(self) -> bool | None:
        """The last reachability seen (None before the first poll)."""
        return self._reachable

    @pyqtSlot()
    def run(self) -> None:
        """Poll until stopped (runs on the watcher's thread)."""
        client = None
        try:
            try:
                client = self._make_client()
            except (ValueError, ClusterError) as exc:  # e.g. a URL that is not http(s)://host:port
                logger.error("cannot watch %s: %s", self.url, exc)
                self.errorOccurred.emit(str(exc))
                self._set_reachable(False, str(exc))
                return
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    statuses = self._poll(lambda: self._fetch(client))
                except _Stopped:
                    break
                if statuses is None:  # a failure: retry after the interval, not at once
                    started = time.monotonic()
                    self._version = None  # a restarted server counts from 0 again
                self._wake.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
                self._wake.clear()
        finally:
            if client is not None:
                client.close()
            self.finished.emit()

    def poll_once(self, client) -> list | None:
        """One cycle: fetch, merge parent links, emit. Returns the statuses (None on failure)."""
        return self._poll(lambda: fetch_statuses(client))

    def _fetch(self, client) -> list:
        """The statuses: long-polled from Spoolside's rule server, else polled (PYME's)."""
        if self._long_poll:
            since, wait = self._version, self.long_poll_s if self._version is not None else 0.0
            reply = self._unless_stopped(lambda: fetch_status_changes(client, since, wait))
            if reply is not None:
                statuses, self._version = reply
                return statuses
            self._long_poll = False
            logger.info("rule server %s has no status long poll: polling", self.url)
        return fetch_statuses(client)

    def _unless_stopped(self, call: Callable[[], Any]) -> Any:
        """``call()`` on a helper thread, waited for unless :meth:`stop` comes first (then
        :class:`_Stopped`; the abandoned request ends with the connection)."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = call()
            except BaseException as exc:  # noqa: BLE001 - handed over to the waiting thread
                box["error"] = exc
            finally:
                done.set()
                self._wake.set()

        threading.Thread(target=run, name="StatusWatcher-request", daemon=True).start()
        while not done.is_set():
            if self._stop.is_set():
                raise _Stopped()
            self._wake.wait()
            self._wake.clear()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _poll(self, fetch: Callable[[], list]) -> list | None:
        try:
            statuses = fetch()
        except ClusterUnreachable as exc:
            self._outage = True
            self._set_reachable(False, short_reason(exc.reason or str(exc)))
            return None
        except ClusterError as exc:
            self._set_reachable(True, self.url)
            logger.warning("rule server %s: %s", self.url, exc)
            self.errorOccurred.emit(str(exc))
            return None
        self._set_reachable(True, self.url)
        listed = {status.rule_id for status in statuses}
        lost = sorted(self._unfinished - listed) if self._outage else []
        self._unfinished = {status.rule_id for status in statuses if not status.terminal}
        self._outage = False
        if not self._stop.is_set():
            self.statusesUpdated.emit(statuses)
            if lost:
                logger.warning("rule server %s restarted: rules lost: %s", self.url, lost)
                self.rulesLost.emit(lost)
        return statuses

    def poll_now(self) -> None:
        """Start the next poll without waiting for the interval (safe from any thread)."""
        self._wake.set()

    def stop(self) -> None:
        """Ask the loop to end; safe from any thread, returns at once."""
        self._stop.set()
        self._wake.set()

    def _set_reachable(self, reachable: bool, message: str) -> None:
        if reachable == self._reachable:
            return
        if reachable:
            logger.info("rule server %s reachable", self.url)
        else:
            logger.warning("rule server %s unreachable: %s", self.url, message)
        self._reachable = reachable
        self.reachabilityChanged.emit(reachable, message)


def start_watcher(watcher: StatusWatcher) -> QThread:
    """Move ``watcher`` to a new ``QThread`` and start polling; keep the returned thread.

    To stop: ``watcher.stop(); thread.quit(); thread.wait(...)``.
    """
    thread = QThread()
    thread.setObjectName("StatusWatcher")
    watcher.moveToThread(thread)
    thread.started.connect(watcher.run)
    watcher.finished.connect(thread.quit)
    thread.start()
    return thread


def stop_watcher(watcher: StatusWatcher, thread: QThread, timeout_ms: int = 10000) -> bool:
    """Stop ``watcher`` and wait for its ``thread`` to end; True if it did within the timeout."""
    watcher.stop()
    thread.quit()
    return thread.wait(timeout_ms)
