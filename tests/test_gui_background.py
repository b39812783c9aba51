"""BackgroundCall: a function's result or error arrives as a signal on the GUI thread."""
from __future__ import annotations

import threading

from PyQt5.QtCore import QThreadPool

from widgets.background import BackgroundCall, CallSignals


def test_result_arrives_as_done_from_a_pool_thread(qtbot):
    signals, pool = CallSignals(), QThreadPool()
    gui_thread = threading.get_ident()
    with qtbot.waitSignal(signals.done, timeout=10000) as done:
        pool.start(BackgroundCall("answer", threading.get_ident, signals))
    tag, worker_thread = done.args
    assert tag == "answer" and worker_thread != gui_thread
    assert pool.waitForDone(10000)


def test_any_exception_becomes_failed_with_its_description(qtbot):
    signals, pool = CallSignals(), QThreadPool()

    def broken():
        raise RuntimeError("disk on fire")
    with qtbot.waitSignal(signals.failed, timeout=10000) as failed:
        pool.start(BackgroundCall("plain", broken, signals))
    assert failed.args == ["plain", "disk on fire"]
    with qtbot.waitSignal(signals.failed, timeout=10000) as failed:
        pool.start(BackgroundCall("described", broken, signals,
                                  describe=lambda exc: f"{type(exc).__name__}: {exc}"))
    assert failed.args == ["described", "RuntimeError: disk on fire"]
    assert pool.waitForDone(10000)
