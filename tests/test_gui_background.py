"""BackgroundCall on a TaskPool: a function's result or error arrives as a signal on the GUI
thread; a widget deleted while its call runs neither hangs nor receives a late result."""
from __future__ import annotations

import gc
import threading

from PyQt5.QtCore import QCoreApplication, QEvent
from PyQt5.QtWidgets import QWidget

from widgets.background import BackgroundCall, CallSignals, TaskPool


def test_result_arrives_as_done_from_a_pool_thread(qtbot):
    signals, pool = CallSignals(), TaskPool()
    gui_thread = threading.get_ident()
    with qtbot.waitSignal(signals.done, timeout=10000) as done:
        pool.start(BackgroundCall("answer", threading.get_ident, signals))
    tag, worker_thread = done.args
    assert tag == "answer" and worker_thread != gui_thread
    assert pool.waitForDone(10000)


def test_any_exception_becomes_failed_with_its_description(qtbot):
    signals, pool = CallSignals(), TaskPool()

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


def test_wait_for_done_times_out_while_a_call_runs(qtbot):
    pool, release = TaskPool(), threading.Event()
    pool.start(BackgroundCall("slow", lambda: release.wait(10), CallSignals()))
    assert not pool.waitForDone(50)
    release.set()
    assert pool.waitForDone(10000)


class _Owner(QWidget):
    """A widget owning a pool and the signals its calls report to, as the window's panes do."""

    def __init__(self):
        super().__init__()
        self.pool = TaskPool()
        self.signals = CallSignals(self)
        self.results: list = []
        self.signals.done.connect(lambda tag, value: self.results.append(value))


def test_deleting_the_owner_while_its_call_still_needs_the_interpreter_does_not_hang(qtbot):
    """A QThreadPool child waited for its task in the widget's C++ destructor with the
    interpreter lock held, while the task waited for that lock: a teardown hung for good."""
    owner, started, release = _Owner(), threading.Event(), threading.Event()
    finished = threading.Event()

    def call():
        started.set()
        release.wait(10)
        total = sum(range(100_000))  # needs the interpreter after the owner is gone
        finished.set()
        return total
    owner.pool.start(BackgroundCall("late", call, owner.signals))
    assert started.wait(10)
    owner.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    del owner
    gc.collect()
    release.set()
    assert finished.wait(10)  # the call ran to its end; its report to the deleted owner is dropped
