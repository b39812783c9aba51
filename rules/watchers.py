"""Rule progress as plain data (:class:`RuleStatus`) and watchers that report it to callbacks.

Watchers are built and owned by their callers; nothing runs at import. The GUI runs
:func:`fetch_statuses` on its own thread; scripts use :class:`RuleWatcher` (one thread, many rules,
one callback per rule) or :class:`RuleGroupWatcher` (one ``/distributor/queues`` request per poll for
all rules on a server, one callback with the whole list).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from .errors import ClusterError
from .ruleserver_client import DEFAULT_TIMEOUT

logger = logging.getLogger(__name__)

STATES = ("waiting", "running", "finished", "failed", "aborted", "expired")


@dataclass(frozen=True)
class RuleStatus:
    """One rule's counters as the rule server reports them (§1.3)."""

    rule_id: str
    posted: int
    running: int
    completed: int
    failed: int
    timed_out: int
    complete_after_timeout: int
    average_cost: float
    active: bool
    finished: bool
    expired: bool
    parent_id: str | None = None
    reachable: bool = True
    #: tasks of the earlier steps of its chain that had failed when this follow-on was created:
    #: it runs on a partial input (Spoolside's ``tasksFailedUpstream``; 0 on PYME)
    failed_upstream: int = 0

    @property
    def state(self) -> str:
        """One of ``waiting``, ``running``, ``finished``, ``failed``, ``aborted``, ``expired``."""
        if self.finished:  # a finished rule stays finished while the server retains it
            return "failed" if self.failed > 0 else "finished"
        if self.expired:
            return "expired"
        if not self.active:
            return "aborted"
        if self.running > 0 or self.completed + self.failed > 0:
            return "running"
        return "waiting"

    @property
    def partial_input(self) -> str:
        """"" or a sentence saying this step runs on a partial input (earlier steps' failures)."""
        if not self.failed_upstream:
            return ""
        n = self.failed_upstream
        return (f"partial input: {n} task{'s' if n != 1 else ''} of the earlier steps failed "
                "(e.g. frames not localised)")

    @property
    def done(self) -> int:
        """Tasks completed or failed."""
        return self.completed + self.failed

    @property
    def progress(self) -> float:
        """Fraction of posted tasks done (0 when none posted)."""
        return self.done / self.posted if self.posted else 0.0

    @property
    def terminal(self) -> bool:
        """True when the rule will not change any more (finished, failed, aborted or expired)."""
        return self.state in ("finished", "failed", "aborted", "expired")

    @classmethod
    def from_info(cls, rule_id: str, info: dict[str, Any], parent_id: str | None = None) -> RuleStatus:
        """Build from one entry of ``/distributor/queues`` (missing counters read as 0)."""
        def count(key: str) -> int:
            value = info.get(key, 0)
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

        cost = info.get("averageExecutionCost", 0.0)
        return cls(rule_id=rule_id, posted=count("tasksPosted"), running=count("tasksRunning"),
                   completed=count("tasksCompleted"), failed=count("tasksFailed"),
                   timed_out=count("tasksTimedOut"),
                   complete_after_timeout=count("tasksCompleteAfterTimeout"),
                   average_cost=float(cost) if isinstance(cost, (int, float)) else 0.0,
                   active=bool(info.get("active", True)), finished=bool(info.get("finished", False)),
                   expired=bool(info.get("expired", False)), parent_id=parent_id,
                   failed_upstream=count("tasksFailedUpstream"))

    @classmethod
    def gone(cls, rule_id: str, *, parent_id: str | None = None) -> RuleStatus:
        """A rule the server no longer lists although it had not finished (state ``expired``)."""
        return cls(rule_id, 0, 0, 0, 0, 0, 0, 0.0, active=False, finished=False, expired=True,
                   parent_id=parent_id)


def fetch_statuses(client) -> list[RuleStatus]:
    """Every rule on a rule server as :class:`RuleStatus`, in creation order (for the GUI's thread).

    ``client`` is a :class:`~rules.ruleserver_client.RuleServerClient`; parents come from Spoolside's
    ``/spoolside/rules`` where the server has it. Raises :class:`ClusterError` like the client.
    """
    info = client.queue_info()
    try:
        extra = client.extra_rule_info()
    except ClusterError as exc:
        logger.debug("no extra rule info: %s", exc)
        extra = None
    return _statuses(info, extra)


def fetch_status_changes(client, since: int | None, wait: float
                         ) -> tuple[list[RuleStatus], int] | None:
    """:func:`fetch_statuses` once the server's state differs from version ``since`` (at once
    without it), or after ``wait`` seconds: ``(statuses, version)``, one request (Spoolside's
    long poll); None on a server without it (PYME's: poll :func:`fetch_statuses` instead)."""
    reply = client.status_changes(since, wait)
    if reply is None:
        return None
    version, info, extra = reply
    return _statuses(info, extra), version


def _statuses(info: dict[str, dict], extra: dict | None) -> list[RuleStatus]:
    parents: dict[str, str | None] = {}
    for rule_id, entry in (extra or {}).items():
        if isinstance(entry, dict):
            parents[rule_id] = entry.get("parent")
    return [RuleStatus.from_info(rule_id, entry, parents.get(rule_id))
            for rule_id, entry in sorted(info.items())]


def _rule_id_of(rule) -> str:
    rule_id = rule if isinstance(rule, str) else getattr(rule, "rule_id", None)
    if not rule_id:
        raise ValueError("watch() needs a pushed rule or a rule ID")
    return rule_id


def _server_of(rule, default: str | None) -> str:
    if not isinstance(rule, str):
        return rule.cluster.ruleserver_url
    if default is None:
        from .connection import default_cluster
        return default_cluster().ruleserver_url
    return default


class _PollingThread:
    """One owned polling thread over rule servers; subclasses say what to report.

    ``interval`` seconds between polls; ``ruleserver`` for rules given by ID (default: the default
    cluster's); ``session`` a ``requests.Session`` for the clients; ``autostart=False`` leaves
    starting the thread to :meth:`start` (or call :meth:`poll_once` yourself).
    """

    def __init__(self, interval: float = 1.0, ruleserver: str | None = None,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, session=None,
                 autostart: bool = True):
        self.interval = float(interval)
        self.autostart = autostart
        self.timeout = timeout
        self._session = session
        self._default_server = ruleserver.rstrip("/") if ruleserver else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._watched: dict[str, dict[str, Any]] = {}   # server → {rule_id: entry}
        self._added: dict[str, float] = {}
        self._last: dict[str, RuleStatus] = {}   # last listed status of each watched rule
        self._down: set[str] = set()              # servers that did not answer the last poll
        #: seconds a newly watched rule may be missing from the (cached) queue listing
        self.grace = 12.0

    def _add(self, rule, entry: Any) -> str:
        rule_id = _rule_id_of(rule)
        server = _server_of(rule, self._default_server).rstrip("/")
        with self._lock:
            self._watched.setdefault(server, {})[rule_id] = entry
            self._added.setdefault(rule_id, time.monotonic())
        if self.autostart:
            self.start()
        return rule_id

    def _client(self, server: str):
        client = self._clients.get(server)
        if client is None:
            from .ruleserver_client import RuleServerClient
            client = self._clients[server] = RuleServerClient(server, timeout=self.timeout,
                                                                  session=self._session)
        return client

    def start(self) -> None:
        """Start the polling thread (``watch`` does this unless ``autostart=False``)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.poll_once()
                with self._lock:
                    idle = not any(self._watched.values())
                if idle:
                    return
                self._stop.wait(self.interval)
        finally:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def poll_once(self) -> dict[str, list[RuleStatus]]:
        """One polling pass (one queue request per server); returns ``{server: statuses}``."""
        with self._lock:
            servers = {s: dict(rules) for s, rules in self._watched.items() if rules}
        result = {}
        for server, rules in servers.items():
            try:
                info = self._client(server).queue_info()
                reachable = True
                if server in self._down:
                    self._down.discard(server)
                    logger.warning("rule server %s answering again", server)
            except ClusterError as exc:
                if server not in self._down:  # once per outage, not once per poll
                    self._down.add(server)
                    logger.warning("rule server %s: %s", server, exc)
                info, reachable = {}, False
            statuses = []
            now = time.monotonic()
            for rule_id in rules:
                entry = info.get(rule_id)
                last = self._last.get(rule_id)
                if entry is not None:
                    status = self._last[rule_id] = RuleStatus.from_info(rule_id, entry)
                elif not reachable:  # no news: the last known state, marked unreachable
                    status = replace(last or RuleStatus.from_info(rule_id, {}), reachable=False)
                elif last is not None and last.finished:
                    status = last  # finished, then dropped after the server's retention time
                elif last is None and now - self._added.get(rule_id, now) < self.grace:
                    status = RuleStatus.from_info(rule_id, {})  # not listed yet: waiting
                else:
                    status = RuleStatus.gone(rule_id)
                statuses.append(status)
            result[server] = statuses
            self._report(server, rules, statuses)
        return result

    def _report(self, server: str, rules: dict, statuses: list[RuleStatus]) -> None:
        raise NotImplementedError

    def _forget(self, server: str, rule_id: str) -> None:
        with self._lock:
            self._watched.get(server, {}).pop(rule_id, None)
            self._last.pop(rule_id, None)

    @property
    def watching(self) -> list[str]:
        """IDs of the rules being watched."""
        with self._lock:
            return [r for rules in self._watched.values() for r in rules]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (safe from any thread; callbacks are not called afterwards)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class RuleWatcher(_PollingThread):
    """Single object / thread to watch multiple rules; calls ``callback(RuleStatus)`` per rule and
    poll until the rule is finished, failed, aborted or gone (then stops watching it)."""

    def watch(self, rule, callback: Callable[[RuleStatus], None] | None = None) -> str:
        """Watch a pushed :class:`~rules.rule.Rule` (or a rule ID on ``ruleserver``); returns its ID."""
        return self._add(rule, callback)

    def _report(self, server: str, rules: dict, statuses: list[RuleStatus]) -> None:
        for status in statuses:
            callback = rules.get(status.rule_id)
            if callback is not None and not self._stop.is_set():
                try:
                    callback(status)
                except Exception:  # a user's callback must not kill the shared thread
                    logger.exception("rule watcher callback failed for %s", status.rule_id)
            if status.reachable and status.terminal:
                self._forget(server, status.rule_id)


class RuleGroupWatcher(_PollingThread):
    """Watch many rules with one ``/distributor/queues`` request per server and poll; each callback
    gets the ``list[RuleStatus]`` of every watched rule on that server. Rules stay watched until
    :meth:`unwatch` or :meth:`stop`."""

    def __init__(self, interval: float = 1.0, ruleserver: str | None = None,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, session=None,
                 autostart: bool = True):
        super().__init__(interval=interval, ruleserver=ruleserver, timeout=timeout, session=session,
                         autostart=autostart)
        self._callbacks: list[Callable[[list[RuleStatus]], None]] = []
        self.latest: dict[str, RuleStatus] = {}
        self._display: Any = None

    def watch(self, rule) -> str:
        """Add a pushed rule (or a rule ID) to the group; returns its ID."""
        return self._add(rule, None)

    def unwatch(self, rule) -> None:
        rule_id = _rule_id_of(rule)
        with self._lock:
            for rules in self._watched.values():
                rules.pop(rule_id, None)

    def add_callback(self, callback: Callable[[list[RuleStatus]], None]) -> None:
        """Call ``callback(statuses)`` after every poll (from the watcher's thread)."""
        self._callbacks.append(callback)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.poll_once()
                self._stop.wait(self.interval)
        finally:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def _report(self, server: str, rules: dict, statuses: list[RuleStatus]) -> None:
        for status in statuses:
            self.latest[status.rule_id] = status
        if self._stop.is_set():
            return
        for callback in list(self._callbacks):
            try:
                callback(statuses)
            except Exception:  # a user's callback must not kill the shared thread
                logger.exception("rule group watcher callback failed")
        if self._display is not None:
            self._update_display()

    def register(self) -> bool:
        """Show an updating progress table in a Jupyter notebook; False when IPython is absent."""
        try:
            from IPython.display import HTML, display
        except ImportError:
            logger.info("IPython is not installed: no notebook display")
            return False
        self._display = display(HTML(self.html()), display_id=True)
        return True

    def _update_display(self) -> None:
        try:
            from IPython.display import HTML
        except ImportError:
            return
        self._display.update(HTML(self.html()))

    def html(self) -> str:
        """The progress table as HTML (what :meth:`register` shows)."""
        import html as html_lib
        rows = []
        for status in self.latest.values():
            rows.append(f"<tr><td>{html_lib.escape(status.rule_id)}</td><td>{status.state}</td>"
                        f"<td>{status.done}/{status.posted}</td><td>{status.failed}</td>"
                        f"<td><progress value='{status.done}' max='{max(status.posted, 1)}'>"
                        f"</progress></td></tr>")
        return ("<table><tr><th>rule</th><th>state</th><th>done</th><th>failed</th><th></th></tr>"
                + "".join(rows) + "</table>")
