"""``spoolside`` with no sub-command: the window, on a chosen cluster or on the embedded one.

The cluster is, in order: ``--server URL`` (with ``--dataserver``), the server saved in
``QSettings``, the ``PYME_RULESERVER_URL`` / ``PYME_DATASERVER_URL`` environment variables; with
none of these the embedded cluster of one is started in the background (data in the per-user data
folder) and stopped on exit; the window then says if other clusters run on this machine
(*File ▸ Connect to Cluster…* lists them).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from PyQt5.QtCore import QObject, QSettings, QStandardPaths, QTimer, pyqtSignal
from PyQt5.QtWidgets import QApplication

from app.launcher import ClusterAddress

logger = logging.getLogger(__name__)

ORGANISATION = "Spoolside"
APPLICATION = "Spoolside"
RULESERVER_ENVS = ("PYME_RULESERVER_URL", "PYME_RULESERVER")
DATASERVER_ENVS = ("PYME_DATASERVER_URL", "PYME_DATASERVER")


class ClusterChoiceError(ValueError):
    """A server was given without a data server, or the other way round."""


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(u.strip().rstrip("/") for u in (text or "").split(",") if u.strip())


def choose_cluster(args, settings: QSettings, environ=os.environ) -> ClusterAddress | None:
    """The cluster to use, or None for the embedded one."""
    server = getattr(args, "server", None)
    if server:
        given = getattr(args, "dataserver", None) or ""
        data = _split(given if isinstance(given, str) else ",".join(given))
        if not data:
            data = _split(str(settings.value("cluster/dataservers", "") or "")) \
                if settings.value("cluster/ruleserver") == server else ()
        if not data:
            data = _split(next((environ[k] for k in DATASERVER_ENVS if environ.get(k)), ""))
        if not data:
            raise ClusterChoiceError("--server needs the cluster's data server too: "
                                     "add --dataserver URL (or set PYME_DATASERVER_URL)")
        return ClusterAddress(server.rstrip("/"), data)
    saved = str(settings.value("cluster/ruleserver", "") or "")
    saved_data = _split(str(settings.value("cluster/dataservers", "") or ""))
    if saved and saved_data:  # the cluster's name too when it was picked from this machine's list
        return ClusterAddress(saved.rstrip("/"), saved_data,
                              str(settings.value("cluster/serverfilter", "") or "") or None)
    env_rule = next((environ[k] for k in RULESERVER_ENVS if environ.get(k)), "")
    env_data = _split(next((environ[k] for k in DATASERVER_ENVS if environ.get(k)), ""))
    if env_rule and env_data:
        return ClusterAddress(env_rule.strip().rstrip("/"), env_data)
    return None


def user_folder(kind) -> Path:
    """A writable per-user folder (``QStandardPaths.AppConfigLocation`` / ``AppDataLocation``)."""
    return Path(QStandardPaths.writableLocation(kind))


class EmbeddedCluster(QObject):
    """Starts ``cluster.local.start_local_cluster`` on a plain thread; stops it on :meth:`stop`.

    Signals
    -------
    started(object)
        The cluster is up: its :class:`~app.launcher.ClusterAddress`.
    failed(str)
        It could not start, and why.
    workersRestarted(int, int)
        Worker processes that had exited were replaced: how many now, how many in all.
    """

    started = pyqtSignal(object)
    failed = pyqtSignal(str)
    workersRestarted = pyqtSignal(int, int)

    def __init__(self, root: str | Path, workers: int | None = None, parent=None):
        super().__init__(parent)
        self.root = Path(root)
        self.workers = workers
        self.cluster = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._restarts_seen = 0
        self._restart_timer = QTimer(self)  # reads a counter of the pool: no I/O
        self._restart_timer.setInterval(1000)
        self._restart_timer.timeout.connect(self._check_restarts)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="embedded-cluster", daemon=True)
        self._thread.start()
        self._restart_timer.start()

    def _check_restarts(self) -> None:
        pool = getattr(self.cluster, "pool", None)
        total = int(getattr(pool, "restarts", 0) or 0)
        if total > self._restarts_seen:
            self.workersRestarted.emit(total - self._restarts_seen, total)
            self._restarts_seen = total

    def _run(self) -> None:
        from cluster.local import default_worker_count, start_local_cluster
        workers = default_worker_count() if self.workers is None else self.workers
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            cluster = start_local_cluster(self.root, workers=workers, register=True)
        except (OSError, RuntimeError, ValueError) as exc:
            logger.error("embedded cluster did not start: %s", exc)
            self.failed.emit(f"the embedded cluster did not start: {exc}")
            return
        with self._lock:
            self.cluster = cluster
            stop_now = self._stopping
        if stop_now:
            cluster.stop()
            return
        self.started.emit(ClusterAddress(cluster.ruleserver_url, (cluster.dataserver_url,),
                                         cluster.serverfilter, embedded=True, root=str(self.root)))

    def stop(self) -> None:
        """Stop the cluster (waits for a start in progress)."""
        self._restart_timer.stop()
        with self._lock:
            self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.stop()
            logger.info("embedded cluster stopped")


def _quit_on_signals(app: QApplication, window) -> None:
    """Ctrl-C or SIGTERM closes the window like the Quit action does (so the cluster stops)."""
    def close(*_args) -> None:
        window.ask_before_closing = False
        window.close()
        app.quit()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, close)
    # Python runs signal handlers only between bytecodes: wake the interpreter now and then.
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(250)


def error_hook(window):
    """A ``sys.excepthook`` for the window: an unexpected error in a slot is logged with its
    traceback and shown as one line in the status bar, instead of PyQt aborting the application
    (and the user's running analysis with it)."""
    def hook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        logger.error("unexpected error", exc_info=(exc_type, exc, tb))
        window.statusBar().showMessage(f"Unexpected error ({exc_type.__name__}: {exc}); "
                                       "the window goes on, details are in the log", 30000)
    return hook


def run_gui(args) -> int:
    """Open the window; returns the exit status."""
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PyQt5")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    settings = QSettings()
    try:
        address = choose_cluster(args, settings)
    except ClusterChoiceError as exc:
        print(f"spoolside: {exc}", file=sys.stderr)
        return 2

    from app.main_window import MainWindow
    config_dir = user_folder(QStandardPaths.AppConfigLocation)
    window = MainWindow(settings, config_dir)
    embedded = None
    if address is None:
        data_root = user_folder(QStandardPaths.AppDataLocation) / "data"
        embedded = EmbeddedCluster(data_root, getattr(args, "workers", None))
        embedded.started.connect(window.set_cluster)
        embedded.failed.connect(window.show_cluster_error)
        embedded.workersRestarted.connect(window.on_workers_restarted)
        window.statusBar().showMessage(f"Starting the embedded cluster (data in {data_root})…")
        embedded.start()
    else:
        window.set_cluster(address)
    window.show()
    _quit_on_signals(app, window)
    previous_hook, sys.excepthook = sys.excepthook, error_hook(window)
    try:
        status = app.exec_()
    finally:
        sys.excepthook = previous_hook
        window.shutdown()
        if embedded is not None:
            embedded.stop()
    return status
