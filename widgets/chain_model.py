"""A thin Qt list model over a chain's steps (``rules.chain.ChainStep``).

The steps, their conversion to factories, validation, expected outputs and the launch context live
in ``rules/chain.py`` (Qt-free, shared with ``spoolside launch``). :class:`ChainModel` only adds what
views need: every insert, remove and move goes through Qt's begin/end calls, so views, drag and
drop and problem marks hook in at one place.
"""
from __future__ import annotations

import copy
import json
import logging

from PyQt5.QtCore import QAbstractListModel, QMimeData, QModelIndex, Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor

from rules.chain import ChainStep, from_factories, to_factories

logger = logging.getLogger(__name__)

MIME_TYPE = "application/x-spoolside-chain-rows"


class ChainModel(QAbstractListModel):
    """A Qt list model over the chain's steps (one row per step), reorderable by drag and drop.

    Signals
    -------
    chainChanged()
        Any step was added, removed, moved or edited.
    """

    chainChanged = pyqtSignal()
    StepRole = Qt.UserRole + 1

    def __init__(self, steps: list[ChainStep] | None = None, parent=None):
        super().__init__(parent)
        self._steps: list[ChainStep] = list(steps or [])
        self._problems: dict[int, list[str]] = {}
        self._marking = False
        for sig in (self.rowsInserted, self.rowsRemoved, self.rowsMoved, self.dataChanged,
                    self.modelReset):
            sig.connect(self._emit_changed)

    def _emit_changed(self, *_args) -> None:
        if not self._marking:
            self.chainChanged.emit()

    def set_problems(self, problems) -> None:
        """Show ``StepProblem``s on their rows (red text, tooltip); not a change of the chain."""
        by_row: dict[int, list[str]] = {}
        for problem in problems:
            by_row.setdefault(problem.row, []).append(str(problem))
        if by_row == self._problems:
            return
        self._problems = by_row
        if self._steps:
            self._marking = True
            try:
                self.dataChanged.emit(self.index(0), self.index(len(self._steps) - 1),
                                      [Qt.DisplayRole, Qt.ForegroundRole, Qt.ToolTipRole])
            finally:
                self._marking = False

    # -- plain access ---------------------------------------------------------------------------
    @property
    def steps(self) -> list[ChainStep]:
        """A copy of the steps (edit through the model's methods)."""
        return [s.copy() for s in self._steps]

    def step(self, row: int) -> ChainStep:
        return self._steps[row]

    def to_factories(self, *, chained: bool = True) -> list:
        return to_factories(self._steps, chained=chained)

    def set_factories(self, factories) -> None:
        self.set_steps(from_factories(factories))

    def set_steps(self, steps: list[ChainStep]) -> None:
        self.beginResetModel()
        self._steps = [s.copy() for s in steps]
        self.endResetModel()

    def append_step(self, step: ChainStep) -> int:
        return self.insert_step(len(self._steps), step)

    def insert_step(self, row: int, step: ChainStep) -> int:
        row = max(0, min(row, len(self._steps)))
        self.beginInsertRows(QModelIndex(), row, row)
        self._steps.insert(row, step)
        self.endInsertRows()
        return row

    def remove_step(self, row: int) -> None:
        self.removeRows(row, 1)

    def duplicate_step(self, row: int) -> int:
        return self.insert_step(row + 1, self._steps[row].copy())

    def move_step(self, source: int, destination: int) -> bool:
        """Move the step at ``source`` so that it ends up at index ``destination``."""
        if destination > source:
            destination += 1  # Qt counts the destination before the move
        return self.moveRows(QModelIndex(), source, 1, QModelIndex(), destination)

    def update_step(self, row: int, **changes) -> None:
        """Change fields of one step (e.g. ``recipe=...``) and tell the views."""
        step = self._steps[row]
        for key, value in changes.items():
            if not hasattr(step, key):
                raise AttributeError(f"ChainStep has no field {key!r}")
            setattr(step, key, copy.deepcopy(value))
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.DisplayRole, self.StepRole])

    # -- Qt model API ---------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self._steps)

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._steps):
            return None
        step = self._steps[index.row()]
        problems = self._problems.get(index.row(), [])
        if role == Qt.DisplayRole:
            return f"{index.row() + 1}. {step.title()}" + ("  ⚠" if problems else "")
        if role == Qt.ForegroundRole and problems:
            return QBrush(QColor(176, 0, 32))
        if role == Qt.ToolTipRole:
            return "\n".join(problems) if problems else (step.recipe_uri or step.kind)
        if role == self.StepRole:
            return step
        return None

    def flags(self, index):
        base = super().flags(index)
        if index.isValid():
            return base | Qt.ItemIsDragEnabled
        return base | Qt.ItemIsDropEnabled

    def removeRows(self, row, count, parent=QModelIndex()):
        if parent.isValid() or row < 0 or count < 1 or row + count > len(self._steps):
            return False
        self.beginRemoveRows(QModelIndex(), row, row + count - 1)
        del self._steps[row:row + count]
        self.endRemoveRows()
        return True

    def moveRows(self, source_parent, source_row, count, destination_parent, destination_child):
        if (source_parent.isValid() or destination_parent.isValid() or count < 1
                or source_row < 0 or source_row + count > len(self._steps)
                or not 0 <= destination_child <= len(self._steps)
                or source_row <= destination_child <= source_row + count):
            return False
        if not self.beginMoveRows(QModelIndex(), source_row, source_row + count - 1,
                                  QModelIndex(), destination_child):
            return False
        moving = self._steps[source_row:source_row + count]
        del self._steps[source_row:source_row + count]
        insert_at = destination_child - count if destination_child > source_row else destination_child
        self._steps[insert_at:insert_at] = moving
        self.endMoveRows()
        return True

    def supportedDropActions(self):
        return Qt.MoveAction

    def supportedDragActions(self):
        return Qt.MoveAction

    def mimeTypes(self):
        return [MIME_TYPE]

    def mimeData(self, indexes):
        rows = sorted({i.row() for i in indexes if i.isValid()})
        mime = QMimeData()
        mime.setData(MIME_TYPE, json.dumps(rows).encode())
        return mime

    def canDropMimeData(self, data, action, row, column, parent):
        return action == Qt.MoveAction and data.hasFormat(MIME_TYPE)

    def dropMimeData(self, data, action, row, column, parent):
        """Move the dragged rows to the drop position (the view does not remove them afterwards)."""
        if not self.canDropMimeData(data, action, row, column, parent):
            return False
        try:
            rows = json.loads(bytes(data.data(MIME_TYPE)).decode())
        except ValueError:
            return False
        if row < 0:
            row = parent.row() if parent.isValid() else len(self._steps)
        rows = sorted({r for r in rows if 0 <= r < len(self._steps)})
        moving = [self._steps[r] for r in rows]
        # Anchor: the first step at or after the drop row that is not itself being moved;
        # each dragged step goes just before it, in the dragged order.
        anchor = next((s for s in self._steps[row:] if not any(s is m for m in moving)), None)
        for step in moving:
            current = next(i for i, s in enumerate(self._steps) if s is step)
            destination = (len(self._steps) if anchor is None
                           else next(i for i, s in enumerate(self._steps) if s is anchor))
            if current != destination - 1:
                self.moveRows(QModelIndex(), current, 1, QModelIndex(), destination)
        # False: the view must not remove the source rows itself (they were moved here).
        return False
