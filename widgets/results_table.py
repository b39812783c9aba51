"""A results table shown as it is read: readable columns with units, sortable, and a plot of any
column (histogram, or scatter against another).

:class:`ColumnsTableModel` is a thin Qt model over :class:`rules.result_tables.TableColumns`
(numpy columns filled in the background): it shows the rows read so far, formats only the cells
on screen and sorts with a numpy permutation, so a million rows cost no more than a thousand.
:class:`ColumnPlot` draws a histogram of one column, or a scatter of two (a random sample of at
most :data:`SCATTER_POINTS` points).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import QAbstractTableModel, QModelIndex, Qt
from PyQt5.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from rules.result_tables import TableColumns

#: Points drawn in a scatter plot at most (a random sample beyond).
SCATTER_POINTS = 50_000
HISTOGRAM_BINS = 100
_NONE = "— histogram —"


class ColumnsTableModel(QAbstractTableModel):
    """Read-only rows of a :class:`TableColumns` (GUI thread): ``rowCount`` is the rows read so
    far; call :meth:`rows_arrived` as the reader fills more."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._table: TableColumns | None = None
        self._shown = 0
        self._order: np.ndarray | None = None  # row → row of the table when sorted

    def set_table(self, table: TableColumns | None) -> None:
        self.beginResetModel()
        self._table = table
        self._shown = table.loaded if table is not None else 0
        self._order = None
        self.endResetModel()

    @property
    def table(self) -> TableColumns | None:
        return self._table

    def rows_arrived(self) -> None:
        """Show the rows the reader has added since (unsorted: they go at the end)."""
        table = self._table
        if table is None or table.loaded <= self._shown:
            return
        if self._order is not None:  # sorted on a part: sort again with the new rows in place
            self.beginResetModel()
            self._shown = table.loaded
            self.endResetModel()
            return
        self.beginInsertRows(QModelIndex(), self._shown, table.loaded - 1)
        self._shown = table.loaded
        self.endInsertRows()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else self._shown

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt's name
        if parent.isValid() or self._table is None:
            return 0
        return len(self._table.columns)

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802 - Qt's name
        if self._table is None:
            return None
        if orientation == Qt.Horizontal and 0 <= section < len(self._table.columns):
            column = self._table.columns[section]
            if role == Qt.DisplayRole:
                return column.label
            if role == Qt.ToolTipRole:
                return f"{column.label} — column {column.key!r}" if column.key != column.label \
                    else column.key
        elif orientation == Qt.Vertical and role == Qt.DisplayRole:
            return str(self._row(section) + 1)
        return None

    def _row(self, row: int) -> int:
        return int(self._order[row]) if self._order is not None else row

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or self._table is None:
            return None
        values = self._table.values[self._table.columns[index.column()].key]
        value = values[self._row(index.row())]
        if role == Qt.TextAlignmentRole:
            return int(Qt.AlignRight | Qt.AlignVCenter) if values.dtype.kind in "iuf" else None
        if role != Qt.DisplayRole:
            return None
        if isinstance(value, (bytes, np.bytes_)):
            return value.decode("utf-8", "replace")
        if values.dtype.kind == "f":
            return "" if np.isnan(value) else f"{value:.6g}"
        return str(value)

    def sort(self, column: int, order=Qt.AscendingOrder) -> None:
        """Sort the rows read so far by ``column`` (NaN last); -1 restores the file's order."""
        table = self._table
        if table is None:
            return
        # a reset, not layoutChanged: Qt's vertical header re-maps every row on layoutChanged
        # (≈ 0.4 s for a million), and nothing here is selected or persistent
        self.beginResetModel()
        if column < 0 or column >= len(table.columns):
            self._order = None
        else:
            values = table.values[table.columns[column].key][:self._shown]
            order_ = np.argsort(values, kind="stable")
            if order == Qt.DescendingOrder:
                if values.dtype.kind == "f":  # keep NaN last either way
                    nan = np.isnan(values[order_])
                    order_ = np.concatenate([order_[~nan][::-1], order_[nan]])
                else:
                    order_ = order_[::-1]
            self._order = order_
        self.endResetModel()


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return values[np.isfinite(values)]


class ColumnPlot(QWidget):
    """Histogram of the column picked in *Plot*, or a scatter of it against *against*."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.x_box = QComboBox()
        self.y_box = QComboBox()
        self.note = QLabel("")
        self.note.setStyleSheet("color: gray;")
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.curve = pg.PlotDataItem()
        self.plot.addItem(self.curve)
        row = QHBoxLayout()
        row.addWidget(QLabel("Plot"))
        row.addWidget(self.x_box)
        row.addWidget(QLabel("against"))
        row.addWidget(self.y_box)
        row.addWidget(self.note, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.plot, 1)
        self._table: TableColumns | None = None
        self.x_box.currentIndexChanged.connect(self.redraw)
        self.y_box.currentIndexChanged.connect(self.redraw)

    def set_table(self, table: TableColumns | None) -> None:
        self._table = table
        numeric = [c for c in (table.columns if table else [])
                   if table.values[c.key].dtype.kind in "iuf"]
        for box in (self.x_box, self.y_box):
            box.blockSignals(True)
            box.clear()
        self.y_box.addItem(_NONE, None)
        for column in numeric:
            self.x_box.addItem(column.label, column.key)
            self.y_box.addItem(column.label, column.key)
        preferred = next((i for i, c in enumerate(numeric) if c.key in ("x", "area_nm2")), 0)
        self.x_box.setCurrentIndex(preferred)
        for box in (self.x_box, self.y_box):
            box.blockSignals(False)
        self.redraw()

    def redraw(self) -> None:
        """Draw the chosen columns over the rows read so far."""
        table, x_key, y_key = self._table, self.x_box.currentData(), self.y_box.currentData()
        if table is None or x_key is None or not table.loaded:
            self.curve.setData([], [])
            self.note.setText("")
            return
        n = table.loaded
        x_label = self.x_box.currentText()
        if y_key is None:
            values = _finite(table.values[x_key][:n])
            if not len(values):
                self.curve.setData([], [])
                self.note.setText("no values")
                return
            counts, edges = np.histogram(values, HISTOGRAM_BINS)
            self.curve.setData(edges, counts, stepMode="center", fillLevel=0,
                               brush=pg.mkBrush("#3182bd"), pen=None, symbol=None)
            self.plot.setLabel("bottom", x_label)
            self.plot.setLabel("left", "count")
            self.note.setText(f"{len(values):,} values")
        else:
            x = np.asarray(table.values[x_key][:n], np.float64)
            y = np.asarray(table.values[y_key][:n], np.float64)
            keep = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
            if len(keep) > SCATTER_POINTS:
                keep = np.sort(np.random.default_rng(0).choice(keep, SCATTER_POINTS, replace=False))
            self.curve.setData(x[keep], y[keep], stepMode=None, fillLevel=None, pen=None,
                               symbol="o", symbolSize=3, symbolPen=None,
                               symbolBrush=pg.mkBrush(49, 130, 189, 120))
            self.plot.setLabel("bottom", x_label)
            self.plot.setLabel("left", self.y_box.currentText())
            self.note.setText(f"{len(keep):,} points" + (" (a random sample)"
                                                         if len(keep) == SCATTER_POINTS else ""))
        self.plot.enableAutoRange()
