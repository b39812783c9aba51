"""Running a function on a background thread and reporting its result through signals.

:class:`BackgroundCall` calls ``function()`` on a :class:`TaskPool` thread; the result arrives
on the GUI thread as ``CallSignals.done(tag, result)``. Any exception becomes
``CallSignals.failed(tag, message)`` and never escapes the pool thread. The tag tells the
receiver which call it was (and lets it ignore a stale one).

Why Python threads and not ``QThreadPool``: a ``QThreadPool`` owned by a widget waits for its
running tasks in its C++ destructor. When that destructor runs with the interpreter lock held
(a widget deleted from Python) while a task still needs the lock to finish, both wait for ever —
this hung a GUI test's teardown. A :class:`TaskPool` is waited for only where we ask it to be
(:meth:`TaskPool.waitForDone`, with a timeout), never by Qt.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import weakref

from PyQt5.QtCore import QObject, pyqtSignal

logger = logging.getLogger(__name__)


class CallSignals(QObject):
    """What :class:`BackgroundCall` reports; create it on the GUI thread and connect to it there."""

    done = pyqtSignal(str, object)   # tag, result
    failed = pyqtSignal(str, str)    # tag, message


class BackgroundCall:
    """Run ``function()`` on a pool thread and report through ``signals`` under ``tag``.

    An exception becomes ``signals.failed(tag, describe(exc))`` (``describe`` is ``str`` unless
    given); it is logged and never escapes the pool thread. A report to a receiver that was
    deleted meanwhile is dropped.
    """

    def __init__(self, tag: str, function, signals: CallSignals, describe=str):
        self._tag, self._function, self._signals = tag, function, signals
        self._describe = describe

    def run(self) -> None:
        try:
            result = self._function()
        except Exception as exc:  # noqa: BLE001 - reported through signals, never raised on a pool thread
            logger.info("%s failed: %r", self._tag, exc)
            self._report(self._signals.failed, self._describe(exc))
            return
        self._report(self._signals.done, result)

    def _report(self, signal, value) -> None:
        try:
            signal.emit(self._tag, value)
        except RuntimeError:  # the receiver's QObject was deleted while the call ran
            logger.debug("%s finished after its receiver was deleted", self._tag)


class TaskPool:
    """At most ``max_threads`` :class:`BackgroundCall` s at a time on Python threads.

    The same calls as the ``QThreadPool`` it replaces (:meth:`start`, :meth:`waitForDone`).
    Idle threads end when the pool is garbage-collected; a call still running then finishes on
    its own.
    """

    def __init__(self, max_threads: int = 1, name: str = "background"):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=max_threads,
                                                               thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future] = set()
        weakref.finalize(self, self._executor.shutdown, wait=False)

    def start(self, call: BackgroundCall) -> None:
        future = self._executor.submit(call.run)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._pending.discard(future)

    def waitForDone(self, timeout_ms: int = -1) -> bool:
        """Wait for every call started so far (``timeout_ms`` < 0: without limit); True when
        none is left."""
        with self._lock:
            pending = set(self._pending)
        timeout = None if timeout_ms < 0 else timeout_ms / 1000
        _done, not_done = concurrent.futures.wait(pending, timeout=timeout)
        return not not_done


_shared: TaskPool | None = None


def shared_pool() -> TaskPool:
    """The process-wide pool for short calls not tied to one widget (renders, file checks)."""
    global _shared
    if _shared is None:
        _shared = TaskPool(max_threads=4, name="shared-background")
    return _shared
