"""Series and analysis metadata as an editable tree with types and units.

:class:`MetadataModel` (a ``QStandardItemModel``) holds flat dotted keys (``Camera.ADOffset``)
grouped by their first component, with one row per key: name, value, type, unit. Edited values
are parsed and checked against ``rules.settings`` (the schema the workers use); invalid
ones are flagged in place (red, with the reason as tooltip) and left out of
:meth:`MetadataModel.metadata`, so they are never sent.
:class:`MetadataPanel` wraps a tree view, load/save buttons and loading off the GUI thread.
"""
from __future__ import annotations

import json
import logging

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor, QStandardItem, QStandardItemModel
from PyQt5.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from rules.files import atomic_write
from rules.settings import SettingError, format_value, parse_setting, setting_for, setting_problem
from widgets.background import BackgroundCall, CallSignals, TaskPool

logger = logging.getLogger(__name__)

INVALID_BRUSH = QBrush(QColor(255, 205, 205))
EDITED_BRUSH = QBrush(QColor(255, 244, 200))


class MetadataModel(QStandardItemModel):
    """Flat dotted metadata as a two-level tree: group → key, with value, type and unit columns.

    Signals
    -------
    metadataEdited(str, object)
        A key was given a new valid value (key, parsed value).
    problemsChanged(list)
        The list of ``(key, message)`` problems changed.
    """

    metadataEdited = pyqtSignal(str, object)
    problemsChanged = pyqtSignal(list)
    COLUMNS = ("Key", "Value", "Type", "Unit")
    KeyRole = Qt.UserRole + 1

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self._values: dict = {}
        self._original: dict = {}
        self._problems: dict[str, str] = {}
        self._items: dict[str, QStandardItem] = {}
        self._loading = False
        self.itemChanged.connect(self._on_item_changed)

    # -- plain API ------------------------------------------------------------------------------
    def set_metadata(self, metadata: dict) -> None:
        """Replace everything with ``metadata`` (flat dotted keys); marks nothing as edited."""
        self._loading = True
        try:
            self.removeRows(0, self.rowCount())
            self._values, self._problems, self._items = {}, {}, {}
            self._original = dict(metadata)
            for key in sorted(metadata):
                self._add_row(key, metadata[key])
        finally:
            self._loading = False
        self.problemsChanged.emit(self.problems())

    def update_values(self, values: dict) -> None:
        """Set some keys (adding rows for new ones) without touching the others."""
        self._loading = True
        try:
            for key, value in values.items():
                if key in self._items:
                    self._items[key].setText(format_value(value))
                    self._store(key, value, self._items[key], setting_problem(key, value))
                else:
                    self._add_row(key, value)
        finally:
            self._loading = False
        self.problemsChanged.emit(self.problems())

    def set_text(self, key: str, text: str) -> None:
        """Type ``text`` into ``key``'s value cell, as a user would."""
        self._items[key].setText(text)

    def metadata(self) -> dict:
        """Every key with a valid value (flagged keys are left out)."""
        return {k: v for k, v in self._values.items() if k not in self._problems}

    def edited(self) -> dict:
        """Valid keys whose value differs from the one loaded."""
        return {k: v for k, v in self.metadata().items()
                if k not in self._original or self._original[k] != v}

    def problems(self) -> list[tuple[str, str]]:
        return sorted(self._problems.items())

    def value_index(self, key: str):
        return self._items[key].index()

    def value_item(self, key: str) -> QStandardItem:
        """The value cell of ``key`` (its background and tooltip carry the problem)."""
        return self._items[key]

    # -- internals ------------------------------------------------------------------------------
    def _group_item(self, group: str) -> QStandardItem:
        for row in range(self.rowCount()):
            item = self.item(row, 0)
            if item.text() == group and item.data(self.KeyRole) is None:
                return item
        item = QStandardItem(group)
        item.setEditable(False)
        cells = [item] + [self._readonly("") for _ in self.COLUMNS[1:]]
        self.appendRow(cells)
        return item

    @staticmethod
    def _readonly(text: str) -> QStandardItem:
        item = QStandardItem(text)
        item.setEditable(False)
        return item

    def _add_row(self, key: str, value) -> None:
        group, _, name = key.partition(".")
        parent = self._group_item(group) if name else self.invisibleRootItem()
        spec = setting_for(key, value)
        name_item = self._readonly(name or key)
        name_item.setToolTip(key)
        name_item.setData(key, self.KeyRole)
        value_item = QStandardItem(format_value(value))
        value_item.setData(key, self.KeyRole)
        unit_item = self._readonly(spec.unit)
        unit_item.setToolTip(spec.unit)  # the column is narrow: a long unit elides
        parent.appendRow([name_item, value_item, self._readonly(spec.type), unit_item])
        self._items[key] = value_item
        self._store(key, value, value_item, setting_problem(key, value))

    def _store(self, key: str, value, item: QStandardItem, problem: str) -> None:
        self._values[key] = value
        if problem:
            self._problems[key] = problem
            item.setBackground(INVALID_BRUSH)
            item.setToolTip(f"{problem} — this value will not be sent")
        else:
            self._problems.pop(key, None)
            edited = key in self._original and self._original[key] != value
            item.setBackground(EDITED_BRUSH if edited else QBrush())
            item.setToolTip(f"{key} (edited)" if edited else key)

    def _on_item_changed(self, item: QStandardItem) -> None:
        if self._loading or item.column() != 1:
            return
        key = item.data(self.KeyRole)
        if key is None:
            return
        current = self._original.get(key, self._values.get(key))
        self._loading = True  # setBackground re-emits itemChanged
        try:
            try:
                value = parse_setting(key, item.text(), current)
            except SettingError as exc:
                self._store(key, item.text(), item, str(exc))
            else:
                self._store(key, value, item, "")
        finally:
            self._loading = False
        if key not in self._problems:
            self.metadataEdited.emit(key, self._values[key])
        self.problemsChanged.emit(self.problems())


def read_metadata_file(path: str) -> dict:
    """Flat metadata from a PYME ``metadata.json`` file."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


class MetadataPanel(QWidget):
    """The metadata tree with Load / Save buttons; loads off the GUI thread.

    Signals
    -------
    analysisEdited(dict)
        ``Analysis.*`` keys were edited (all valid ``Analysis.*`` values).
    """

    analysisEdited = pyqtSignal(dict)

    def __init__(self, model: MetadataModel | None = None, parent=None):
        super().__init__(parent)
        self.model = model or MetadataModel(self)
        self._request = 0
        self._pool = TaskPool(1, name='metadata_panel')
        self._signals = CallSignals(self)
        self._signals.done.connect(self._on_loaded)
        self._signals.failed.connect(self._on_failed)
        self.tree = QTreeView()
        self.tree.setModel(self.model)
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setIndentation(12)
        header = self.tree.header()
        header.setStretchLastSection(False)
        # the value is what gets edited: it takes the room; long keys and units elide (the
        # full text in the tooltip), so a narrow pane still shows the values
        for column, mode in enumerate((QHeaderView.Interactive, QHeaderView.Stretch,
                                       QHeaderView.ResizeToContents, QHeaderView.Interactive)):
            header.setSectionResizeMode(column, mode)
        header.resizeSection(0, self.fontMetrics().horizontalAdvance("ElectronsPerCo") + 36)
        header.resizeSection(3, self.fontMetrics().horizontalAdvance("e⁻/ADU") + 16)
        self.status_label = QLabel("No series loaded")
        self.status_label.setWordWrap(True)
        self.status_label.setMinimumWidth(120)  # a long series name must not widen the pane
        self.load_button = QPushButton("Load…")
        self.load_button.setToolTip("Load metadata from a metadata.json file")
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save the valid metadata to a JSON file")
        self.load_button.clicked.connect(self._on_load_clicked)
        self.save_button.clicked.connect(self._on_save_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.save_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.status_label)
        layout.addLayout(buttons)
        self.model.problemsChanged.connect(self._on_problems_changed)
        self.model.metadataEdited.connect(self._on_metadata_edited)

    def load_async(self, read, description: str) -> None:
        """Call ``read()`` on a pool thread and show its dict (latest request wins)."""
        self._request += 1
        self.status_label.setText(f"Loading metadata of {description}…")
        self._description = description
        self._pool.start(BackgroundCall(self._load_tag(), read, self._signals))

    def stop(self, timeout_ms: int = 10000) -> bool:
        """Wait for a load in progress (its result is then ignored); True when none is left."""
        self._request += 1
        return self._pool.waitForDone(timeout_ms)

    def load_file(self, path: str) -> None:
        self.load_async(lambda: read_metadata_file(path), path)

    def set_analysis(self, analysis: dict) -> None:
        """Show a localisation step's ``Analysis.*`` settings (without marking them edited)."""
        self.model.update_values(analysis)

    def save_file(self, path: str) -> None:
        """Write the valid metadata as PYME-style sorted, indented JSON.

        The text is made before the file is touched and lands by an atomic rename, so a failure
        leaves no half-written file. Raises ``OSError`` or ``ValueError``.
        """
        try:
            text = json.dumps(self.model.metadata(), indent=1, sort_keys=True)
        except TypeError as exc:
            raise ValueError(f"metadata cannot be written as JSON: {exc}") from exc
        atomic_write(path, text)

    def _load_tag(self) -> str:
        return f"metadata load {self._request}"

    def _on_loaded(self, tag: str, metadata) -> None:
        if tag != self._load_tag():
            return
        analysis = {k: v for k, v in self.model.metadata().items() if k.startswith("Analysis.")}
        self.model.set_metadata({**metadata, **analysis})
        self.tree.expandAll()
        self.status_label.setText(f"Metadata of {self._description}")

    def _on_failed(self, tag: str, message: str) -> None:
        if tag == self._load_tag():
            self.status_label.setText(f"Could not load metadata: {message}")

    def _on_problems_changed(self, problems: list) -> None:
        if problems:
            text = "; ".join(f"{k}: {m}" for k, m in problems[:3])
            self.status_label.setText(f"⚠ Not sent until fixed — {text}")
        elif self.status_label.text().startswith("⚠"):
            self.status_label.setText("Metadata OK")

    def _on_metadata_edited(self, key: str, _value) -> None:
        if key.startswith("Analysis."):
            self.analysisEdited.emit({k: v for k, v in self.model.metadata().items()
                                      if k.startswith("Analysis.")})

    def _on_load_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load metadata", "", "Metadata (*.json)")
        if path:
            self.load_file(path)

    def _on_save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save metadata", "metadata.json",
                                              "Metadata (*.json)")
        if path:
            try:
                self.save_file(path)
            except (OSError, ValueError) as exc:
                self.status_label.setText(f"⚠ Could not save {path}: "
                                          f"{getattr(exc, 'strerror', None) or exc}")
