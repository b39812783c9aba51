"""Rules and their per-task tables: the rule server's state, with no HTTP.

Each rule holds numpy arrays with one entry per task slot (``status`` uint8, ``n_retries`` uint8,
``expiry`` float64 epoch seconds, ``cost`` float32) and a count per status that is updated from the
actual old and new statuses of every transition, so the counters can neither drift, go negative nor
exceed what was released. Everything is guarded by one lock; the only wait outside it is the 0.2 s
auction of a costly bid.
"""
from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

STATUS_UNAVAILABLE, STATUS_AVAILABLE, STATUS_ASSIGNED, STATUS_COMPLETE, STATUS_FAILED = range(5)

#: Bids whose costs are all below this skip the auction ("buy now" price).
COST_THRESHOLD = 0.2
#: How long a costly bid waits for cheaper competing bids.
AUCTION_SECONDS = 0.2
#: At most this many task IDs are advertised in one reply (PYME's value) ...
MAX_ADVERTISEMENTS = 30000
#: ... and at most this many per rule, shared out fairly between rules.
MAX_ADVERTISEMENTS_PER_RULE = 5000
DEFAULT_MAX_TASKS = 1_000_000
#: Largest rule (a task costs ~14 bytes of state, up to ~26 once bids are placed).
MAX_MAX_TASKS = 2_000_000
#: Releases are applied this many tasks at a time, the lock let go in between, so one huge
#: release never keeps the other clients waiting more than a few milliseconds.
RELEASE_CHUNK = 1 << 16
DEFAULT_RULE_TIMEOUT = 3600.0
#: A finished rule stays visible this long (longer when some of its tasks failed).
RETAIN_FINISHED = 60.0
RETAIN_FINISHED_WITH_FAILURES = 300.0
#: Follow-on IDs remembered after their parent rule is gone.
FOLLOWON_HISTORY = 10000
#: A task won by a named worker is re-queued this long after the worker's last heartbeat
#: (capped by the task timeout); anonymous bidders (PYME nodes) keep the plain task timeout.
DEFAULT_LEASE_SECONDS = 10.0
#: The background pass runs this often while the server holds no rule at all (at once when one
#: comes).
IDLE_TICK_SECONDS = 5.0
WORKER_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")

RULE_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class RuleServerError(Exception):
    """A request the rule server refuses; ``status`` is the HTTP status to answer with."""

    status = 400


class InvalidRequest(RuleServerError):
    status = 400


class UnknownRule(RuleServerError):
    status = 404


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{what} must be an integer, not {_type_name(value)}")
    if isinstance(value, float) and not value.is_integer():
        raise InvalidRequest(f"{what} must be an integer, got {value}")
    return int(value)


def _as_positive_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{what} must be a number, not {_type_name(value)}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest(f"{what} must be a positive number, got {value}")
    return value


@dataclass(frozen=True)
class Completion:
    """A validated ``on_completion`` spec: the rule to create when its parent finishes."""

    template: str
    max_tasks: int = 1
    rule_timeout: float = DEFAULT_RULE_TIMEOUT
    on_completion: "Completion | None" = None

    @classmethod
    def parse(cls, obj: Any, where: str = "on_completion", depth: int = 0) -> "Completion | None":
        """Validate a JSON ``on_completion`` value (``None`` stays ``None``)."""
        if obj is None:
            return None
        if depth > 64:
            raise InvalidRequest(f"{where}: on_completion nested too deeply")
        if not isinstance(obj, dict):
            raise InvalidRequest(f"{where} must be an object, not {_type_name(obj)}")
        template = obj.get("template")
        if not isinstance(template, str):
            raise InvalidRequest(f"{where}.template is required and must be a string")
        max_tasks = _as_int(obj.get("max_tasks", 1), f"{where}.max_tasks")
        if not 1 <= max_tasks <= MAX_MAX_TASKS:
            raise InvalidRequest(f"{where}.max_tasks must be between 1 and {MAX_MAX_TASKS}")
        rule_timeout = _as_positive_float(obj.get("rule_timeout", DEFAULT_RULE_TIMEOUT),
                                          f"{where}.rule_timeout")
        nested = cls.parse(obj.get("on_completion"), f"{where}.on_completion", depth + 1)
        return cls(template, max_tasks, rule_timeout, nested)


def parse_inputs_by_task(obj: Any, max_tasks: int) -> dict[int, str] | None:
    """Validate ``inputsByTask`` → {task ID: JSON text of its inputs}."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise InvalidRequest(f"inputsByTask must be an object keyed by task ID, not {_type_name(obj)}")
    out: dict[int, str] = {}
    for key, value in obj.items():
        try:
            task = int(key)
        except ValueError as exc:
            raise InvalidRequest(f"inputsByTask key {key!r} is not a task ID") from exc
        if not 0 <= task < max_tasks:
            raise InvalidRequest(f"inputsByTask key {key!r} is outside 0..{max_tasks - 1}")
        out[task] = json.dumps(value)
    return out


def fair_shares(counts: list[int], total: int, per_rule: int) -> list[int]:
    """Share ``total`` advert slots between rules (water-filling; every rule gets at least 1)."""
    shares = [0] * len(counts)
    remaining, left = total, len(counts)
    for i in sorted(range(len(counts)), key=counts.__getitem__):
        share = min(counts[i], per_rule, max(1, remaining // left))
        shares[i] = share
        remaining = max(0, remaining - share)
        left -= 1
    return shares


class Rule:
    """One rule: its template, task table and counters. Callers hold the table's lock."""

    def __init__(self, rule_id: str, template: str, max_tasks: int, rule_timeout: float,
                 task_timeout: float, retries: int, inputs: dict[int, str] | None,
                 on_completion: Completion | None, parent: str | None, now: float):
        self.id = rule_id
        self.template = template
        self.template_json = json.dumps(template)
        self.max_tasks = max_tasks
        self.rule_timeout = rule_timeout
        self.task_timeout = task_timeout
        self.retries = retries
        self.inputs = inputs
        self._input_ids = (np.fromiter(sorted(inputs), np.int64, len(inputs))
                           if inputs is not None else None)
        self.on_completion = on_completion
        self.parent = parent
        #: tasks of the earlier steps of its chain that had failed when this follow-on was made
        #: (it runs on a partial input; shown as ``tasksFailedUpstream``)
        self.failed_upstream = 0
        self.created = now
        self.followons: list[str] = []
        # np.zeros maps untouched pages lazily, so a 1,000,000-slot rule costs only what it uses.
        self.status = np.zeros(max_tasks, np.uint8)
        self.n_retries = np.zeros(max_tasks, np.uint8)
        self.expiry = np.zeros(max_tasks, np.float64)
        self.cost = np.zeros(max_tasks, np.float32)
        self.owner = np.zeros(max_tasks, np.int32)  # named worker holding each task (0: none)
        self.deadline = np.zeros(max_tasks, np.float64)  # ... and when its task timeout ends
        self.refused_late = 0  # hand-ins of tasks no longer held by the worker handing in
        self._bid_cost: np.ndarray | None = None  # pending auction: best cost per task
        self._bid_owner: np.ndarray | None = None  # ... and the bidder holding it (-1: none)
        self.counts = [max_tasks, 0, 0, 0, 0]
        self.cost_sum = 0.0  # sum of the bid costs of tasks ASSIGNED, COMPLETE or FAILED
        self.timed_out = 0
        self.complete_after_timeout = 0
        self.target = max_tasks
        self.active = True
        self.fired = False  # finished once (follow-on created, retention set)
        self.expires_at = now + rule_timeout
        self.lo = self.hi = 0  # every AVAILABLE or ASSIGNED task lies in [lo, hi)
        self.next_timeout = math.inf  # no assigned task expires before this
        self.version = 0
        self._advert: tuple[tuple[int, int], bytes] | None = None
        self._advert_cursor = 0

    # -- bookkeeping ------------------------------------------------------------------------
    def _account(self, old: np.ndarray, new: np.ndarray | int, idx) -> None:
        """Update counts and the cost sum for tasks ``idx`` going from ``old`` to ``new``."""
        n = len(old)
        if n == 0:
            return
        before = np.bincount(old, minlength=5)
        if isinstance(new, (int, np.integer)):
            after = np.zeros(5, np.int64)
            after[new] = n
            new_done = np.full(n, new > 1)
        else:
            after = np.bincount(new, minlength=5)
            new_done = new > 1
        for s in range(5):
            self.counts[s] += int(after[s]) - int(before[s])
        old_done = old > 1
        leaving = old_done & ~new_done
        entering = new_done & ~old_done
        if leaving.any() or entering.any():
            costs = self.cost[idx]
            self.cost_sum += float(costs[entering].sum(dtype=np.float64))
            self.cost_sum -= float(costs[leaving].sum(dtype=np.float64))
        if self.counts[STATUS_ASSIGNED] + self.counts[STATUS_COMPLETE] + self.counts[STATUS_FAILED] == 0:
            self.cost_sum = 0.0
        self.version += 1

    def _set(self, idx: np.ndarray, new) -> None:
        old = self.status[idx]
        self.status[idx] = new
        self._account(old, new, idx)

    def _widen(self, lo: int, hi: int) -> None:
        if self.counts[STATUS_AVAILABLE] + self.counts[STATUS_ASSIGNED] == 0 or self.lo >= self.hi:
            self.lo, self.hi = lo, hi
        else:
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)

    def _clear_bids(self, idx) -> None:
        if self._bid_owner is not None and self._bid_cost is not None:
            self._bid_owner[idx] = -1
            self._bid_cost[idx] = np.inf

    def touch(self, now: float) -> None:
        """Record activity: the rule expires ``rule_timeout`` after the last one.

        A finished rule keeps its retention: a late bid or hand-in does not revive it."""
        if self.fired and self.finished:
            return
        self.expires_at = now + self.rule_timeout

    @property
    def released(self) -> int:
        return self.max_tasks - self.counts[STATUS_UNAVAILABLE]

    @property
    def finished(self) -> bool:
        counts = self.counts
        return (counts[STATUS_AVAILABLE] == 0
                and counts[STATUS_COMPLETE] + counts[STATUS_FAILED] >= self.target)

    def expired(self, now: float) -> bool:
        idle = self.counts[STATUS_ASSIGNED] == 0 and (self.counts[STATUS_AVAILABLE] == 0 or not self.active)
        return idle and now > self.expires_at

    def check_range(self, start: int, end: int) -> None:
        if not (0 <= start <= self.max_tasks and 0 <= end <= self.max_tasks):
            raise InvalidRequest(f"release range [{start}, {end}) is outside 0..{self.max_tasks}")
        if self._input_ids is not None and end > start:
            lo, hi = np.searchsorted(self._input_ids, [start, end])
            if hi - lo != end - start:
                have = set(self._input_ids[lo:hi].tolist())
                missing = [i for i in range(start, end) if i not in have]
                raise InvalidRequest(
                    f"inputsByTask has no entry for task(s) {missing[:10]}"
                    f"{' ...' if len(missing) > 10 else ''} of release [{start}, {end})")

    # -- operations -------------------------------------------------------------------------
    def release(self, start: int, end: int, now: float) -> int:
        """Make unreleased tasks in ``[start, end)`` AVAILABLE; returns how many."""
        self.check_range(start, end)
        if start >= end:
            return 0
        block = self.status[start:end]
        fresh = np.flatnonzero(block == STATUS_UNAVAILABLE)
        if fresh.size:
            idx = fresh + start
            self.n_retries[idx] = 0
            self._clear_bids(idx)
            self._widen(int(idx[0]), int(idx[-1]) + 1)
            self._set(idx, STATUS_AVAILABLE)
        self.touch(now)
        return int(fresh.size)

    def award(self, ids: np.ndarray, costs: np.ndarray, now: float, worker: int = 0,
              lease: float = math.inf) -> np.ndarray:
        """Assign the still-AVAILABLE tasks among ``ids`` (to ``worker``, on a ``lease`` when it
        is named); returns the awarded IDs."""
        ok = self.status[ids] == STATUS_AVAILABLE
        ids, costs = ids[ok], costs[ok]
        if ids.size:
            self.cost[ids] = costs
            deadline = now + self.task_timeout
            expiry = min(deadline, now + lease) if worker else deadline
            self.expiry[ids] = expiry
            self.owner[ids] = worker
            self.deadline[ids] = deadline
            self._clear_bids(ids)
            self._set(ids, STATUS_ASSIGNED)
            self.next_timeout = min(self.next_timeout, expiry)
        self.touch(now)
        return ids

    def _held_by(self, worker: int) -> np.ndarray:
        """IDs of the ASSIGNED tasks ``worker`` holds."""
        if self.counts[STATUS_ASSIGNED] == 0:
            return np.zeros(0, np.int64)
        lo, hi = self.lo, self.hi
        held = (self.status[lo:hi] == STATUS_ASSIGNED) & (self.owner[lo:hi] == worker)
        return np.flatnonzero(held) + lo

    def renew(self, worker: int, now: float, lease: float) -> int:
        """Extend ``worker``'s lease on its tasks (never past their task timeout)."""
        idx = self._held_by(worker)
        if idx.size:
            self.expiry[idx] = np.minimum(self.deadline[idx], now + lease)
        return int(idx.size)

    def expire_worker(self, worker: int, now: float) -> int:
        """``worker`` is gone: its tasks time out now."""
        idx = self._held_by(worker)
        if idx.size:
            self.expiry[idx] = now
            self.next_timeout = min(self.next_timeout, now)
        return int(idx.size)

    def place_bids(self, ids: np.ndarray, costs: np.ndarray, bidder: int) -> None:
        if self._bid_owner is None or self._bid_cost is None:
            self._bid_cost = np.full(self.max_tasks, np.inf, np.float32)
            self._bid_owner = np.full(self.max_tasks, -1, np.int64)
        bid_cost, bid_owner = self._bid_cost, self._bid_owner
        better = costs < bid_cost[ids]
        bid_cost[ids[better]] = costs[better]
        bid_owner[ids[better]] = bidder

    def close_bids(self, ids: np.ndarray, bidder: int) -> np.ndarray:
        """End ``bidder``'s auction: mask of ``ids`` it won (their pending bids are cleared)."""
        if self._bid_owner is None:
            return np.zeros(len(ids), bool)
        won = self._bid_owner[ids] == bidder
        self._clear_bids(ids[won])
        return won

    def handin(self, ids: np.ndarray, new: np.ndarray, now: float, worker: int = 0) -> None:
        """Apply results; a named worker's results count only for tasks it still holds."""
        old = self.status[ids]
        released = old != STATUS_UNAVAILABLE
        if not released.all():
            logger.debug("rule %s: ignoring hand-in for %d unreleased task(s)", self.id,
                         int((~released).sum()))
            ids, old, new = ids[released], old[released], new[released]
        if worker:
            held = (old == STATUS_ASSIGNED) & (self.owner[ids] == worker)
            if not held.all():
                self.refused_late += int((~held).sum())
                logger.info("rule %s: refused the late hand-in of %d task(s) no longer held by "
                            "their worker", self.id, int((~held).sum()))
                ids, old, new = ids[held], old[held], new[held]
        # A success is final: a late failure report does not undo it.
        new = np.where(old == STATUS_COMPLETE, np.uint8(STATUS_COMPLETE), new).astype(np.uint8)
        self.complete_after_timeout += int((old != STATUS_ASSIGNED).sum())
        self._clear_bids(ids)
        self._set(ids, new)
        self.touch(now)

    def time_out(self, now: float) -> int:
        """Requeue (or fail, past ``retries``) ASSIGNED tasks whose expiry has passed."""
        if self.counts[STATUS_ASSIGNED] == 0 or now < self.next_timeout:
            return 0
        lo, hi = self.lo, self.hi
        assigned = self.status[lo:hi] == STATUS_ASSIGNED
        late = assigned & (self.expiry[lo:hi] <= now)
        idx = np.flatnonzero(late) + lo
        if idx.size:
            retries = self.n_retries[idx].astype(np.int64) + 1
            self.n_retries[idx] = np.minimum(retries, 255)
            failed = retries > self.retries
            self.timed_out += int(idx.size)
            self._clear_bids(idx)
            self._set(idx[failed], STATUS_FAILED)
            self._set(idx[~failed], STATUS_AVAILABLE)
        still = assigned & ~late
        self.next_timeout = float(self.expiry[lo:hi][still].min()) if still.any() else math.inf
        return int(idx.size)

    def requeue_failed(self, now: float) -> int:
        idx = np.flatnonzero(self.status == STATUS_FAILED)
        if idx.size:
            self.n_retries[idx] = 0
            self._clear_bids(idx)
            self._widen(int(idx[0]), int(idx[-1]) + 1)
            self._set(idx, STATUS_AVAILABLE)
            # finishing again restarts the retention; a follow-on is never created twice
            self.fired = self.fired and self.on_completion is not None
        self.touch(now)
        return int(idx.size)

    def advert_json(self, cap: int) -> bytes:
        """This rule's advert with at most ``cap`` IDs, cached until the rule changes.

        When more are available than fit, successive adverts sweep round the available IDs so
        that concurrent nodes do not all bid for the same few tasks.
        """
        key = (self.version, cap)
        if self._advert is not None and self._advert[0] == key:
            return self._advert[1]
        lo, hi = self.lo, self.hi
        avail = np.flatnonzero(self.status[lo:hi] == STATUS_AVAILABLE) + lo
        if self.counts[STATUS_ASSIGNED] == 0 and avail.size:
            self.lo, self.hi = int(avail[0]), int(avail[-1]) + 1
        if avail.size > cap:
            first = int(np.searchsorted(avail, self._advert_cursor))
            ids = avail[first:first + cap]
            if ids.size < cap:
                ids = np.concatenate([ids, avail[:cap - ids.size]])
            self._advert_cursor = int(ids[-1]) + 1
        else:
            ids = avail
        id_list = ids.tolist()
        text = ['{"ruleID": "', self.id, '", "taskTemplate": ', self.template_json,
                ', "availableTaskIDs": [', ", ".join(map(str, id_list)), "]"]
        if self.inputs is not None:
            inputs = self.inputs
            text += [', "inputsByTask": {',
                     ", ".join(f'"{i}": {inputs[i]}' for i in id_list), "}"]
        text.append("}")
        data = "".join(text).encode("utf-8")
        self._advert = (key, data)
        return data

    def info(self, now: float) -> dict[str, Any]:
        done = self.counts[STATUS_ASSIGNED] + self.counts[STATUS_COMPLETE] + self.counts[STATUS_FAILED]
        return {"tasksPosted": self.released,
                "tasksRunning": self.counts[STATUS_ASSIGNED],
                "tasksCompleted": self.counts[STATUS_COMPLETE],
                "tasksFailed": self.counts[STATUS_FAILED],
                "averageExecutionCost": self.cost_sum / done if done else 0.0,
                "active": self.active,
                "tasksTimedOut": self.timed_out,
                "tasksCompleteAfterTimeout": self.complete_after_timeout,
                "tasksRefusedLate": self.refused_late,
                "finished": self.finished,
                "expired": self.expired(now),
                "tasksFailedUpstream": self.failed_upstream}


@dataclass
class _Bid:
    rule_id: str
    ids: np.ndarray
    costs: np.ndarray
    worker: int = 0


_INT = frozenset({int})
_NUMBER = frozenset({int, float})


def _id_array(value: Any, what: str) -> np.ndarray:
    if not isinstance(value, list):
        raise InvalidRequest(f"{what} must be a list of task IDs, not {_type_name(value)}")
    if not set(map(type, value)) <= _INT:  # C-speed: bids and hand-ins name 100,000s of IDs
        raise InvalidRequest(f"{what} must hold integer task IDs")
    return np.array(value, dtype=np.int64)


def _rule_id_of(entry: Any, what: str) -> str:
    if not isinstance(entry, dict):
        raise InvalidRequest(f"each {what} must be an object, not {_type_name(entry)}")
    rule_id = entry.get("ruleID")
    if not isinstance(rule_id, str):
        raise InvalidRequest(f"each {what} needs a string ruleID")
    return rule_id


class RuleTable:
    """All rules of one server, the background pass, and the operations the endpoints call."""

    def __init__(self, task_timeout: float = 600.0, retries: int = 1, clock=time.time,
                 tick_interval: float = 0.25, lease: float = DEFAULT_LEASE_SECONDS):
        if not 0 <= retries <= 254:
            raise ValueError("retries must be between 0 and 254")
        self.task_timeout = float(task_timeout)
        self.lease = float(lease)
        self._workers: dict[str, int] = {}  # worker ID → its number in Rule.owner
        self._worker_numbers = itertools.count(1)
        self.retries = int(retries)
        self.clock = clock
        self.tick_interval = tick_interval
        self.auction_seconds = AUCTION_SECONDS
        self.ticks = 0  # background passes run so far
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.version = 0
        self._rules: dict[str, Rule] = {}
        self._counter = itertools.count()
        self._bidders = itertools.count(1)
        self._history: collections.OrderedDict[str, list[str]] = collections.OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _changed(self) -> None:
        self.version += 1
        self.changed.notify_all()

    def _get(self, rule_id: str) -> Rule:
        try:
            return self._rules[rule_id]
        except KeyError:
            raise UnknownRule(f"unknown rule ID {rule_id!r}") from None

    def _worker(self, value: Any) -> int:
        """The number of a named worker (0 for none); a new name gets the next number."""
        if value is None:
            return 0
        if not isinstance(value, str) or not WORKER_ID_RE.match(value):
            raise InvalidRequest("worker must be a string of letters, digits, '_', '.', ':' and "
                                 "'-' (at most 128)")
        with self.lock:
            number = self._workers.get(value)
            if number is None:
                number = self._workers[value] = next(self._worker_numbers)
            return number

    def _new_id(self) -> str:
        return "%06d-%s" % (next(self._counter), uuid.uuid4().hex)

    def _check_finished(self, rule: Rule, now: float) -> None:
        """The first time ``rule`` finishes: set its retention and create its follow-on."""
        if rule.fired or not rule.active or not rule.finished:
            return
        rule.fired = True
        rule.expires_at = now + (RETAIN_FINISHED_WITH_FAILURES if rule.counts[STATUS_FAILED]
                                 else RETAIN_FINISHED)
        spec = rule.on_completion
        if spec is not None:
            child = self._add(spec.template, None, spec.on_completion, spec.max_tasks,
                              spec.rule_timeout, (0, spec.max_tasks), None, rule.id, now)
            upstream = int(rule.counts[STATUS_FAILED]) + rule.failed_upstream
            self._rules[child].failed_upstream = upstream
            rule.followons.append(child)
            if upstream:
                logger.warning("rule %s finished with %d failed task(s) upstream; follow-on %s "
                               "runs on a partial input", rule.id, upstream, child)
            else:
                logger.info("rule %s finished; created follow-on %s", rule.id, child)

    def _add(self, template, inputs, on_completion, max_tasks, rule_timeout, release, rule_id,
             parent, now) -> str:
        rule_id = rule_id or self._new_id()
        rule = Rule(rule_id, template, max_tasks, rule_timeout, self.task_timeout, self.retries,
                    inputs, on_completion, parent, now)
        if release is not None:
            rule.check_range(*release)
        old = self._rules.pop(rule_id, None)
        if old is not None:
            logger.info("rule %s replaced", rule_id)
            self._forget(old)
        self._rules[rule_id] = rule
        if release is not None:
            rule.release(release[0], release[1], now)
        self._changed()
        return rule_id

    def _forget(self, rule: Rule) -> None:
        if rule.followons:
            self._history[rule.id] = rule.followons
            while len(self._history) > FOLLOWON_HISTORY:
                self._history.popitem(last=False)

    # -- operations ------------------------------------------------------------------------
    def add_rule(self, spec: Any, max_tasks: int = DEFAULT_MAX_TASKS,
                 rule_timeout: float = DEFAULT_RULE_TIMEOUT,
                 release: tuple[int, int] | None = None, rule_id: str | None = None) -> str:
        """Create a rule from its parsed JSON body; returns its ID."""
        if not isinstance(spec, dict):
            raise InvalidRequest(f"the rule must be a JSON object, not {_type_name(spec)}")
        template = spec.get("template")
        if not isinstance(template, str):
            raise InvalidRequest("the rule needs a 'template' string")
        if not 1 <= max_tasks <= MAX_MAX_TASKS:
            raise InvalidRequest(f"max_tasks must be between 1 and {MAX_MAX_TASKS}")
        if not (math.isfinite(rule_timeout) and rule_timeout > 0):
            raise InvalidRequest("timeout must be a positive number of seconds")
        if rule_id is not None and not RULE_ID_RE.match(rule_id):
            raise InvalidRequest("ruleID may hold only letters, digits, '_', '.' and '-' "
                                 "(at most 128)")
        inputs = parse_inputs_by_task(spec.get("inputsByTask"), max_tasks)
        on_completion = Completion.parse(spec.get("on_completion"))
        with self.lock:
            rule_id = self._add(template, inputs, on_completion, max_tasks, rule_timeout, None,
                                rule_id, None, self.clock())
            if release is not None:
                rule = self._rules[rule_id]
                try:
                    rule.check_range(*release)
                except InvalidRequest:
                    del self._rules[rule_id]
                    self._forget(rule)
                    raise
        if release is not None:
            self.release(rule_id, *release)
        return rule_id

    def release(self, rule_id: str, start: int, end: int) -> int:
        """Release ``[start, end)`` in chunks of ``RELEASE_CHUNK``, letting others in between."""
        with self.lock:
            rule = self._get(rule_id)
            rule.check_range(start, end)
        n = 0
        for lo in range(start, end, RELEASE_CHUNK) if start < end else [start]:
            with self.lock:
                if self._rules.get(rule_id) is not rule:
                    break  # aborted or replaced meanwhile
                n += rule.release(lo, min(end, lo + RELEASE_CHUNK) if start < end else end,
                                  self.clock())
                self._changed()
            if end - lo > RELEASE_CHUNK:
                time.sleep(0.0005)  # let a waiting client take the lock (locks are not fair)
        return n

    def mark_release_complete(self, rule_id: str, n_tasks: int | None = None) -> None:
        with self.lock:
            rule = self._get(rule_id)
            released = rule.released
            n = released if n_tasks is None else n_tasks
            if not released <= n <= rule.max_tasks:
                raise InvalidRequest(f"n_tasks must lie between the {released} tasks released "
                                     f"so far and max_tasks {rule.max_tasks}, got {n}")
            rule.target = n
            now = self.clock()
            rule.touch(now)
            self._check_finished(rule, now)
            self._changed()

    def inactivate(self, rule_id: str) -> None:
        with self.lock:
            rule = self._get(rule_id)
            rule.active = False
            rule.version += 1
            rule.touch(self.clock())
            self._changed()

    def adverts_json(self, wait: float = 0.0) -> bytes:
        """The task adverts; with ``wait``, block up to that long until there are some."""
        with self.changed:
            if wait > 0:
                self.changed.wait_for(self._has_adverts, wait)
            rules = [r for r in self._rules.values() if r.active and r.counts[STATUS_AVAILABLE] > 0]
            shares = fair_shares([r.counts[STATUS_AVAILABLE] for r in rules], MAX_ADVERTISEMENTS,
                                 MAX_ADVERTISEMENTS_PER_RULE)
            parts = [r.advert_json(n) for r, n in zip(rules, shares)]
        return b"[" + b", ".join(parts) + b"]"

    def _has_adverts(self) -> bool:
        return any(r.active and r.counts[STATUS_AVAILABLE] > 0 for r in self._rules.values())

    def _parse_bids(self, bids: Any) -> list[_Bid]:
        if not isinstance(bids, list):
            raise InvalidRequest(f"the bid body must be a list of bids, not {_type_name(bids)}")
        out = []
        for bid in bids:
            rule_id = _rule_id_of(bid, "bid")
            ids = _id_array(bid.get("taskIDs"), "taskIDs")
            costs = bid.get("costs", bid.get("taskCosts"))
            if not isinstance(costs, list) or len(costs) != len(ids):
                raise InvalidRequest("each bid needs 'costs', a list of numbers as long as taskIDs")
            if not set(map(type, costs)) <= _NUMBER:
                raise InvalidRequest("costs must be numbers")
            costs_arr = np.array(costs, dtype=np.float32)
            if not np.isfinite(costs_arr).all() or (costs_arr < 0).any():
                raise InvalidRequest("costs must be finite and not negative")
            ids, first = np.unique(ids, return_index=True)
            out.append(_Bid(rule_id, ids, costs_arr[first], self._worker(bid.get("worker"))))
        return out

    def bid(self, bids: Any) -> list[dict[str, Any]]:
        """Award tasks for a list of bids (the costly ones after a 0.2 s auction)."""
        parsed = self._parse_bids(bids)
        awards: list[dict[str, Any] | None] = [None] * len(parsed)
        auction = []
        with self.lock:
            rules = [self._get(b.rule_id) for b in parsed]
            for b, rule in zip(parsed, rules):
                if b.ids.size and (b.ids[0] < 0 or b.ids[-1] >= rule.max_tasks):
                    raise InvalidRequest(f"bid task IDs must lie in 0..{rule.max_tasks - 1} "
                                         f"for rule {rule.id}")
            now = self.clock()
            for k, (b, rule) in enumerate(zip(parsed, rules)):
                if not rule.active:
                    awards[k] = {"ruleID": rule.id, "taskIDs": [], "template": ""}
                elif b.ids.size == 0 or bool((b.costs < COST_THRESHOLD).all()):
                    awards[k] = self._award(rule, b.ids, b.costs, now, b.worker)
                else:
                    bidder = next(self._bidders)
                    rule.place_bids(b.ids, b.costs, bidder)
                    auction.append((k, rule, b, bidder))
        if auction:
            try:
                time.sleep(self.auction_seconds)
            finally:
                with self.lock:
                    now = self.clock()
                    for k, rule, b, bidder in auction:
                        won = rule.close_bids(b.ids, bidder)
                        if self._rules.get(rule.id) is rule and rule.active:
                            awards[k] = self._award(rule, b.ids[won], b.costs[won], now, b.worker)
                        else:
                            awards[k] = {"ruleID": rule.id, "taskIDs": [], "template": ""}
        return awards  # type: ignore[return-value]

    def _award(self, rule: Rule, ids, costs, now, worker: int = 0) -> dict[str, Any]:
        awarded = rule.award(ids, costs, now, worker, self.lease)
        if awarded.size:
            self._changed()
        return {"ruleID": rule.id, "taskIDs": awarded.tolist(), "template": rule.template}

    def handin(self, entries: Any) -> list[str]:
        """Apply hand-ins; returns the rule IDs that are unknown (their entries are skipped)."""
        if not isinstance(entries, list):
            raise InvalidRequest(f"the handin body must be a list, not {_type_name(entries)}")
        parsed = []
        for entry in entries:
            rule_id = _rule_id_of(entry, "handin")
            ids = _id_array(entry.get("taskIDs"), "taskIDs")
            status = entry.get("status")
            if isinstance(status, int) and not isinstance(status, bool):
                status = [status] * len(ids)
            if not isinstance(status, list) or len(status) != len(ids):
                raise InvalidRequest("each handin needs 'status', a list as long as taskIDs")
            if not (set(map(type, status)) <= _INT
                    and set(status) <= {STATUS_COMPLETE, STATUS_FAILED}):
                raise InvalidRequest("handin statuses must be 3 (complete) or 4 (failed)")
            ids, first = np.unique(ids, return_index=True)
            parsed.append((rule_id, ids, np.array(status, np.uint8)[first],
                           self._worker(entry.get("worker"))))
        unknown = []
        with self.lock:
            for rule_id, ids, status, _ in parsed:
                rule = self._rules.get(rule_id)
                if rule is not None and ids.size and (ids[0] < 0 or ids[-1] >= rule.max_tasks):
                    raise InvalidRequest(f"handin task IDs must lie in 0..{rule.max_tasks - 1} "
                                         f"for rule {rule_id}")
            now = self.clock()
            for rule_id, ids, status, worker in parsed:
                rule = self._rules.get(rule_id)
                if rule is None:
                    unknown.append(rule_id)
                    continue
                rule.handin(ids, status, now, worker)
                if rule.fired:  # a late result: keep the retention, do not restart the timeout
                    rule.expires_at = now + (RETAIN_FINISHED_WITH_FAILURES if rule.counts[STATUS_FAILED]
                                             else RETAIN_FINISHED)
                self._check_finished(rule, now)
            self._changed()
        return unknown

    def heartbeat(self, worker_id: str) -> int:
        """A named worker is alive: extend the lease on every task it holds; returns how many."""
        with self.lock:
            worker, now = self._worker(worker_id), self.clock()
            return sum(rule.renew(worker, now, self.lease) for rule in self._rules.values())

    def worker_gone(self, worker_id: str) -> int:
        """A named worker died: its tasks are re-queued at once (as if timed out)."""
        with self.lock:
            worker = self._workers.get(worker_id)
            if worker is None:
                return 0
            now = self.clock()
            n = sum(rule.expire_worker(worker, now) for rule in self._rules.values())
        if n:
            self.tick()
        return n

    def queue_info(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            now = self.clock()
            return {rule_id: rule.info(now) for rule_id, rule in self._rules.items()}

    def wait_for_change(self, timeout: float, since: int | None = None) -> None:
        """Block until anything changes (the version differs from ``since``, by default the
        current one) or ``timeout`` passes."""
        with self.changed:
            start = self.version if since is None else since
            self.changed.wait_for(lambda: self.version != start, timeout)

    def followons(self, rule_id: str) -> list[str]:
        with self.lock:
            rule = self._rules.get(rule_id)
            if rule is not None:
                return list(rule.followons)
            if rule_id in self._history:
                return list(self._history[rule_id])
            raise UnknownRule(f"unknown rule ID {rule_id!r}")

    def requeue_failed(self, rule_id: str) -> int:
        with self.lock:
            n = self._get(rule_id).requeue_failed(self.clock())
            self._changed()
            return n

    def rules_info(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {r.id: {"parent": r.parent, "created": r.created, "followons": list(r.followons)}
                    for r in self._rules.values()}

    # -- background pass -------------------------------------------------------------------
    def tick(self) -> None:
        """Time out late tasks, finish rules, drop expired ones."""
        with self.lock:
            now = self.clock()
            changed = False
            for rule in list(self._rules.values()):
                if rule.time_out(now):
                    changed = True
                self._check_finished(rule, now)
                if rule.expired(now) and self._rules.get(rule.id) is rule:
                    del self._rules[rule.id]
                    self._forget(rule)
                    logger.info("rule %s expired", rule.id)
                    changed = True
            self.ticks += 1
            if changed:
                self._changed()

    def _run(self) -> None:
        while True:
            if self._rules:
                if self._stop.wait(self.tick_interval):
                    break
            else:  # nothing to time out: sleep until a rule comes (idle CPU)
                with self.changed:
                    self.changed.wait_for(lambda: self._rules or self._stop.is_set(),
                                          IDLE_TICK_SECONDS)
                if self._stop.is_set():
                    break
            try:
                self.tick()
            except Exception:  # the pass must survive anything: log it and carry on
                logger.exception("rule server background pass failed")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ruleserver-tick", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
