"""Following a pushed chain to its end on any rule server: :class:`ChainWatch`.

Spoolside's rule server names a rule's follow-ons (``/spoolside/followons``). PYME's does not (§1.3:
the client is never told the follow-on's ID), so there a follow-on is recognised in
``/distributor/queues``: a rule first listed after its parent was last seen unfinished, with a larger
ID counter, exactly the ``max_tasks`` its ``on_completion`` asked for posted at once, and — when
``/task_advertisements`` still shows it — the very template the chain posted.

The watch holds on through outages: a poll that gets no answer raises
:class:`~rules.errors.ClusterUnreachable` and the next one carries on. Finished steps stay finished
after the server's retention drops them; a step that vanishes before finishing ends the watch as
``lost`` (saying "cluster restarted" when the server was unreachable in between).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from .errors import ClusterUnreachable, RequestRefused
from .watchers import RuleStatus

#: Seconds a rule may be missing from the queue listing before it counts as gone (PYME caches 5 s).
LISTING_GRACE = 12.0
#: Seconds after a step is seen finished for its follow-on to appear (PYME: ≤ 5 s pass + 5 s cache).
FOLLOWON_WAIT = 60.0


def chain_followons(rule_spec: dict) -> list[dict]:
    """The ``on_completion`` specs of a posted rule body, nested ones included (steps 2, 3, ...)."""
    specs = []
    spec = rule_spec.get("on_completion") if isinstance(rule_spec, dict) else None
    while isinstance(spec, dict):
        specs.append(spec)
        spec = spec.get("on_completion")
    return specs


def _counter(rule_id: str) -> int | None:
    """The creation counter of a server-made ID (``000012-<hex>``), None for a client-chosen one."""
    match = re.match(r"(\d+)-", rule_id)
    return int(match.group(1)) if match else None


@dataclass
class ChainProgress:
    """One poll's view of a chain: the statuses of the steps known so far, in order.

    ``outcome`` is None while the chain runs, else ``finished`` (every step ended, no task failed),
    ``failed`` (every step ended, some tasks failed), ``aborted``, ``lost`` (a step vanished before
    finishing, or never appeared) — ``message`` says which step and why.
    """

    statuses: list[RuleStatus]
    n_steps: int
    outcome: str | None = None
    message: str = ""
    failed_steps: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "finished"


class ChainWatch:
    """Follow the chain started by rule ``root_id``: call :meth:`poll` until its ``outcome`` is set.

    ``client`` is a :class:`~rules.ruleserver_client.RuleServerClient`; ``followons`` the
    ``on_completion`` specs of steps 2.. (:func:`chain_followons` of the posted rule body).
    """

    def __init__(self, client, root_id: str, followons: list[dict], *,
                 grace: float = LISTING_GRACE, followon_wait: float = FOLLOWON_WAIT,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.followons = list(followons)
        self.n_steps = 1 + len(self.followons)
        self.chain = [root_id]
        self.grace = grace
        self.followon_wait = followon_wait
        self._clock = clock
        self._added = {root_id: clock()}
        self._polls = 0
        self._outages = 0                       # polls without an answer so far
        self._first_listed: dict[str, int] = {}  # rule → poll it was first listed in
        self._unfinished_at: dict[str, int] = {}  # chain rule → last poll listing it unfinished
        self._finished_since: dict[str, float] = {}
        self._last: dict[str, RuleStatus] = {}
        self._outages_when_seen: dict[str, int] = {}
        self.followon_endpoint: bool | None = None  # None until asked; False on a PYME server

    def poll(self) -> ChainProgress:
        """One pass: the queue listing, new follow-ons, every step's status. Raises
        :class:`ClusterUnreachable` when the server did not answer (the next poll carries on)."""
        self._polls += 1
        try:
            info = self.client.queue_info()
            for rule_id in info:
                self._first_listed.setdefault(rule_id, self._polls)
            statuses, problem = self._statuses(info)
            self._find_followons(info)
        except ClusterUnreachable:
            self._outages += 1
            raise
        if len(statuses) < len(self.chain):  # follow-ons found in this poll
            statuses, problem = self._statuses(info)
        return self._progress(statuses, problem, info)

    # -- statuses ------------------------------------------------------------------------
    def _statuses(self, info: dict) -> tuple[list[RuleStatus], tuple[str, str] | None]:
        now = self._clock()
        statuses, problem = [], None
        for step, rule_id in enumerate(self.chain, start=1):
            entry = info.get(rule_id)
            if entry is not None:
                status = RuleStatus.from_info(rule_id, entry)
                self._last[rule_id] = status
                self._outages_when_seen[rule_id] = self._outages
                if status.finished:
                    self._finished_since.setdefault(rule_id, now)
                else:
                    self._unfinished_at[rule_id] = self._polls
            elif rule_id in self._last and self._last[rule_id].finished:
                status = self._last[rule_id]  # finished, then dropped after the retention time
            elif rule_id in self._last and step < len(self.chain):
                # dropped while we could not look, but its follow-on exists: it had finished
                status = self._last[rule_id] = replace(self._last[rule_id], finished=True,
                                                       running=0, expired=False)
                self._finished_since.setdefault(rule_id, now)
            elif rule_id not in self._last and now - self._added[rule_id] < self.grace:
                status = RuleStatus.from_info(rule_id, {})  # not listed yet
            else:
                status = self._last.get(rule_id) or RuleStatus.gone(rule_id)
                problem = problem or ("lost", self._lost_message(step, rule_id))
            statuses.append(status)
            if problem is None and status.state in ("aborted", "expired"):
                problem = (status.state if status.state == "aborted" else "lost",
                           f"step {step} ({rule_id}) {status.state} before finishing")
        return statuses, problem

    def _lost_message(self, step: int, rule_id: str) -> str:
        if rule_id not in self._last:
            return f"step {step} ({rule_id}) never appeared on the rule server — rules lost"
        if self._outages > self._outages_when_seen[rule_id]:
            return (f"cluster restarted — rules lost (step {step}, {rule_id}, was "
                    f"{self._last[rule_id].state})")
        return (f"step {step} ({rule_id}) is no longer on the rule server although it had not "
                "finished (the cluster restarted or the rule expired) — rules lost")

    def _progress(self, statuses: list[RuleStatus], problem, info: dict) -> ChainProgress:
        failed = [step for step, s in enumerate(statuses, start=1) if s.failed > 0]
        progress = ChainProgress(statuses, self.n_steps, failed_steps=failed)
        if problem is not None:
            progress.outcome, progress.message = problem
        elif len(self.chain) == self.n_steps and all(s.terminal for s in statuses):
            progress.outcome = "failed" if failed else "finished"
        elif len(self.chain) < self.n_steps:
            parent, step = self.chain[-1], len(self.chain) + 1
            since = self._finished_since.get(parent)
            if (since is not None and parent not in info
                    and self._outages > self._outages_when_seen[parent]):
                progress.outcome = "lost"  # a restarted server has none of the old rules
                progress.message = (f"cluster restarted — rules lost (step {step - 1} had finished; "
                                    f"step {step} is not on the rule server)")
            elif since is not None and self._clock() - since > self.followon_wait:
                progress.outcome = "lost"
                progress.message = (f"step {step} did not appear on the rule server within "
                                    f"{self.followon_wait:g} s of step {step - 1} finishing")
        return progress

    # -- follow-ons ----------------------------------------------------------------------
    def _find_followons(self, info: dict) -> None:
        while len(self.chain) < self.n_steps:
            found = self._followon_of(self.chain[-1], self.followons[len(self.chain) - 1], info)
            if found is None:
                return
            self.chain.append(found)
            self._added[found] = self._clock()

    def _followon_of(self, parent: str, spec: dict, info: dict) -> str | None:
        if self.followon_endpoint is not False:
            try:
                ids = self.client.followon_ids(parent)
            except RequestRefused as exc:
                if exc.status != 404:
                    raise
                return None  # the server forgot the parent: the statuses say so
            if ids is not None:
                self.followon_endpoint = True
                return ids[0] if ids else None
            self.followon_endpoint = False
        if parent not in self._finished_since:
            return None  # PYME creates the follow-on when it sees the parent finished
        return self._recognise(parent, spec, info)

    def _recognise(self, parent: str, spec: dict, info: dict) -> str | None:
        """The follow-on of ``parent`` in a PYME listing (module docstring), or None for now."""
        parent_counter = _counter(parent)
        created_after = self._unfinished_at.get(parent, 0)
        max_tasks = spec.get("max_tasks", 1)
        candidates = []
        for rule_id, entry in info.items():
            counter = _counter(rule_id)
            if (rule_id in self.chain or self._first_listed.get(rule_id, 0) <= created_after
                    or (parent_counter is not None and counter is not None
                        and counter <= parent_counter)
                    or entry.get("tasksPosted") != max_tasks):
                continue
            candidates.append(rule_id)
        if not candidates:
            return None
        templates = {advert.get("ruleID"): advert.get("taskTemplate")
                     for advert in self.client.task_adverts() if isinstance(advert, dict)}
        candidates = [c for c in candidates if templates.get(c, spec["template"]) == spec["template"]]
        candidates.sort(key=lambda c: (c not in templates, _counter(c) or 0, self._first_listed[c]))
        return candidates[0] if candidates else None
