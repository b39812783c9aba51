"""A simulated acquisition spooled by a child process, seen from this one as a spooler.

The window's *Simulate acquisition* runs the simulator here, so making, encoding and sending
frames never competes with the window's own threads (GUI, embedded servers) for one interpreter:
:class:`SpoolingProcess` starts ``python -m cluster.spool_process``, hands it what to spool as one
JSON line on its standard input, and follows the JSON lines it prints: the series once it exists,
then the frames the data server has confirmed and the rate reached, then the end.  It offers the
spooler protocol (``rules.spooler``: ``metadata``, ``get_n_frames``, ``finished``, events,
``add_frame_listener``) like :class:`~cluster.simulator.SimulatedAcquisition`, so a
``SpoolLocalLocalizationRule`` analyses the series live.  ``stop()`` (or this process ending: the
child's standard input closes) ends the acquisition early; the series is completed as usual.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from rules.metadata import MetaDataHandler
from rules.simulation import SimulationSettings

logger = logging.getLogger(__name__)

#: At most one progress line per this many seconds (and one at the end).
PROGRESS_INTERVAL = 0.005


class SpoolingError(RuntimeError):
    """The child could not start the acquisition, or failed while spooling."""


class _Events:
    """The child's event log, as the spooler protocol reads it (``to_JSON``)."""

    def __init__(self):
        self.events: list[list] = []

    def to_JSON(self) -> str:  # noqa: N802 - PYME's name
        return json.dumps(self.events)


class SpoolingProcess:
    """Spools ``settings`` as the series ``name`` to ``dataservers`` from a child process."""

    def __init__(self, dataservers: list[str], name: str, settings: SimulationSettings, *,
                 serverfilter: str = "", seed: int | None = None):
        self.settings = settings.checked()
        self.n_target, self.fps = settings.frames, settings.fps
        self._config = {"dataservers": list(dataservers), "serverfilter": serverfilter,
                        "name": name, "settings": dataclasses.asdict(settings), "seed": seed}
        self.series_path = self.series_uri = ""
        self.metadata = MetaDataHandler({})
        self.evtLogger = self.event_logger = _Events()
        self.error: BaseException | None = None
        self._n = 0
        self._rate = 0.0
        self._started = threading.Event()
        self._finished = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._proc: subprocess.Popen | None = None

    # -- spooler protocol -------------------------------------------------------------------
    def get_n_frames(self) -> int:
        return self._n

    def finished(self) -> bool:
        return self._finished.is_set()

    def add_frame_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def spool_rate(self) -> float:
        """Frames/s the data server confirmed lately (the child's own measure)."""
        return self._rate

    # -- running ----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> "SpoolingProcess":
        """Start the child and wait until the series exists (or raise :class:`SpoolingError`)."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.spool_process"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(self._config) + "\n")
        self._proc.stdin.flush()
        threading.Thread(target=self._read_stderr, daemon=True, name="spool-stderr").start()
        threading.Thread(target=self._follow, daemon=True, name="spool-follow").start()
        if not self._started.wait(timeout) and self.error is None:
            self.stop()
            self.error = SpoolingError(f"the simulator did not start within {timeout:g} s")
        if self.error is not None:
            self.wait(10)
            raise self.error
        return self

    def stop(self) -> None:
        """End the acquisition early (the child completes the series with what it spooled)."""
        proc = self._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            except OSError:
                pass

    def wait(self, timeout: float | None = None) -> bool:
        self._finished.wait(timeout)
        return self.finished()

    def close(self) -> None:
        """Stop the child and release its pipes (waits a few seconds, then ends it)."""
        self.stop()
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip())

    def _follow(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                message = json.loads(line)
                if "series_path" in message:
                    self.series_path, self.series_uri = message["series_path"], message["series_uri"]
                    self.metadata = MetaDataHandler.from_JSON(message["metadata"])
                    self.evtLogger.events = message["events"]
                    self._started.set()
                if "n" in message:
                    self._n, self._rate = message["n"], message["rate"]
                if "events" in message and "series_path" not in message:
                    self.evtLogger.events = message["events"]
                if "error" in message:
                    self.error = SpoolingError(message["error"])
                if "done" in message:
                    break
                if "n" in message:
                    self._notify()
            self._proc.wait(30)
            if self._proc.returncode and self.error is None:
                self.error = SpoolingError(
                    f"the simulator ended with status {self._proc.returncode}: "
                    + (self._stderr[-1] if self._stderr else "no message"))
        except (ValueError, KeyError, OSError, subprocess.TimeoutExpired) as exc:
            self.error = SpoolingError(f"lost the simulator: {exc}")
        finally:
            self._finished.set()
            self._started.set()
            self._notify()

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback()


def _child() -> int:
    """In the child: spool what the first line of standard input asks for, report as JSON lines."""
    from cluster.simulator import SimulatedAcquisition
    from rules.dataserver_client import DataClient

    out_lock = threading.Lock()

    def emit(**message: Any) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    config = json.loads(sys.stdin.readline())
    data = DataClient(config["dataservers"], config["serverfilter"])
    try:
        acquisition = SimulatedAcquisition.from_settings(
            data, config["name"], SimulationSettings(**config["settings"]), seed=config["seed"],
            serverfilter=config["serverfilter"])
        acquisition.start()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        emit(error=str(exc), done=True)
        return 1
    last = [0.0]

    def progress() -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            emit(n=acquisition.get_n_frames(), rate=acquisition.spool_rate())
    acquisition.add_frame_listener(progress)
    emit(series_path=acquisition.series_path, series_uri=acquisition.series_uri,
         metadata=acquisition.metadata.to_JSON(), events=json.loads(acquisition.evtLogger.to_JSON()))

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        acquisition.stop()        # asked to, or the parent is gone
    threading.Thread(target=watch_stdin, daemon=True).start()
    acquisition.wait()
    error = acquisition.error
    emit(n=acquisition.get_n_frames(), rate=acquisition.spool_rate(window=1e9),
         events=json.loads(acquisition.evtLogger.to_JSON()), done=True,
         **({"error": f"{type(error).__name__}: {error}"} if error is not None else {}))
    data.close()
    return 0 if error is None else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(_child())
