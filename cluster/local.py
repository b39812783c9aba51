"""The cluster of one: a rule server, a data server and a pool of worker processes.

``start_local_cluster(root, workers=N)`` starts everything on loopback with free ports and returns a
:class:`LocalCluster` handle; ``stop()`` (or leaving a ``with`` block) stops the workers, then the
servers. Each worker bids under a name the pool gives it; when a worker process dies the pool
tells the rule server, which re-queues its tasks at once, and starts a replacement. A frozen
worker's tasks are re-queued when its lease runs out (it stops sending heartbeats). Workers read
a pipe from this process and exit when it closes, so they never outlive the cluster's process.

The cluster of one runs on the acquisition PC, so its workers run below normal priority: with every
core busy, the acquisition (and the window) come first and the analysis takes what is left; on an
idle machine the workers still get every cycle.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from cluster.dataserver import DataServer
from cluster.http_base import Access
from cluster.recipes.registry import module_schema
from cluster.ruleserver import RuleServer
from cluster.ruleserver.model import DEFAULT_LEASE_SECONDS
from resources import resource_path
from rules import nameservice
from rules.files import atomic_write
from rules.recipe_check import MODULE_SCHEMA_FILE

logger = logging.getLogger(__name__)


#: How much a low-priority worker lowers its own priority on POSIX systems (``os.nice``): at 10 a
#: busy worker gets about a tenth of a core that a normal process also wants, like Windows'
#: below-normal class, where a normal-priority thread that is ready always runs first.
WORKER_NICENESS = 10


def default_worker_count() -> int:
    """Cores − 1, at least 1."""
    return max(1, (os.cpu_count() or 2) - 1)


class WorkerPool:
    """Keeps N worker processes alive until stopped."""

    def __init__(self, n: int, ruleserver_url: str, dataserver_url: str | Sequence[str],
                 root: Path | None, serverfilter: str, log_dir: Path | None = None,
                 on_exit: Callable[[str], object] | None = None, low_priority: bool = False):
        """``dataserver_url``: the cluster's data server, or all of them (the workers read from and
        file to every one); ``root``: this node's data root for local reads (None on a PC
        without one)."""
        self.n = n
        urls = [dataserver_url] if isinstance(dataserver_url, str) else list(dataserver_url)
        self._command = [sys.executable, "-m", "cluster.worker", "--ruleserver", ruleserver_url,
                         "--dataserver", ",".join(urls), "--serverfilter", serverfilter,
                         "--exit-with-parent"]
        if root is not None:
            self._command += ["--root", str(root)]
        self._creationflags = 0
        if low_priority:  # Windows sets it at creation; elsewhere the worker lowers its own
            if sys.platform == "win32":
                self._creationflags = subprocess.BELOW_NORMAL_PRIORITY_CLASS
            else:
                self._command += ["--nice", str(WORKER_NICENESS)]
        self._log_dir = log_dir
        self._on_exit = on_exit
        self._prefix = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._spawned = 0
        self.processes: list[subprocess.Popen] = []
        self.worker_ids: dict[int, str] = {}  # pid → the name the worker bids under
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor = threading.Thread(target=self._watch, name="worker-pool", daemon=True)

    def start(self) -> "WorkerPool":
        with self._lock:
            self.processes = [self._spawn() for _ in range(self.n)]
        self._monitor.start()
        return self

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self.processes]

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                               os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        log: int | BinaryIO = subprocess.DEVNULL
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self._log_dir / "workers.log", "ab")  # noqa: SIM115 - owned by the child
        self._spawned += 1
        worker_id = f"{self._prefix}-w{self._spawned}"
        # stdin is a pipe the worker watches: it closes (and the worker exits) when we die
        process = subprocess.Popen(self._command + ["--worker-id", worker_id],
                                   stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                   env=env, creationflags=self._creationflags)
        if not isinstance(log, int):
            log.close()
        self.worker_ids[process.pid] = worker_id
        logger.info("started worker process %d (%s)", process.pid, worker_id)
        return process

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for i, process in enumerate(self.processes):
                    if process.poll() is not None and not self._stopping.is_set():
                        logger.warning("worker %d exited with %s; starting a replacement",
                                       process.pid, process.returncode)
                        self._close_pipe(process)
                        worker_id = self.worker_ids.pop(process.pid, None)
                        if worker_id is not None and self._on_exit is not None:
                            try:
                                self._on_exit(worker_id)
                            except Exception:  # noqa: BLE001 - the pool must keep watching
                                logger.exception("re-queueing the tasks of %s failed", worker_id)
                        self.processes[i] = self._spawn()
                        self.restarts += 1

    @staticmethod
    def _close_pipe(process: subprocess.Popen) -> None:
        if process.stdin is not None:
            try:
                process.stdin.close()
            except OSError:
                pass

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._monitor.is_alive():
            self._monitor.join(timeout=2)
        with self._lock:
            for process in self.processes:
                if process.poll() is None:
                    process.terminate()
            for process in self.processes:
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=timeout)
                self._close_pipe(process)


def _unused_cluster_name(host: str) -> str:
    """``host``, or ``host-2``, ``-3``... when a live cluster on this machine has that name."""
    taken = {serverfilter for serverfilter, _, _ in nameservice.local_clusters()}
    name, n = host, 1
    while name in taken:
        n += 1
        name = f"{host}-{n}"
    return name


class LocalCluster:
    """Handle of a running cluster of one; usable as a context manager."""

    def __init__(self, root: str | os.PathLike, workers: int = 0, rule_port: int = 0,
                 data_port: int = 0, bind: str = "127.0.0.1", serverfilter: str | None = None,
                 task_timeout: float = 600.0, register: bool = False,
                 access: Access | None = None, lease: float = DEFAULT_LEASE_SECONDS):
        self.register = register
        self._registered: list[tuple[str, str]] = []
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.serverfilter = serverfilter or _unused_cluster_name(socket.gethostname())
        self.rule_server = RuleServer(bind=bind, port=rule_port, task_timeout=task_timeout,
                                      access=access, lease=lease)
        self.data_server = DataServer(root=self.root, bind=bind, port=data_port,
                                      serverfilter=self.serverfilter, access=access)
        self.n_workers = workers
        self.pool: WorkerPool | None = None

    @property
    def ruleserver_url(self) -> str:
        return self.rule_server.url

    @property
    def dataserver_url(self) -> str:
        return self.data_server.url

    def _publish_bundled_recipes(self) -> None:
        """Put the bundled recipes in ``RECIPES/`` (never over a user's file of the same name), and
        the modules' parameter declarations as ``RECIPES/{MODULE_SCHEMA_FILE}`` (always this
        version's), for the chain editor (the app reads it; it never imports ``cluster``)."""
        folder = self.root / "RECIPES"
        folder.mkdir(exist_ok=True)
        for recipe in resource_path("recipes").glob("*.yaml"):
            target = folder / recipe.name
            if not target.exists():
                target.write_bytes(recipe.read_bytes())
        atomic_write(folder / MODULE_SCHEMA_FILE, json.dumps(module_schema(), indent=1))

    def start(self) -> "LocalCluster":
        self._publish_bundled_recipes()
        self.rule_server.start()
        self.data_server.start()
        if self.register:
            try:
                self._register_names()
            except BaseException:
                self.stop()
                raise
        if self.n_workers > 0:
            self.pool = WorkerPool(self.n_workers, self.ruleserver_url, self.dataserver_url,
                                   self.root, self.serverfilter,
                                   log_dir=self.root / "LOGS" / socket.gethostname(),
                                   on_exit=self.rule_server.table.worker_gone,
                                   low_priority=True).start()
        logger.info("cluster %r: rule server %s, data server %s, %d workers", self.serverfilter,
                    self.ruleserver_url, self.dataserver_url, self.n_workers)
        return self

    def _register_names(self) -> None:
        """List both servers in PYME's local name service, so PYME's clients find them too
        (refused when a live cluster of the same name is listed: clients would mix the two)."""
        for serverfilter, rule_url, _ in nameservice.local_clusters():
            if serverfilter == self.serverfilter:
                raise RuntimeError(f"a cluster named {serverfilter!r} already runs on this "
                                   f"machine (rule server {rule_url}); choose another name")
        entries: list[tuple[str, str, RuleServer | DataServer]] = [
                   (nameservice.RULESERVER_SERVICE, f"PYMERuleServer [{self.serverfilter}]",
                    self.rule_server),
                   (nameservice.DATASERVER_SERVICE, f"PYMEDataServer [{self.serverfilter}]",
                    self.data_server)]
        for service_type, prefix, server in entries:
            name = nameservice.service_name(prefix)
            host, port = server.url.rsplit("//", 1)[1].rsplit(":", 1)
            nameservice.register(service_type, name, host, int(port))
            self._registered.append((service_type, name))

    def stop(self) -> None:
        for service_type, name in self._registered:
            nameservice.unregister(service_type, name)
        self._registered.clear()
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        self.data_server.stop()
        self.rule_server.stop()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_local_cluster(root: str | os.PathLike, workers: int = 0, rule_port: int = 0,
                        data_port: int = 0, bind: str = "127.0.0.1", serverfilter: str | None = None,
                        task_timeout: float = 600.0, register: bool = False,
                        access: Access | None = None,
                        lease: float = DEFAULT_LEASE_SECONDS) -> LocalCluster:
    """Start a rule server, a data server over ``root`` and ``workers`` worker processes.

    With ``register``, both servers are listed in PYME's local name service (§0), where
    ``rules.default_cluster()`` and PYME's own clients on this machine look for a cluster.
    ``access`` says who beyond loopback may connect (see :class:`cluster.http_base.Access`).
    """
    return LocalCluster(root, workers, rule_port, data_port, bind, serverfilter, task_timeout,
                        register, access, lease).start()
