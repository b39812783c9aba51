"""The live rule table: a Qt model over frozen ``RuleStatus`` objects and the view that shows it.

Rows are grouped by launch: a rule labelled by the window (``set_rule_labels``) starts or joins
its launch's group, and a follow-on rule the server created joins its parent's group, so a chain
reads top to bottom. Updates are in place: only rows whose status changed emit ``dataChanged``,
new rules are inserted with ``beginInsertRows``, and a rule the server no longer reports (dropped
after retention, or a restarted server) stays in the table with its last state.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from PyQt5.QtCore import (
    QAbstractTableModel,
    QEvent,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    Qt,
    pyqtSignal,
)
from PyQt5.QtGui import QBrush, QColor, QGuiApplication, QKeySequence
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QAction,
    QHeaderView,
    QLabel,
    QMessageBox,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from widgets.progress_delegate import PROGRESS_COLOUR_ROLE, PROGRESS_ROLE, ProgressBarDelegate

if TYPE_CHECKING:
    from rules.watchers import RuleStatus

logger = logging.getLogger(__name__)

#: Role giving a cell's raw value (ints, floats, full rule ID), for sorting and tests.
RAW_ROLE = Qt.UserRole
#: Role giving the row's full rule ID in any column.
RULE_ID_ROLE = Qt.UserRole + 1

_SHORT_ID = 11  # "000012-0f9e": PYME's counter and the first four hex digits of the uuid
_MAX_PARENT_DEPTH = 64
_NUMERIC = frozenset({"posted", "running", "completed", "failed", "timed_out", "average_cost"})
_STATE_COLOURS = {"finished": QColor(30, 130, 60), "failed": QColor(190, 30, 30),
                  "aborted": QColor(160, 90, 0), "expired": QColor(120, 120, 120),
                  "running": QColor(20, 90, 170)}
_GREY = QColor(140, 140, 140)


@dataclass(frozen=True)
class RuleLabel:
    """What the window knows about a rule it launched.

    ``followon_steps`` names the steps of the rules the server will create from this one's
    ``on_completion`` chain, in order; a follow-on deeper than the list shows as "follow-on".
    """

    launch: str
    step: str
    series: str
    followon_steps: tuple[str, ...] = ()


class _Row:
    """One table row: the last status seen, whether the server still reports it, its labels."""

    __slots__ = ("status", "gone", "launch", "step", "series", "group")

    def __init__(self, status):
        self.status = status
        self.gone = False
        self.launch = self.step = self.series = ""
        self.group: tuple = ("", status.rule_id)


class RuleTableModel(QAbstractTableModel):
    """A flat table of rule statuses, one row per rule, rows grouped by launch.

    Feed it from the GUI thread: ``set_statuses`` with each list a watcher emits,
    ``set_rule_labels`` when the window launches a chain, ``set_reachable`` when the watcher
    reports the cluster lost or back.
    """

    COLUMNS = (("launch", "Launch"), ("rule_id", "Rule"), ("step", "Step"), ("series", "Series"),
               ("state", "State"), ("progress", "Progress"), ("posted", "Posted"),
               ("running", "Running"), ("completed", "Done"), ("failed", "Failed"),
               ("timed_out", "Timed out"), ("average_cost", "Avg cost"))
    _TOOLTIPS = {"launch": "the launch this rule belongs to: its number and the time it was pushed",
                 "rule_id": "the rule's ID on the server (hover a row for the full ID; Ctrl+C copies it)",
                 "step": "the chain step this rule runs; follow-on rules are listed under their launch",
                 "series": "the series the rule analyses",
                 "state": "waiting, running, finished, failed, aborted or expired",
                 "progress": "tasks completed or failed, of the tasks released so far",
                 "posted": "tasks released so far", "running": "tasks assigned to workers now",
                 "completed": "tasks finished without error", "failed": "tasks that failed",
                 "timed_out": "task timeouts (re-queued or failed)",
                 "average_cost": "mean bid cost of assigned and finished tasks"}

    #: Emitted once after each ``set_statuses``, ``set_rule_labels`` or ``set_reachable``.
    updated = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[_Row] = []
        self._index: dict[str, int] = {}
        self._labels: dict[str, RuleLabel] = {}
        self._reachable = True
        self._live: dict[str, int | None] = {}
        self._column_of = {key: i for i, (key, _) in enumerate(self.COLUMNS)}

    # -- Qt model interface ------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation != Qt.Horizontal or not 0 <= section < len(self.COLUMNS):
            return None
        key, label = self.COLUMNS[section]
        if role == Qt.DisplayRole:
            return label
        if role == Qt.ToolTipRole:
            return self._TOOLTIPS.get(key)
        return None

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        key = self.COLUMNS[index.column()][0]
        if role == Qt.DisplayRole:
            return self._display(row, key)
        if role == PROGRESS_ROLE:
            return _progress(row.status) if key == "progress" else None
        if role == PROGRESS_COLOUR_ROLE:
            return _bar_colour(self.state_of(row), row.status) if key == "progress" else None
        if role == RAW_ROLE:
            return self._raw(row, key)
        if role == RULE_ID_ROLE:
            return row.status.rule_id
        if role == Qt.TextAlignmentRole:
            return int(Qt.AlignRight | Qt.AlignVCenter) if key in _NUMERIC else None
        if role == Qt.ForegroundRole:
            if row.gone or not self._reachable:
                return QBrush(_GREY)
            colour = _STATE_COLOURS.get(self.state_of(row)) if key == "state" else None
            return QBrush(colour) if colour is not None else None
        if role == Qt.ToolTipRole:
            return self._tooltip(row)
        return None

    # -- feeding -----------------------------------------------------------------------------
    def set_statuses(self, statuses: Iterable[RuleStatus]) -> None:
        """Merge one poll's statuses into the table (GUI thread only).

        Rows are matched by rule ID; only rows whose status (or presence) changed emit
        ``dataChanged`` (contiguous rows in one emission); new rules are inserted into their
        launch's group; rules missing from ``statuses`` stay, marked as no longer reported.
        """
        seen: set[str] = set()
        changed: list[int] = []
        new: list = []
        regroup = False
        rows, index = self._rows, self._index
        for status in statuses:
            rule_id = status.rule_id
            seen.add(rule_id)
            i = index.get(rule_id)
            if i is None:
                new.append(status)
                continue
            row = rows[i]
            if status.parent_id is None and row.status.parent_id is not None:
                # Parent links never change; one poll without the extra info must not regroup.
                status = dataclasses.replace(status, parent_id=row.status.parent_id)
            if row.gone or row.status != status:
                regroup |= row.status.parent_id != status.parent_id
                row.status = status
                row.gone = False
                changed.append(i)
        if len(seen) - len(new) < len(rows):
            for i, row in enumerate(rows):
                if not row.gone and row.status.rule_id not in seen:
                    row.gone = True
                    changed.append(i)
        self._emit_rows_changed(changed)
        if new:
            self._insert(new)
        if regroup:
            self._relabel_and_regroup()
        self.updated.emit()

    def set_rule_labels(self, labels: dict) -> None:
        """Set what the window knows of its rules: ``{rule_id: RuleLabel}``.

        A value may also be a plain ``(launch, step, series)`` tuple. Replaces the previous
        mapping; rows move into their launch's group (selection is kept).
        """
        self._labels = {rule_id: value if isinstance(value, RuleLabel) else RuleLabel(*value)
                        for rule_id, value in labels.items()}
        self._relabel_and_regroup()
        self.updated.emit()

    def set_reachable(self, reachable: bool) -> None:
        """Grey every row while the cluster is unreachable (their counts are then the last seen)."""
        if reachable == self._reachable:
            return
        self._reachable = reachable
        if self._rows:
            self.dataChanged.emit(self.index(0, 0),
                                  self.index(len(self._rows) - 1, len(self.COLUMNS) - 1),
                                  [Qt.ForegroundRole])
        self.updated.emit()

    # -- queries -----------------------------------------------------------------------------
    @property
    def reachable(self) -> bool:
        return self._reachable

    def rule_ids(self) -> list[str]:
        """Rule IDs in row order."""
        return [row.status.rule_id for row in self._rows]

    def row_of(self, rule_id: str) -> int | None:
        return self._index.get(rule_id)

    def status(self, rule_id: str):
        """The last status seen for ``rule_id`` (None if never seen)."""
        i = self._index.get(rule_id)
        return None if i is None else self._rows[i].status

    def is_gone(self, rule_id: str) -> bool:
        """True when the server stopped reporting the rule (dropped after retention)."""
        i = self._index.get(rule_id)
        return i is not None and self._rows[i].gone

    def rule_state(self, rule_id: str) -> str | None:
        i = self._index.get(rule_id)
        return None if i is None else self.state_of(self._rows[i])

    def root_of(self, rule_id: str) -> str:
        """The first rule of ``rule_id``'s chain (follow-ons point to their parents)."""
        seen: set[str] = set()
        while rule_id not in seen:
            seen.add(rule_id)
            status = self.status(rule_id)
            if status is None or not status.parent_id:
                break
            rule_id = status.parent_id
        return rule_id

    def set_live(self, live: dict) -> None:
        """``{rule_id: expected tasks or None}`` of the rules still being released as a series
        spools: their progress is shown against the expected count, or marked "spooling"."""
        if live == self._live:
            return
        changed = {r for r in set(live) | set(self._live) if live.get(r, -1) != self._live.get(r, -1)}
        self._live = dict(live)
        self._emit_rows_changed([self._index[r] for r in changed if r in self._index])

    def legend_name(self, rule_id: str) -> str:
        """A rule's name for a graph legend: launch and step when known, else its short ID."""
        i = self._index.get(rule_id)
        if i is None or not self._rows[i].step:
            return rule_id[:_SHORT_ID]
        row = self._rows[i]
        return f"{row.launch.split()[0]} {row.step}" if row.launch else row.step

    def can_abort(self, rule_id: str) -> bool:
        """An abort makes sense for a rule the server still has, active and not finished."""
        i = self._index.get(rule_id)
        if i is None:
            return False
        row = self._rows[i]
        return not row.gone and row.status.active and not row.status.finished

    @staticmethod
    def state_of(row: _Row) -> str:
        state = row.status.state
        # A rule that vanished before finishing was deleted by the server's expiry pass.
        return "expired" if row.gone and state in ("waiting", "running") else state

    # -- internals ---------------------------------------------------------------------------
    def _display(self, row: _Row, key: str):
        s = row.status
        if key == "rule_id":
            return s.rule_id[:_SHORT_ID]
        if key in ("launch", "step", "series"):
            return getattr(row, key)
        if key == "progress":
            if s.rule_id in self._live and not s.finished:
                expected = self._live[s.rule_id]
                return (f"{s.done}/{expected}" if expected else f"{s.done}/{s.posted} spooling")
            return f"{s.done}/{s.posted}"
        if key == "average_cost":
            return f"{s.average_cost:.3g}"
        if key == "state":
            return self.state_of(row) + (" (partial input)" if s.failed_upstream else "")
        return str(getattr(s, key))

    def _raw(self, row: _Row, key: str):
        if key in ("launch", "step", "series"):
            return getattr(row, key)
        if key == "progress":
            expected = self._live.get(row.status.rule_id)
            if expected and not row.status.finished:
                return min(1.0, row.status.done / expected)
            return _progress(row.status)
        if key == "state":
            return self.state_of(row)
        return getattr(row.status, key)

    def _tooltip(self, row: _Row) -> str:
        s = row.status
        lines = [f"Rule {s.rule_id}"]
        if row.step:
            lines.append(f"Step: {row.step}" + (f" on {row.series}" if row.series else ""))
        lines.append(f"{s.posted} posted, {s.running} running, {s.completed} done, "
                     f"{s.failed} failed, {s.timed_out} timed out; average cost {s.average_cost:.3g}")
        if s.parent_id:
            lines.append(f"follow-on of {s.parent_id}")
        if s.partial_input:
            lines.append(s.partial_input[0].upper() + s.partial_input[1:])
        if s.complete_after_timeout:
            lines.append(f"{s.complete_after_timeout} handed in after timing out")
        if row.gone:
            lines.append("no longer reported by the server; last state shown")
        elif not self._reachable:
            lines.append("cluster unreachable; last counts shown")
        return "\n".join(lines)

    def _emit_rows_changed(self, changed: list[int]) -> None:
        if not changed:
            return
        changed.sort()
        last_column = len(self.COLUMNS) - 1
        start = prev = changed[0]
        for i in changed[1:] + [None]:
            if i is not None and i == prev + 1:
                prev = i
                continue
            self.dataChanged.emit(self.index(start, 0), self.index(prev, last_column))
            if i is not None:
                start = prev = i

    def _insert(self, statuses: list) -> None:
        # Parents before children, so a follow-on's group is known when it is placed.
        new_rows = [_Row(s) for s in sorted(statuses, key=lambda s: s.rule_id)]
        by_id = {row.status.rule_id: row for row in self._rows}
        by_id.update((row.status.rule_id, row) for row in new_rows)
        for row in new_rows:
            self._label_row(row, by_id)
        groups: dict[tuple, list[_Row]] = {}
        for row in self._rows:
            groups.setdefault(row.group, []).append(row)
        for row in new_rows:
            groups.setdefault(row.group, []).append(row)
        final = [row for members in groups.values() for row in members]
        fresh = {id(row) for row in new_rows}
        position = 0
        while position < len(final):
            if id(final[position]) not in fresh:
                position += 1
                continue
            end = position
            while end < len(final) and id(final[end]) in fresh:
                end += 1
            self.beginInsertRows(QModelIndex(), position, end - 1)
            self._rows[position:position] = final[position:end]
            self._reindex(position)
            self.endInsertRows()
            position = end

    def _reindex(self, start: int = 0) -> None:
        for i in range(start, len(self._rows)):
            self._index[self._rows[i].status.rule_id] = i

    def _label_row(self, row: _Row, by_id: dict) -> None:
        """Set launch, step, series and group from the labels and the parent chain."""
        depth, node = 0, row
        while node.status.rule_id not in self._labels and depth < _MAX_PARENT_DEPTH:
            parent = by_id.get(node.status.parent_id) if node.status.parent_id else None
            if parent is None:
                break
            node, depth = parent, depth + 1
        label = self._labels.get(node.status.rule_id)
        if label is None:
            row.launch = row.step = row.series = ""
            row.group = ("", node.status.rule_id)  # an unlabelled chain still stays together
            if node is not row:
                row.step = "follow-on"
            return
        row.launch, row.series = label.launch, label.series
        if depth == 0:
            row.step = label.step
        elif depth <= len(label.followon_steps):
            row.step = label.followon_steps[depth - 1]
        else:
            row.step = "follow-on"
        row.group = ("launch", label.launch)

    def _relabel_and_regroup(self) -> None:
        if not self._rows:
            return
        by_id = {row.status.rule_id: row for row in self._rows}
        for row in self._rows:
            self._label_row(row, by_id)
        groups: dict[tuple, list[_Row]] = {}
        for row in self._rows:
            groups.setdefault(row.group, []).append(row)
        final = [row for members in groups.values() for row in members]
        if any(a is not b for a, b in zip(final, self._rows)):
            self.layoutAboutToBeChanged.emit()
            old_rows = {id(row): i for i, row in enumerate(self._rows)}
            new_of_old = {old_rows[id(row)]: i for i, row in enumerate(final)}
            persistent = self.persistentIndexList()
            self._rows = final
            self._reindex()
            self.changePersistentIndexList(
                persistent, [self.index(new_of_old[p.row()], p.column()) for p in persistent])
            self.layoutChanged.emit()
        self.dataChanged.emit(self.index(0, 0),
                              self.index(len(self._rows) - 1, len(self.COLUMNS) - 1))


def _bar_colour(state: str, status) -> QColor | None:
    """Red when tasks failed, grey when the rule was stopped; the style's colour otherwise."""
    if status.failed or state == "failed":
        return _STATE_COLOURS["failed"]
    if state in ("aborted", "expired"):
        return _GREY
    return None


def _progress(status) -> float:
    if status.finished:
        return 1.0
    if status.posted <= 0:
        return 0.0
    return min(1.0, (status.completed + status.failed) / status.posted)


class _RowUpdatingTable(QTableView):
    """A table view that repaints only the rows a ``dataChanged`` range covers.

    Qt 5's ``QAbstractItemView.dataChanged`` repaints the whole viewport for any range larger
    than one cell; with a row-wide range per changed rule that would repaint every visible row on
    every poll. The view has no editors, so there is no editor data to refresh here.
    """

    def dataChanged(self, top_left, bottom_right, roles=()):  # noqa: N802 - Qt override
        if not (top_left.isValid() and bottom_right.isValid()):
            super().dataChanged(top_left, bottom_right, roles)
            return
        viewport = self.viewport()
        top = self.rowViewportPosition(top_left.row())
        bottom = (self.rowViewportPosition(bottom_right.row())
                  + self.rowHeight(bottom_right.row()))
        top, bottom = max(0, top), min(viewport.height(), bottom)
        if bottom > top:
            viewport.update(0, top, viewport.width(), bottom - top)


class RuleTableView(QWidget):
    """The rule table with an "unreachable" banner and an Abort action (context menu, Delete key).

    A right click on the header shows or hides columns (Rule, Timed out and Avg cost start hidden;
    every row's tooltip has all its counts).

    Signals
    -------
    abortRequested(str)
        The user asked to abort a rule (once per selected rule that can be aborted).
    selectionChangedTo(list)
        The selected rule IDs, in row order, after every selection change.
    """

    abortRequested = pyqtSignal(str)
    requeueRequested = pyqtSignal(str)
    selectionChangedTo = pyqtSignal(list)

    #: Columns a right click on the header shows; their values are in each row's tooltip too.
    HIDDEN_BY_DEFAULT = ("rule_id", "timed_out", "average_cost")
    #: Columns given up, in this order, when the table is too narrow for the counts (Posted is in
    #: the Progress text and Series in the row's tooltip); shown again when there is room.
    FOLD_WHEN_NARROW = ("posted", "series")

    def __init__(self, model: RuleTableModel, parent=None, *, confirm_abort: bool = True):
        super().__init__(parent)
        self._model = model
        self._confirm_abort = confirm_abort
        self.banner = QLabel(self)
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("QLabel { background: #b3261e; color: white; padding: 4px; }")
        self.banner.hide()
        self.table = _RowUpdatingTable(self)
        self.table.setModel(model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        vertical = self.table.verticalHeader()
        vertical.setSectionResizeMode(QHeaderView.Fixed)
        vertical.setDefaultSectionSize(self.fontMetrics().height() + 8)
        self._delegate = ProgressBarDelegate(self.table)
        self.table.setItemDelegateForColumn(model._column_of["progress"], self._delegate)
        self._size_columns()
        self.table.viewport().installEventFilter(self)

        self.abort_action = QAction("Abort rule", self)
        self.abort_action.setShortcut(QKeySequence.Delete)
        self.abort_action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.abort_action.setEnabled(False)
        self.abort_action.triggered.connect(self._on_abort_triggered)
        self.copy_action = QAction("Copy rule ID", self)
        self.copy_action.setShortcut(QKeySequence.Copy)
        self.copy_action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.copy_action.triggered.connect(self._on_copy_triggered)
        self.requeue_action = QAction("Re-run failed tasks", self)
        self.requeue_action.setEnabled(False)
        self.requeue_action.triggered.connect(self._on_requeue_triggered)
        self._requeue_reason: str | None = "checking what the rule server can do…"
        self.table.addActions([self.abort_action, self.requeue_action, self.copy_action])
        self.table.setContextMenuPolicy(Qt.ActionsContextMenu)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.banner)
        layout.addWidget(self.table)
        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        model.updated.connect(self._update_actions)

    @property
    def model(self) -> RuleTableModel:
        return self._model

    def selected_rule_ids(self) -> list[str]:
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [self._model.index(row, 0).data(RULE_ID_ROLE) for row in rows]

    def select_rules(self, rule_ids: Iterable[str]) -> None:
        """Select the rows of ``rule_ids`` (unknown IDs are ignored)."""
        wanted = QItemSelection()
        last_column = self._model.columnCount() - 1
        for rule_id in rule_ids:
            row = self._model.row_of(rule_id)
            if row is not None:
                wanted.select(self._model.index(row, 0), self._model.index(row, last_column))
        self.table.selectionModel().select(wanted, QItemSelectionModel.ClearAndSelect)

    def set_reachable(self, reachable: bool, message: str = "") -> None:
        """Show or hide the "cluster unreachable" banner; the rows grey out meanwhile."""
        self._model.set_reachable(reachable)
        if reachable:
            self.banner.hide()
        else:
            self.banner.setText("Cluster unreachable" + (f" ({message})" if message else "")
                                + ". Showing the last state seen; retrying.")
            self.banner.show()
        self._update_actions()

    def _size_columns(self) -> None:
        """Counts and state as narrow as their header or a five-digit number, Series as a typical
        series name, Step the rest. Widths come from font metrics, not from the rows, so updates
        never re-measure; every column can be resized by hand."""
        header = self.table.horizontalHeader()
        header.setStretchLastSection(False)
        header.setHighlightSections(False)
        width = self.fontMetrics().horizontalAdvance
        padding = 2 * self.style().pixelMetric(QStyle.PM_HeaderMargin, None, header) + 8
        samples = {"launch": "#00 00:00", "rule_id": "000000-0000", "state": "finished",
                   "series": "cells_00.pcs", "progress": "0000/0000"}
        for column, (key, label) in enumerate(self._model.COLUMNS):
            if key == "step":
                header.setSectionResizeMode(column, QHeaderView.Stretch)
                continue
            header.setSectionResizeMode(column, QHeaderView.Interactive)
            content = width(samples.get(key, "00000")) + (20 if key == "progress" else 12)
            header.resizeSection(column, max(content, width(label) + padding))
        header.setMinimumSectionSize(width("Step") + padding)
        for key in self.HIDDEN_BY_DEFAULT:
            header.setSectionHidden(self._model._column_of[key], True)
        header.setContextMenuPolicy(Qt.ActionsContextMenu)
        for column, (key, label) in enumerate(self._model.COLUMNS):
            action = QAction(label, header)
            action.setCheckable(True)
            action.setChecked(not header.isSectionHidden(column))
            action.setToolTip(f"Show the {label} column")
            action.toggled.connect(lambda shown, c=column, k=key: self._set_column_shown(c, k, shown))
            header.addAction(action)
        self.column_actions = {key: action for (key, _), action
                               in zip(self._model.COLUMNS, header.actions())}
        self._step_minimum = width("Localise (…") + padding
        self._folded: set[str] = set()
        self._chosen: set[str] = set()

    def _set_column_shown(self, column: int, key: str, shown: bool) -> None:
        """A choice made in the header's menu: kept, never folded or unfolded automatically."""
        self._chosen.add(key)
        self._folded.discard(key)
        self.table.horizontalHeader().setSectionHidden(column, not shown)

    def fit_columns(self) -> None:
        """Fold the :data:`FOLD_WHEN_NARROW` columns the counts need room from; unfold them when
        the table is wide enough again (columns chosen in the header's menu stay as chosen)."""
        header = self.table.horizontalHeader()
        step = self._model._column_of["step"]
        available = self.table.viewport().width()

        def needed() -> int:
            return self._step_minimum + sum(header.sectionSize(c) for c in range(header.count())
                                            if c != step and not header.isSectionHidden(c))
        for key in reversed(self.FOLD_WHEN_NARROW):
            column = self._model._column_of[key]
            if key in self._folded and needed() + header.sectionSize(column) <= available:
                header.setSectionHidden(column, False)
                self._check_quietly(key, True)
                self._folded.discard(key)
        for key in self.FOLD_WHEN_NARROW:
            column = self._model._column_of[key]
            if needed() <= available:
                break
            if key not in self._chosen and not header.isSectionHidden(column):
                header.setSectionHidden(column, True)
                self._check_quietly(key, False)
                self._folded.add(key)

    def _check_quietly(self, key: str, checked: bool) -> None:
        action = self.column_actions[key]
        action.blockSignals(True)
        action.setChecked(checked)
        action.blockSignals(False)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt override
        if watched is self.table.viewport() and event.type() == QEvent.Resize:
            self.fit_columns()
        return super().eventFilter(watched, event)

    def _on_selection_changed(self, *_args) -> None:
        self._update_actions()
        self.selectionChangedTo.emit(self.selected_rule_ids())

    def _update_actions(self, *_args) -> None:
        ids = self.selected_rule_ids()
        self.abort_action.setEnabled(self._model.reachable
                                     and any(self._model.can_abort(i) for i in ids))
        self.copy_action.setEnabled(bool(ids))
        failed = [i for i in ids if (s := self._model.status(i)) is not None and s.failed
                  and not self._model.is_gone(i)]
        self.requeue_action.setEnabled(self._requeue_reason is None and self._model.reachable
                                       and bool(failed))
        self.requeue_action.setToolTip(
            f"Not available: {self._requeue_reason}" if self._requeue_reason
            else "Queue the failed tasks of the selected rule(s) again")

    def set_requeue_available(self, reason: str | None) -> None:
        """``None`` when the rule server can re-run failed tasks, else why it cannot."""
        self._requeue_reason = reason
        self._update_actions()

    def _on_requeue_triggered(self) -> None:
        for rule_id in self.selected_rule_ids():
            status = self._model.status(rule_id)
            if status is not None and status.failed:
                self.requeueRequested.emit(rule_id)

    def _on_abort_triggered(self) -> None:
        ids = [i for i in self.selected_rule_ids() if self._model.can_abort(i)]
        if not ids:
            return
        if self._confirm_abort:
            answer = QMessageBox.question(
                self, "Abort rules",
                f"Abort {len(ids)} rule(s)? The server stops handing out their tasks; "
                "this cannot be undone.")
            if answer != QMessageBox.Yes:
                return
        for rule_id in ids:
            self.abortRequested.emit(rule_id)

    def _on_copy_triggered(self) -> None:
        ids = self.selected_rule_ids()
        if ids:
            QGuiApplication.clipboard().setText("\n".join(ids))
