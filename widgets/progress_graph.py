"""Progress graph: completed and failed tasks against time, and the task rate, per selected rule.

History is kept per rule from the status stream (every rule, so a rule selected later shows its
whole run). Each shown rule's curves are created once and then updated with ``setData``; long runs
are bounded by halving a rule's history when it reaches ``max_points``.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QVBoxLayout, QWidget

logger = logging.getLogger(__name__)

#: Seconds over which the rate is measured (the PYME server caches its counters for 5 s).
RATE_WINDOW_S = 6.0
#: Seconds between points of an unfinished rule whose counts do not change.
IDLE_POINT_S = 2.0
#: Distinct line colours (Okabe-Ito, readable by colour-blind users), cycled per rule.
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_AXIS_COLOUR = "#404040"
_HINT = "Select rules in the table to see their progress"


class RuleHistory:
    """Times and counts of one rule, in growable numpy buffers."""

    __slots__ = ("t", "completed", "failed", "rate", "n", "last", "tasks")

    _DTYPES = {"t": np.float64, "completed": np.float32, "failed": np.float32, "rate": np.float32}

    def __init__(self, capacity: int = 64):
        self.t = np.empty(capacity)
        self.completed = np.empty(capacity, np.float32)
        self.failed = np.empty(capacity, np.float32)
        self.rate = np.empty(capacity, np.float32)
        self.n = 0
        self.last: tuple | None = None
        self.tasks = 0  # the most tasks the rule has had posted

    def append(self, t: float, completed: int, failed: int, max_points: int) -> None:
        if self.n == len(self.t):
            if self.n >= max_points:
                self._halve()
            else:
                self._grow(min(max_points, 2 * len(self.t)))
        n = self.n
        self.t[n], self.completed[n], self.failed[n] = t, completed, failed
        start = int(np.searchsorted(self.t[:n], t - RATE_WINDOW_S)) if n else 0
        start = min(start, n - 1) if n else 0
        dt = t - self.t[start]
        done = completed + failed - self.completed[start] - self.failed[start]
        self.rate[n] = done / dt if n and dt > 0 else 0.0
        self.n = n + 1

    def _grow(self, capacity: int) -> None:
        for name, dtype in self._DTYPES.items():
            old = getattr(self, name)
            new = np.empty(capacity, dtype)
            new[:self.n] = old[:self.n]
            setattr(self, name, new)

    def _halve(self) -> None:
        # Keep every other point (and the newest): the curve's shape survives, memory stays flat.
        keep = np.r_[np.arange(0, self.n - 1, 2), self.n - 1]
        for name in ("t", "completed", "failed", "rate"):
            buffer = getattr(self, name)
            buffer[:len(keep)] = buffer[keep]
        self.n = len(keep)


class ProgressGraph(QWidget):
    """Two linked plots: tasks done (solid) and failed (dashed) over time, and tasks per second.

    Feed it every status list (``add_statuses``) and the selection (``set_rules``).
    """

    def __init__(self, parent=None, *, max_points: int = 2048, clock=time.monotonic):
        super().__init__(parent)
        self.max_points = max_points
        self._clock = clock
        self._t0: float | None = None
        self._history: dict[str, RuleHistory] = {}
        self._curves: dict[str, tuple[pg.PlotDataItem, pg.PlotDataItem, pg.PlotDataItem]] = {}
        self._shown: list[str] = []
        self._names: dict[str, str] = {}
        #: one-task steps that ended: a labelled vertical line where they did (a point at 1 of
        #: a scale of thousands would look like 0)
        self._end_lines: dict[str, pg.InfiniteLine] = {}
        self._colour_index = 0

        self.layout_widget = pg.GraphicsLayoutWidget(self)
        self.layout_widget.setBackground("w")
        self.tasks_plot = self.layout_widget.addPlot(row=0, col=0)
        self.rate_plot = self.layout_widget.addPlot(row=1, col=0)
        self.rate_plot.setXLink(self.tasks_plot)
        self.tasks_plot.setLabel("left", "tasks")
        self.rate_plot.setLabel("left", "rate", units="tasks/s")
        self.rate_plot.setLabel("bottom", "time since the first selected rule started", units="s")
        # The legend sits under the plots, never over a curve: one entry per rule (its colour);
        # dashed lines are failed tasks, dots a step of one task, and a dotted vertical line
        # where that step ended ("done" / "failed").
        self.legend = pg.LegendItem(labelTextColor=(40, 40, 40), colCount=2)
        self.layout_widget.addItem(self.legend, row=2, col=0)
        for plot in (self.tasks_plot, self.rate_plot):
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setClipToView(True)
            plot.setDownsampling(auto=True, mode="peak")
            for side in ("left", "bottom"):
                plot.getAxis(side).setPen(_AXIS_COLOUR)
                plot.getAxis(side).setTextPen(_AXIS_COLOUR)
        self.tasks_plot.setTitle(_HINT, color=_AXIS_COLOUR)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.layout_widget)

    # -- feeding -----------------------------------------------------------------------------
    def add_statuses(self, statuses: Iterable, t: float | None = None) -> None:
        """Record one status list (taken at ``t``, default now) and redraw the shown rules."""
        now = self._clock() if t is None else t
        if self._t0 is None:
            self._t0 = now
        rel = now - self._t0
        appended: set[str] = set()
        for status in statuses:
            history = self._history.get(status.rule_id)
            if history is None:
                history = self._history[status.rule_id] = RuleHistory()
            key = (status.completed, status.failed)
            # An unchanged rule adds a point only now and then (flat line, decaying rate) and a
            # settled one none at all, so 1,000 idle rules cost the GUI thread next to nothing.
            if history.last == key and (status.finished
                                        or rel - history.t[history.n - 1] < IDLE_POINT_S):
                continue
            history.last = key
            history.tasks = max(history.tasks, int(getattr(status, "posted", 0) or 0))
            history.append(rel, status.completed, status.failed, self.max_points)
            appended.add(status.rule_id)
        # Only curves that got a point are redrawn: an idle graph costs no repaint.
        self._redraw(appended)

    def set_rules(self, rule_ids: list[str], names: dict | None = None) -> None:
        """Show the curves of ``rule_ids`` (the table's selection); hide the others.

        ``names`` maps rule IDs to what the legend calls them (default: the short rule ID).
        """
        self._names.update(names or {})
        self._shown = list(rule_ids)
        shown = set(self._shown)
        for rule_id, curves in self._curves.items():
            for curve in curves:
                curve.setVisible(rule_id in shown)
        for rule_id, line in self._end_lines.items():
            line.setVisible(rule_id in shown)
        for rule_id in self._shown:
            if rule_id not in self._curves:
                self._curves[rule_id] = self._make_curves(rule_id)
        self._sync_legend()
        self.tasks_plot.setTitle(None if self._shown else _HINT, color=_AXIS_COLOUR)
        self._redraw()

    def forget(self, rule_ids: Iterable[str]) -> None:
        """Drop the history and curves of rules no longer wanted."""
        for rule_id in rule_ids:
            self._history.pop(rule_id, None)
            line = self._end_lines.pop(rule_id, None)
            if line is not None:
                self.tasks_plot.removeItem(line)
            curves = self._curves.pop(rule_id, None)
            if curves is not None:
                self.tasks_plot.removeItem(curves[0])
                self.tasks_plot.removeItem(curves[1])
                self.rate_plot.removeItem(curves[2])
        self._shown = [r for r in self._shown if r in self._history]
        self._sync_legend()

    # -- queries -----------------------------------------------------------------------------
    def points(self, rule_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Copies of a rule's history: (time s, completed, failed, rate tasks/s)."""
        h = self._history.get(rule_id)
        if h is None:
            return tuple(np.empty(0) for _ in range(4))
        n = h.n
        return h.t[:n].copy(), h.completed[:n].copy(), h.failed[:n].copy(), h.rate[:n].copy()

    def curves(self, rule_id: str):
        """The (completed, failed, rate) curve items of a shown rule, or None."""
        return self._curves.get(rule_id)

    # -- internals ---------------------------------------------------------------------------
    def _make_curves(self, rule_id: str):
        colour = _PALETTE[self._colour_index % len(_PALETTE)]
        self._colour_index += 1
        name = rule_id[:11]
        completed = self.tasks_plot.plot(pen=pg.mkPen(colour, width=2), name=f"{name} done")
        failed = self.tasks_plot.plot(pen=pg.mkPen(colour, width=2, style=Qt.DashLine),
                                      name=f"{name} failed")
        rate = self.rate_plot.plot(pen=pg.mkPen(colour, width=2))
        return completed, failed, rate

    def _sync_legend(self) -> None:
        self.legend.clear()
        for rule_id in self._shown:
            curves = self._curves.get(rule_id)
            if curves is not None:
                self.legend.addItem(curves[0], self._names.get(rule_id) or rule_id[:11])

    def time_origin(self) -> float:
        """Where the time axis starts: when the earliest shown rule was first seen."""
        starts = [h.t[0] for r in self._shown if (h := self._history.get(r)) is not None and h.n]
        return min(starts) if starts else 0.0

    def _redraw(self, only: set[str] | None = None) -> None:
        origin = self.time_origin()
        if origin != getattr(self, "_origin", None):
            self._origin, only = origin, None  # a new origin moves every shown curve
        for rule_id in self._shown:
            if only is not None and rule_id not in only:
                continue
            h = self._history.get(rule_id)
            curves = self._curves.get(rule_id)
            if h is None or curves is None:
                continue
            t = h.t[:h.n] - origin
            # a one-task step is over in a blink: dots show it, a line would lie flat at 0
            curves[0].setSymbol("o" if h.tasks <= 1 else None)
            curves[0].setSymbolSize(8)
            curves[0].setSymbolBrush(curves[0].opts["pen"].color())
            curves[0].setData(t, h.completed[:h.n])
            curves[1].setData(t, h.failed[:h.n])
            curves[2].setData(t, h.rate[:h.n])
            if h.tasks <= 1:
                self._mark_end(rule_id, t, h, curves[0].opts["pen"].color())

    def end_line(self, rule_id: str) -> pg.InfiniteLine | None:
        """The 'done' / 'failed' line of a one-task step that ended, or None."""
        return self._end_lines.get(rule_id)

    def _mark_end(self, rule_id: str, t: np.ndarray, h: RuleHistory, colour) -> None:
        ended = np.flatnonzero((h.completed[:h.n] + h.failed[:h.n]) >= 1)
        if not len(ended):
            return
        label = "failed" if h.failed[ended[0]] else "done"
        line = self._end_lines.get(rule_id)
        if line is None:
            line = self._end_lines[rule_id] = pg.InfiniteLine(
                angle=90, movable=False, pen=pg.mkPen(colour, width=2, style=Qt.DotLine),
                label=label, labelOpts={"position": 0.85, "color": colour, "fill": (255, 255, 255, 200)})
            self.tasks_plot.addItem(line)
        line.setPos(float(t[ended[0]]))
        line.label.setText(label)
