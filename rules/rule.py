"""The ``Rule`` base class: one object per rule on the rule server, its push and its poll loop.

A rule is built from a context (``RuleFactory.get_rule``), pushed with :meth:`Rule.push`, and then
followed by one thread the rule owns: it releases new tasks in batches as data arrives, calls
:meth:`Rule.on_data_complete` once, and marks the release complete. A spooler can call
:meth:`Rule.notify` so release follows a new frame at once instead of at the next poll; a watchdog
marks the rule complete (and logs why) when data stops arriving for ``data_timeout`` seconds.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .connection import Cluster, default_cluster
from .errors import ClusterError, ProtocolError
from .patterns import pattern_context
from .watchers import RuleWatcher

logger = logging.getLogger(__name__)

#: Rule-server defaults PYME's client sends (§3.1).
DEFAULT_MAX_TASKS = 1000000
RULE_TIMEOUT = 3600

#: Keys of a parent's context that are the parent's own settings and never reach a follow-on step.
_PARENT_ONLY = frozenset({
    "on_completion", "cluster", "poll_interval", "data_timeout", "min_release_interval",
    "analysisMetadata", "resultsFilename", "startAt", "dataSourceModule",
    "spooler", "recipe", "recipeURI", "inputs", "input_templates", "input_patterns", "rule_outputs",
})


class NoNewTasks(Exception):
    """Raised by :meth:`Rule.get_new_tasks` when there is nothing new to release."""


class Rule:
    """A python proxy for one JSON rule on the rule server. Sub-classed for specific rule types.

    Parameters
    ----------
    on_completion : RuleFactory, optional
        A rule to run after this one has completed (also settable with ``RuleFactory.chain``).
    cluster : Cluster, optional
        Where to push (else the cluster given to :meth:`push`, else :func:`default_cluster`).
    poll_interval : float
        Seconds between passes of the release loop when nobody calls :meth:`notify` (PYME: 1 s).
    data_timeout : float or None
        Watchdog: seconds without new data after which a live rule is marked complete (None = never).
    min_release_interval : float
        Least time between two release requests, so a fast spooler's notifications are coalesced
        into batches (a PYME server recounts its task table on every release).
    kwargs
        Any additional arguments, available in the context used when creating the rule template.
    """

    rule_type: str | None = None

    def __init__(self, on_completion=None, *, cluster: Cluster | None = None, poll_interval: float = 1.0,
                 data_timeout: float | None = 600.0, min_release_interval: float = 0.02,
                 **kwargs: Any):
        self._on_completion = on_completion
        self._cluster = cluster
        self.poll_interval = float(poll_interval)
        self.data_timeout = None if data_timeout is None else float(data_timeout)
        self.min_release_interval = float(min_release_interval)
        self._last_release = 0.0
        self._context: dict[str, Any] = dict(kwargs)
        self._rule: dict | None = None
        self._child: Rule | None = None
        self._rule_id: str | None = None
        self._released_end = 0
        self._data_complete_called = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._loop_error: BaseException | None = None
        self._gave_up = False
        self._seen_finished = False
        #: the error of :meth:`on_data_complete`, if it failed
        self.data_complete_error: BaseException | None = None
        self.last_data_time = time.monotonic()

    # ------------------------------------------------------------------ identity and context
    @property
    def rule_id(self) -> str | None:
        """The server's ID for this rule, once pushed."""
        return self._rule_id

    def _pushed_id(self) -> str:
        """The rule ID, for steps that only run after a successful push."""
        if self._rule_id is None:
            raise ClusterError("the rule has not been pushed")
        return self._rule_id

    @property
    def cluster(self) -> Cluster:
        """The cluster this rule is (or will be) pushed to."""
        if self._cluster is None:
            self._cluster = default_cluster()
        return self._cluster

    @property
    def context(self) -> dict[str, Any]:
        """The context the rule was created with (launch context and extra keyword arguments)."""
        return dict(self._context)

    def pattern_variables(self) -> dict[str, Any]:
        """Variables for ``{{name}}`` patterns: series names (when known) and scalar context values."""
        extra = {k: v for k, v in self._context.items()
                 if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
        extra.update({k: v for k, v in (self._context.get("rule_outputs") or {}).items()
                      if isinstance(v, str)})
        series = self._series_for_patterns()
        if series:
            return pattern_context(series, extra=extra)
        return extra

    def _series_for_patterns(self) -> str | None:
        series = self._context.get("seriesName")
        return series if isinstance(series, str) and series else None

    # ------------------------------------------------------------------ the rule as data
    def _task_template(self) -> str:
        """The task template text (with ``{{ruleID}}``, ``{{taskID}}``, maybe ``{{taskInputs}}``)."""
        raise NotImplementedError("Rule is a base class: use LocalisationRule or RecipeRule")

    def _inputs_by_task(self) -> dict | None:
        return None

    @property
    def output_files(self) -> dict[str, str]:
        """Files this rule writes, by role (``results`` for localisation); {} if unknown."""
        return {}

    def output_bindings(self) -> dict[str, str]:
        """``{name a pattern predicts: URI this rule really writes}`` for its files (bare cluster
        paths as keys). They differ when a file existed and the new one got a ``_N`` suffix; the
        follow-on steps' inputs are bound through this map. {} when unknown."""
        return {}

    def _child_context(self) -> dict[str, Any]:
        context = {k: v for k, v in self._context.items() if k not in _PARENT_ONLY}
        series = self._series_for_patterns()
        if series:
            context["seriesName"] = series
        outputs = dict(self.output_files)
        if "results" in outputs:
            outputs["input"] = outputs.pop("results")
        context["rule_outputs"] = outputs
        bound = dict(self._context.get("bound_outputs") or {})
        bound.update(self.output_bindings())
        context["bound_outputs"] = bound
        return context

    @property
    def child(self) -> Rule | None:
        """The follow-on rule object built from ``on_completion`` (None when not chained)."""
        self._populate_rule()
        return self._child

    @property
    def rule(self) -> dict:
        """The JSON rule posted to ``/add_integer_id_rule``: template, inputs and nested follow-ons."""
        return self._populate_rule()

    def _populate_rule(self) -> dict:
        if self._rule is None:
            rule: dict[str, Any] = {"template": self._task_template()}
            inputs = self._inputs_by_task()
            if inputs:
                rule["inputsByTask"] = inputs
            if self._on_completion is not None:
                child = self._on_completion.get_rule(self._child_context())
                child._cluster = self._cluster
                self._child = child
                rule["on_completion"] = child.rule
            self._rule = rule
        return self._rule

    # ------------------------------------------------------------------ data progress (overridden)
    @property
    def data_complete(self) -> bool:
        """Is the underlying data complete?"""
        return True

    @property
    def complete(self) -> bool:
        """Is this rule complete, or do we need to poll for more input?"""
        return True

    def get_new_tasks(self) -> tuple[int, int]:
        """Return ``(release_start, release_end)`` of new tasks to release, or raise ``NoNewTasks``."""
        raise NoNewTasks()

    def on_data_complete(self) -> None:
        """Hook for the end of the data, e.g. filing events at the end of a real-time acquisition."""

    def prepare(self) -> dict[str, int]:
        """Set-up before posting (uploads); returns create arguments: ``max_tasks``, release range."""
        return {}

    # ------------------------------------------------------------------ push and loop
    def push(self, cluster: Cluster | None = None) -> Rule:
        """Prepare, post the rule, and follow it until all its tasks are released. Returns self.

        Raises on any failure and never carries on without a rule ID: a
        :class:`~rules.errors.ClusterError` for the servers, ``ValueError`` (``PatternError``) for bad
        arguments or patterns, ``FileNotFoundError`` for a missing series.
        """
        if self._rule_id is not None:
            raise ClusterError(f"rule already pushed as {self._rule_id}")
        if cluster is not None:
            self._cluster = cluster
        cluster = self.cluster
        post_args = dict(self.prepare())
        rule = self.rule
        max_tasks = int(post_args.pop("max_tasks", DEFAULT_MAX_TASKS))
        rule_id = cluster.rules.add_rule(rule, max_tasks=max_tasks, rule_timeout=RULE_TIMEOUT,
                                         release_start=post_args.get("release_start"),
                                         release_end=post_args.get("release_end"))
        if not isinstance(rule_id, str) or not rule_id:
            raise ProtocolError(f"rule server gave no rule ID (got {rule_id!r})")
        self._rule_id = rule_id
        if "release_end" in post_args:
            self._released_end = int(post_args["release_end"])
        logger.info("posted %s rule %s (max_tasks=%d)", self.rule_type or "rule", rule_id, max_tasks)
        self._after_post(post_args)
        return self

    def _after_post(self, post_args: dict) -> None:
        """Finish the push: no loop when everything is released, else start the release loop."""
        if self.complete:
            self._call_on_data_complete()
            self._finish_release()
            return
        self.last_data_time = time.monotonic()
        self._thread = threading.Thread(target=self._poll_loop, name=f"rule-{self._pushed_id()[:6]}",
                                        daemon=True)
        self._thread.start()

    def _finish_release(self) -> None:
        """Hook: after the last release (live rules call ``/mark_release_complete``)."""

    def notify(self) -> None:
        """Wake the release loop now (a spooler calls this when a frame has been written)."""
        self._wake.set()

    def _call_on_data_complete(self) -> None:
        """Call :meth:`on_data_complete` once; a failure there (e.g. filing events) is logged and
        kept in :attr:`data_complete_error`, and never stops the release being marked complete."""
        if not self._data_complete_called:
            self._data_complete_called = True
            try:
                self.on_data_complete()
            except (ClusterError, OSError, ValueError) as exc:
                self.data_complete_error = exc
                logger.error("rule %s: end-of-data step failed: %s", self._rule_id, exc)

    def _release_new(self) -> bool:
        """Release one batch of new tasks if there is one; True when something was released."""
        try:
            start, end = self.get_new_tasks()
        except NoNewTasks:
            return False
        if end <= start:
            return False
        self.cluster.rules.release_tasks(self._pushed_id(), start, end)
        self._released_end = max(self._released_end, end)
        self.last_data_time = self._last_release = time.monotonic()
        logger.debug("rule %s: released tasks [%d, %d)", self._rule_id, start, end)
        return True

    def _poll_loop(self) -> None:
        try:
            while not self._stop.is_set():
                pause = self._last_release + self.min_release_interval - time.monotonic()
                if pause > 0 and self._stop.wait(pause):
                    break
                self._wake.clear()
                released = self._release_new()
                if self.data_complete:
                    self._call_on_data_complete()
                if self.complete:
                    while self._release_new():  # the race PYME avoids by releasing once more
                        pass
                    self._finish_release()
                    return
                if (self.data_timeout is not None
                        and time.monotonic() - self.last_data_time > self.data_timeout):
                    logger.warning("rule %s: no new data for %.1f s (data_timeout); marking it complete "
                                   "with %d tasks released", self._rule_id, self.data_timeout,
                                   self._released_end)
                    self._gave_up = True
                    self._finish_release()
                    return
                if not released:
                    self._wake.wait(self.poll_interval)
        except ClusterError as exc:
            self._loop_error = exc
            logger.error("rule %s: release loop stopped: %s", self._rule_id, exc)
        except Exception as exc:  # the loop's thread must not die silently: keep and log the cause
            self._loop_error = exc
            logger.exception("rule %s: release loop failed", self._rule_id)

    @property
    def loop_error(self) -> BaseException | None:
        """The cluster error that stopped the release loop, if one did."""
        return self._loop_error

    @property
    def timed_out_waiting_for_data(self) -> bool:
        """True when the watchdog ended the release loop because data stopped arriving."""
        return self._gave_up

    @property
    def releasing(self) -> bool:
        """True while the release loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def cleanup(self) -> None:
        """Stop the release loop (the rule stays on the server)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def abort(self) -> None:
        """Stop the release loop and inactivate the rule on the server."""
        self.cleanup()
        if self._rule_id is not None:
            self.cluster.rules.inactivate_rule(self._rule_id)

    # ------------------------------------------------------------------ status
    def _require_id(self) -> str:
        if self._rule_id is None:
            raise ClusterError("rule has not been pushed")
        return self._rule_id

    def _errors_url(self, rule_id: str) -> str:
        return f"{self.cluster.dataserver_urls[0].rstrip('/')}/LOGS/rules/{rule_id}.html"

    def status(self) -> dict[str, Any]:
        """``{"ID", "finished", <server counters>}``, plus ``errors`` (log URL) when tasks failed."""
        rule_id = self._require_id()
        info = self.cluster.rules.queue_info().get(rule_id)
        return self._status_from(rule_id, info)

    def _status_from(self, rule_id: str, info: dict | None) -> dict[str, Any]:
        status: dict[str, Any] = {"finished": False}
        if info:
            status.update(info)
        status["ID"] = rule_id
        if status.get("tasksFailed", 0):
            status["errors"] = self._errors_url(rule_id)
        return status

    def join(self, timeout: float | None = None, *, interval: float = 0.5, grace: float = 12.0) -> dict:
        """Wait until the rule is finished on the server; return its last status.

        Raises ``TimeoutError`` after ``timeout`` seconds and :class:`ClusterError` when the server no
        longer knows a rule it never reported finished (PYME loops forever there). A rule not yet
        listed is given ``grace`` seconds (the server caches its queue listing for 5 s).
        """
        rule_id = self._require_id()
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        seen = False
        while True:
            info = self.cluster.rules.queue_info().get(rule_id)
            if info is not None:
                seen = True
                if info.get("finished"):
                    self._seen_finished = True
                    return self._status_from(rule_id, info)
            elif self._seen_finished:
                return self._status_from(rule_id, {"finished": True})
            elif seen or time.monotonic() - start > grace:
                raise ClusterError(f"rule {rule_id} is no longer on the rule server and was never "
                                   "seen finished (expired or removed)")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"rule {rule_id} not finished after {timeout} s")
            wait = interval if deadline is None else min(interval, max(0.0, deadline - now))
            time.sleep(wait)

    def watch(self, watcher=None, callback=None):
        """Follow this rule with a :class:`~rules.watchers.RuleWatcher` (a new one if none given)."""
        if watcher is None:
            watcher = RuleWatcher()
        watcher.watch(self, callback)
        return watcher

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self._rule_id!r}>"
