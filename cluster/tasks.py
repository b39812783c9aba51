"""Running the tasks a worker wins: filling templates, localisation batches, recipe tasks, logs.

A task arrives as a rule's template text (``pyme-protocol.md`` §2.1). ``fill_template`` turns it into
the task description; ``TaskRunner`` runs localisation tasks in batches (one vectorised fit over
many frames) and recipe tasks one by one, and files a readable error log for every failure where
PYME clients look for it (``LOGS/rules/<ruleID>.log`` and ``.html``).
"""
from __future__ import annotations

import html
import json
import logging
import os
import socket
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from cluster.dataserver.paths import inside
from rules.dataserver_client import DataClient
from rules.errors import ClusterError, ClusterUnreachable, RequestRefused
from rules.metadata import MetaDataHandler
from rules.uris import cluster_path, parse_cluster_uri

logger = logging.getLogger(__name__)

STATUS_COMPLETE = 3
STATUS_FAILED = 4

#: Timeout of one PUT of fit results (a large batch can take the data server a while to append).
RESULTS_PUT_TIMEOUT_S = 30.0
#: Filing results, and reading files from a data server that is not local, are retried (with
#: backoff) this long through a data-server outage.
FILING_PATIENCE_S = 45.0
#: Data-server replies worth retrying (a proxy or the server itself not ready).
_TRANSIENT = (502, 503, 504)


def through_outage(what: str, call: Callable[[], Any], patience: float = FILING_PATIENCE_S) -> Any:
    """``call()``, retried with backoff (0.25 s doubling to 5 s) while the data server is
    unreachable or answers 502/503/504, for up to ``patience`` seconds; its last error after
    that, and any other error at once (a missing file, a refusal)."""
    give_up = time.monotonic() + patience
    delay = 0.25
    while True:
        try:
            return call()
        except RequestRefused as exc:
            if exc.status not in _TRANSIENT or time.monotonic() > give_up:
                raise
        except ClusterUnreachable:
            if time.monotonic() > give_up:
                raise
        logger.warning("%s failed (data server unreachable); retrying in %.1f s", what, delay)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


class TaskError(Exception):
    """A task could not run; the message says why in words a microscopist can act on."""


@dataclass
class Task:
    """One awarded task: its rule, index and filled description."""

    rule_id: str
    task_id: int
    description: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.description.get("type", ""))


@dataclass
class TaskResult:
    rule_id: str
    task_id: int
    status: int
    error: str | None = None


def fill_template(template: str, rule_id: str, task_id: int, task_inputs: Any = None) -> dict:
    """Substitute the node-side placeholders and parse the task description.

    Parsing is lenient about raw control characters in strings (``strict=False``), as PYME clients
    paste inline recipes unescaped.
    """
    inputs_text = json.dumps(task_inputs if task_inputs is not None else {})
    text = (template.replace("{{ruleID}}", rule_id)
            .replace("{{taskID}}", str(task_id))
            .replace("{{taskInputs}}", inputs_text))
    try:
        description = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise TaskError(f"task template of rule {rule_id} is not valid JSON once filled: {exc}") from exc
    if not isinstance(description, dict):
        raise TaskError(f"task template of rule {rule_id} is not a JSON object")
    return description


class ClusterFiles:
    """Reads and writes cluster files, from the local data root when they are there."""

    def __init__(self, data: DataClient, root: Path | None, serverfilter: str):
        self.data = data
        self.root = Path(root).resolve() if root else None
        self.serverfilter = serverfilter

    def local_path(self, uri: str) -> Path | None:
        """The file under this node's data root that ``uri`` names, if it is there."""
        if self.root is None:
            return None
        if "://" in uri:
            parsed = parse_cluster_uri(uri)
            if parsed.serverfilter not in ("", self.serverfilter):
                return None
            rel = parsed.path
        else:
            rel = uri
        candidate = self.root / rel.lstrip("/")
        if inside(str(self.root), candidate) and candidate.is_file():
            return candidate.resolve()
        return None

    def read(self, uri: str) -> bytes:
        local = self.local_path(uri)
        if local is not None:
            return local.read_bytes()
        if "://" not in uri and os.path.isabs(uri):
            raise FileNotFoundError(f"{uri} is a local path outside this node's data root")
        return through_outage(f"reading {uri}", lambda: self.data.get_file(uri))

    def write_once(self, path: str, payload: bytes) -> str:
        """Write ``payload`` to cluster ``path``; if it exists, to ``<stem>_1<ext>``, ``_2``, ..."""
        path = cluster_path(path)
        stem, ext = os.path.splitext(path)
        for n in range(1000):
            candidate = path if n == 0 else f"{stem}_{n}{ext}"
            try:
                self.data.put_file(candidate, payload)
                return candidate
            except FileExistsError:
                continue
        raise TaskError(f"no free name for {path} after 1000 tries")


@dataclass
class _FrameCache:
    """Decoded frames of one series, most recently used kept (background needs neighbours)."""

    capacity: int = 256
    frames: OrderedDict = field(default_factory=OrderedDict)

    def get(self, key, load: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self.frames:
            self.frames.move_to_end(key)
            return self.frames[key]
        frame = load()
        self.frames[key] = frame
        if len(self.frames) > self.capacity:
            self.frames.popitem(last=False)
        return frame


def _rows_by_task(records: np.ndarray, tasks: list[Task], indices: list[int]):
    """Records ordered by frame, with ``(rule ID, [(task ID, rows), ...])`` naming the task of
    each row (None when frames and tasks do not pair up one to one)."""
    if len(set(indices)) != len(indices) or "tIndex" not in (records.dtype.names or ()):
        return records, None
    order = np.argsort(records["tIndex"], kind="stable")
    records = records[order]
    frames = np.array(sorted(indices), np.int64)
    counts = np.searchsorted(records["tIndex"], frames, side="right") - \
        np.searchsorted(records["tIndex"], frames, side="left")
    if int(counts.sum()) != len(records):
        return records, None
    task_of = {index: task.task_id for index, task in zip(indices, tasks)}
    return records, (tasks[0].rule_id, [(task_of[int(f)], int(n)) for f, n in zip(frames, counts)])


class TaskRunner:
    """Runs awarded tasks for one worker process."""

    def __init__(self, files: ClusterFiles, worker_name: str | None = None):
        self.files = files
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self._frames = _FrameCache()
        from cluster.localisation.camera_maps import CameraMapCache
        self._camera_maps = CameraMapCache()
        self._metadata: dict[str, MetaDataHandler] = {}

    # -- dispatch ---------------------------------------------------------------------------
    def run(self, tasks: list[Task]) -> list[TaskResult]:
        """Run a batch of tasks of one rule; every task gets a result, failures a log."""
        results: list[TaskResult] = []
        localisation = [t for t in tasks if t.kind == "localization"]
        if localisation:
            results += self._run_localisation_batch(localisation)
        for task in tasks:
            if task.kind == "localization":
                continue
            if task.kind == "recipe":
                results.append(self._guard(task, self._run_recipe))
            else:
                results.append(self._fail(task, TaskError(f"unknown task type {task.kind!r}")))
        return results

    def _guard(self, task: Task, run: Callable[[Task], None]) -> TaskResult:
        try:
            run(task)
        except Exception as exc:  # noqa: BLE001 - any failure of user work becomes a failed task
            return self._fail(task, exc)
        return TaskResult(task.rule_id, task.task_id, STATUS_COMPLETE)

    # -- localisation -----------------------------------------------------------------------
    def _run_localisation_batch(self, tasks: list[Task]) -> list[TaskResult]:
        groups: dict[tuple, list[Task]] = {}
        for task in tasks:
            d = task.description
            key = (d.get("inputs", {}).get("frames"), json.dumps(d.get("taskdef", {}).get("metadata"),
                                                                 sort_keys=True),
                   d.get("outputs", {}).get("fitResults"))
            groups.setdefault(key, []).append(task)
        results: list[TaskResult] = []
        for group in groups.values():
            try:
                self._localise(group)
            except Exception as exc:  # noqa: BLE001 - isolate the failing frames one by one
                if len(group) == 1:
                    results.append(self._fail(group[0], exc))
                    continue
                logger.info("batch of %d frames failed (%s); retrying frame by frame", len(group), exc)
                for task in group:
                    results.append(self._guard(task, lambda t: self._localise([t])))
                continue
            results += [TaskResult(t.rule_id, t.task_id, STATUS_COMPLETE) for t in group]
        return results

    def _localise(self, tasks: list[Task]) -> None:
        from cluster.localisation import localise_frames

        first = tasks[0].description
        series = first.get("inputs", {}).get("frames")
        if not series:
            raise TaskError("localisation task has no inputs.frames (series URI)")
        md = self._task_metadata(first.get("taskdef", {}).get("metadata"))
        try:
            indices = [int(t.description["taskdef"]["frameIndex"]) for t in tasks]
        except (KeyError, TypeError, ValueError) as exc:
            raise TaskError(f"localisation task without a usable taskdef.frameIndex: {exc}") from exc
        records = localise_frames(
            lambda i: self._frame(series, i), indices, md,
            maps=lambda shape: self._camera_maps.get(series, md, shape, self._read_map))
        target = first.get("outputs", {}).get("fitResults")
        if len(records):
            if not target:
                raise TaskError("localisation task has no outputs.fitResults URL")
            records, task_rows = _rows_by_task(records, tasks, indices)
            self._put_records(target, records, task_rows)

    def _read_map(self, name: str) -> bytes:
        """A camera map's bytes: a local file on this node, else a cluster file."""
        local = Path(name).expanduser()
        if "://" not in name and local.is_absolute() and local.is_file():
            return local.read_bytes()
        return self.files.read(name)

    def _frame(self, series: str, index: int) -> np.ndarray:
        from cluster.pzf import decode_frame

        series = series.rstrip("/")
        return self._frames.get((series, index),
                                lambda: decode_frame(self.files.read(f"{series}/frame{index:05d}.pzf")))

    def _task_metadata(self, ref: Any) -> MetaDataHandler:
        if isinstance(ref, dict):
            return MetaDataHandler(ref)
        if isinstance(ref, str) and ref.lstrip().startswith("{"):
            return MetaDataHandler.from_JSON(ref)
        if isinstance(ref, str) and ref.endswith(".json"):
            if ref not in self._metadata:
                self._metadata[ref] = MetaDataHandler.from_JSON(self.files.read(ref).decode("utf-8"))
            return self._metadata[ref]
        raise TaskError(f"taskdef.metadata must be an object, JSON text or a .json URI, not {ref!r}")

    def _put_records(self, url: str, records: np.ndarray, task_rows=None) -> None:
        """File records, retrying with backoff through an outage of up to
        :data:`FILING_PATIENCE_S` (safe: rows of tasks already filed are skipped)."""
        try:
            through_outage(f"filing results to {url}", lambda: self.files.data.append_records(
                url, records, timeout=RESULTS_PUT_TIMEOUT_S, task_rows=task_rows))
        except RequestRefused as exc:
            if exc.status == 507:
                raise TaskError(f"disk full: the data server cannot store the results at "
                                f"{url}") from exc
            raise TaskError(f"data server refused results at {url}: {exc}") from exc
        except ClusterUnreachable as exc:
            raise TaskError(f"could not file results to {url} for "
                            f"{FILING_PATIENCE_S:g} s: {exc}") from exc
        except ClusterError as exc:
            raise TaskError(f"could not file results to {url}: {exc}") from exc

    # -- recipes ----------------------------------------------------------------------------
    def _run_recipe(self, task: Task) -> None:
        from cluster.recipes.runner import run_recipe

        d = task.description
        recipe_text = self._recipe_text(d)
        inputs = {k: v for k, v in (d.get("inputs") or {}).items() if k != "__sim"}
        run_recipe(recipe_text, {k: str(v) for k, v in inputs.items()},
                   read_file=self.files.read, write_file=self.files.write_once,
                   context=self._recipe_context(task, inputs))

    def _recipe_text(self, d: dict) -> str:
        taskdef = d.get("taskdef") or {}
        if isinstance(taskdef, dict) and taskdef.get("recipe"):
            return str(taskdef["recipe"])
        ref = d.get("taskdefRef")
        if ref:
            try:
                return self.files.read(ref).decode("utf-8")
            except FileNotFoundError as exc:
                raise TaskError(f"recipe {ref} not found on the cluster") from exc
        raise TaskError("recipe task has neither taskdef.recipe nor taskdefRef")

    def _recipe_context(self, task: Task, inputs: dict) -> dict:
        d = task.description
        main_input = str(inputs.get("input", ""))
        main_path = cluster_path(main_input) if main_input else ""
        output_dir = d.get("output_dir")
        if output_dir:
            output_dir = cluster_path(str(output_dir)).rstrip("/")
        else:
            output_dir = os.path.dirname(main_path)
        context = {"data_root": str(self.files.root or ""), "task_id": task.rule_id,
                   "sim_tag": inputs.get("__sim", ""),
                   "file_stub": os.path.splitext(os.path.basename(main_path))[0],
                   "input_dir": os.path.dirname(main_path), "output_dir": output_dir}
        context.update(d.get("outputs") or {})
        return context

    # -- failures ---------------------------------------------------------------------------
    def _fail(self, task: Task, exc: BaseException) -> TaskResult:
        message = f"{type(exc).__name__}: {exc}"
        logger.warning("task %s~%d failed: %s", task.rule_id, task.task_id, message)
        self._file_log(task, exc)
        return TaskResult(task.rule_id, task.task_id, STATUS_FAILED, message)

    def _file_log(self, task: Task, exc: BaseException) -> None:
        """Append a readable report to ``LOGS/rules/<ruleID>.log`` and ``.html``."""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        description = yaml.safe_dump(task.description, sort_keys=False, allow_unicode=True)
        parts = [f"=== task {task.rule_id}~{task.task_id} failed on {self.worker_name}",
                 f"error: {type(exc).__name__}: {exc}", "task:", description]
        if task.kind == "recipe":
            try:
                parts += ["recipe:", self._recipe_text(task.description)]
            except TaskError:
                pass
        parts += ["traceback:", tb]
        text = "\n".join(parts) + "\n"
        for suffix, body in ((".log", text), (".html", f"<pre>{html.escape(text)}</pre>\n")):
            try:
                self.files.data.append_text(f"LOGS/rules/{task.rule_id}{suffix}", body)
            except Exception:  # noqa: BLE001 - a log that cannot be filed must not hide the failure
                logger.exception("could not file the error log of rule %s", task.rule_id)
