"""Running a function on a ``QThreadPool`` thread and reporting its result through signals.

:class:`BackgroundCall` calls ``function()`` on a pool thread; the result arrives on the GUI
thread as ``CallSignals.done(tag, result)``. Any exception becomes ``CallSignals.failed(tag,
message)`` and never escapes the pool thread. The tag tells the receiver which call it was (and
lets it ignore a stale one).
"""
from __future__ import annotations

import logging

from PyQt5.QtCore import QObject, QRunnable, pyqtSignal

logger = logging.getLogger(__name__)


class CallSignals(QObject):
    """What :class:`BackgroundCall` reports; create it on the GUI thread and connect to it there."""

    done = pyqtSignal(str, object)   # tag, result
    failed = pyqtSignal(str, str)    # tag, message


class BackgroundCall(QRunnable):
    """Run ``function()`` on a pool thread and report through ``signals`` under ``tag``.

    An exception becomes ``signals.failed(tag, describe(exc))`` (``describe`` is ``str`` unless
    given); it is logged and never escapes the pool thread.
    """

    def __init__(self, tag: str, function, signals: CallSignals, describe=str):
        super().__init__()
        self._tag, self._function, self._signals = tag, function, signals
        self._describe = describe

    def run(self) -> None:
        try:
            result = self._function()
        except Exception as exc:  # noqa: BLE001 - reported through signals, never raised on a pool thread
            logger.info("%s failed: %r", self._tag, exc)
            self._signals.failed.emit(self._tag, self._describe(exc))
            return
        self._signals.done.emit(self._tag, result)
