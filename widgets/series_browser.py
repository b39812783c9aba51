"""A browser of the cluster's series (complete / still spooling), listed off the GUI thread.

The listing walks the data server's tree a few levels deep on a pool thread (``list_directory``
is ``DataClient.listdirectory``-like: ``path -> {name: FileInfo}``) and hands plain
:class:`SeriesEntry` rows back. "Simulate acquisition…" asks for a name, frame count and rate;
the window decides whether it is available (embedded cluster, simulator installed).
"""
from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass

from PyQt5.QtCore import Qt, QThreadPool, QTimer, pyqtSignal
from PyQt5.QtGui import QBrush, QColor, QStandardItem, QStandardItemModel
from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from widgets.background import BackgroundCall, CallSignals

logger = logging.getLogger(__name__)

MAX_DEPTH = 4
SKIPPED = {"LOGS/", "RECIPES/", "analysis/", "__pycache__/"}
REFRESH_MS = 3000


@dataclass(frozen=True)
class SeriesEntry:
    """A folder or a series on the cluster (``path`` is relative to the data root)."""

    path: str
    is_series: bool
    complete: bool = False
    frames: int | None = None

    @property
    def status(self) -> str:
        if not self.is_series:
            return ""
        return "complete" if self.complete else "spooling…"


def walk_series(list_directory, root: str = "", depth: int = MAX_DEPTH) -> list[SeriesEntry]:
    """Folders and series under ``root``; a series' frames are not listed (it is not descended)."""
    entries: list[SeriesEntry] = []
    listing = list_directory(root)
    for name in sorted(listing, key=str.lower):
        info = listing[name]
        if not name.endswith("/") or name in SKIPPED or name.startswith("."):
            continue
        path = posixpath.join(root, name.rstrip("/"))
        if info.is_series or name.endswith(".pcs/"):
            entries.append(SeriesEntry(path, True, bool(info.is_complete)))
        else:
            entries.append(SeriesEntry(path, False))
            if depth > 1:
                entries.extend(walk_series(list_directory, path, depth - 1))
    return entries


def list_series(make_lister) -> list[SeriesEntry]:
    """:func:`walk_series` over a fresh listing from a ``make_lister()`` client (closed after)."""
    with make_lister() as client:
        return walk_series(lambda p: client.listdirectory(p, fresh=True))


def check_series_name(name: str, taken: frozenset[str] | set[str] = frozenset()) -> str:
    """Why ``name`` cannot be a new series' cluster path ("" when it can); ``taken`` holds the
    series paths (``x/y.pcs``) the cluster already has."""
    from rules.uris import check_name
    name = name.strip()
    if not name:
        return "Type a name for the series, e.g. sim/series_01."
    if name.startswith("/") or name.endswith("/"):
        return "The name cannot start or end with '/'."
    path = name if name.endswith(".pcs") else name + ".pcs"
    try:
        check_name(path)
    except ValueError as exc:
        return str(exc)[0].upper() + str(exc)[1:] + "."
    if path in taken:
        return f"The cluster already has a series {path}; pick another name."
    return ""


def free_series_name(taken: frozenset[str] | set[str], stem: str = "sim/series_") -> str:
    """The first ``sim/series_NN`` whose ``.pcs`` is not in ``taken``."""
    n = 1
    while f"{stem}{n:02d}.pcs" in taken:
        n += 1
    return f"{stem}{n:02d}"


class SimulateDialog(QDialog):
    """Asks for a simulated acquisition's name, frame count and frame rate.

    A name the cluster would refuse is flagged under the field and "Spool and launch" stays off.
    """

    def __init__(self, parent=None, name: str | None = None,
                 taken: frozenset[str] | set[str] = frozenset()):
        super().__init__(parent)
        self._taken = frozenset(taken)
        name = name or free_series_name(self._taken)
        self.setWindowTitle("Simulate acquisition")
        self.name_edit = QLineEdit(name)
        self.name_edit.setToolTip("Cluster path of the new series (.pcs is added)")
        self.name_edit.setMinimumWidth(self.fontMetrics().horizontalAdvance("microscope/series_0000")
                                       + 24)
        self.name_problem = QLabel()
        self.name_problem.setWordWrap(True)
        self.name_problem.setStyleSheet("color: #b00020;")
        self.name_problem.hide()
        self.frames = QSpinBox()
        self.frames.setRange(1, 1_000_000)
        self.frames.setValue(500)
        self.frames.setGroupSeparatorShown(True)
        self.fps = QDoubleSpinBox()
        self.fps.setRange(0.1, 10_000)
        self.fps.setDecimals(1)
        self.fps.setValue(100)
        self.fps.setSuffix(" frames/s")
        self.duration = QLabel()
        self.duration.setStyleSheet("color: gray;")
        form = QFormLayout(self)
        form.addRow("Series name", self.name_edit)
        form.addRow("", self.name_problem)
        form.addRow("Frames", self.frames)
        form.addRow("Frame rate", self.fps)
        form.addRow("", self.duration)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.Ok)
        self.ok_button.setText("Spool and launch")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.name_edit.textChanged.connect(self._on_input_changed)
        self.frames.valueChanged.connect(self._on_input_changed)
        self.fps.valueChanged.connect(self._on_input_changed)
        self._on_input_changed()

    def values(self) -> tuple[str, int, float]:
        return self.name_edit.text().strip(), self.frames.value(), self.fps.value()

    def accept(self) -> None:
        if not check_series_name(self.name_edit.text(), self._taken):
            super().accept()

    def _on_input_changed(self, *_args) -> None:
        problem = check_series_name(self.name_edit.text(), self._taken)
        self.name_problem.setText(f"⚠ {problem}" if problem else "")
        self.name_problem.setVisible(bool(problem))
        self.ok_button.setEnabled(not problem)
        seconds = self.frames.value() / self.fps.value()
        self.duration.setText(f"about {seconds:.0f} s of acquisition" if seconds < 120
                              else f"about {seconds / 60:.1f} min of acquisition")


class SeriesBrowser(QWidget):
    """The cluster's folders and series, refreshed in the background.

    Signals
    -------
    seriesSelected(str)
        The cluster path of the series picked (``""`` when a folder or nothing is picked).
    simulateRequested(str, int, float)
        Name, frames and frame rate of a simulated acquisition to start.
    """

    seriesSelected = pyqtSignal(str)
    simulateRequested = pyqtSignal(str, int, float)
    PathRole = Qt.UserRole + 1

    def __init__(self, parent=None):
        super().__init__(parent)
        self._make_lister = None
        self._busy = False
        self._entries: list[SeriesEntry] = []
        self._selected = ""
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._signals = CallSignals(self)
        self._signals.done.connect(self._on_listed)
        self._signals.failed.connect(self._on_failed)
        self.model = QStandardItemModel(self)
        self.model.setHorizontalHeaderLabels(["Series", "Status"])
        self.tree = QTreeView()
        self.tree.setModel(self.model)
        self.tree.setUniformRowHeights(True)
        self.tree.setEditTriggers(QTreeView.NoEditTriggers)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.Stretch)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.refresh_button = QPushButton("Refresh")
        self.simulate_button = QPushButton("Simulate acquisition…")
        self.simulate_button.setEnabled(False)
        self.simulate_button.setToolTip("Available on the embedded cluster")
        self.status_label = QLabel("Not connected")
        self.status_label.setStyleSheet("color: gray;")
        self.status_label.setWordWrap(True)  # never what keeps the pane wide
        buttons = QHBoxLayout()
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.simulate_button)
        buttons.addStretch(1)
        buttons.addWidget(self.status_label)
        hint = QLabel("Pick the series to analyse; a series still spooling can be analysed live.")
        hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(hint)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self.refresh_button.clicked.connect(self.refresh)
        self.simulate_button.clicked.connect(self._on_simulate_clicked)
        self.tree.selectionModel().currentRowChanged.connect(self._on_current_changed)

    # -- public API -----------------------------------------------------------------------------
    def set_source(self, make_lister) -> None:
        """``make_lister()`` → a context-managed client with ``listdirectory(path, fresh=...)``."""
        self._make_lister = make_lister
        self._timer.start()
        self.refresh()

    def set_simulate_available(self, available: bool, tooltip: str) -> None:
        self.simulate_button.setEnabled(available)
        self.simulate_button.setToolTip(tooltip)

    def refresh(self) -> None:
        if self._make_lister is None or self._busy:
            return
        self._busy = True
        make_lister = self._make_lister
        self._pool.start(BackgroundCall("series listing", lambda: list_series(make_lister),
                                        self._signals))

    def entries(self) -> list[SeriesEntry]:
        return list(self._entries)

    def selected_series(self) -> str:
        return self._selected

    def follow_series(self, path: str) -> None:
        """Show ``path`` as the selected series, now if it is listed, else once a listing has it
        (a simulated series appears a moment after it starts spooling)."""
        if path and path != self._selected:
            self._selected = path
            self.select_series(path)

    def select_series(self, path: str) -> bool:
        """Select the row of ``path`` if it is listed."""
        item = self._find(path)
        if item is None:
            return False
        self.tree.setCurrentIndex(item.index())
        return True

    def stop(self, timeout_ms: int = 10000) -> bool:
        self._timer.stop()
        self._make_lister = None
        return self._pool.waitForDone(timeout_ms)

    # -- internals ------------------------------------------------------------------------------
    def _items(self):
        """Every first-column item of the tree, depth first."""
        pending = [self.model.invisibleRootItem()]
        while pending:
            parent = pending.pop()
            for row in range(parent.rowCount()):
                item = parent.child(row, 0)
                yield item
                pending.append(item)

    def _find(self, path: str):
        return next((item for item in self._items() if item.data(self.PathRole) == path), None)

    def _on_listed(self, _tag: str, entries: list) -> None:
        self._busy = False
        self.status_label.setText(f"{sum(e.is_series for e in entries)} series")
        if entries == self._entries:
            return
        self._entries = list(entries)
        expanded = {self.model.itemFromIndex(i).data(self.PathRole)
                    for i in self._expanded_indexes()}
        selected = self._selected
        self.tree.selectionModel().blockSignals(True)
        self.model.removeRows(0, self.model.rowCount())
        items: dict[str, QStandardItem] = {}
        for entry in entries:
            parent_path = posixpath.dirname(entry.path)
            parent = items.get(parent_path, self.model.invisibleRootItem())
            name = QStandardItem(posixpath.basename(entry.path))
            name.setData(entry.path, self.PathRole)
            name.setToolTip(entry.path)
            status = QStandardItem(entry.status)
            if entry.is_series and not entry.complete:
                status.setForeground(QBrush(QColor(20, 90, 170)))
            parent.appendRow([name, status])
            items[entry.path] = name
        for path, item in items.items():
            if path in expanded or not expanded:
                self.tree.setExpanded(item.index(), True)
        self.tree.resizeColumnToContents(1)
        self.tree.selectionModel().blockSignals(False)
        if selected and not self.select_series(selected):
            self._selected = ""
            self.seriesSelected.emit("")

    def _expanded_indexes(self):
        return [item.index() for item in self._items() if self.tree.isExpanded(item.index())]

    def _on_failed(self, _tag: str, message: str) -> None:
        self._busy = False
        self.status_label.setText(f"Cannot list series: {message}")

    def _on_current_changed(self, current, _previous) -> None:
        item = self.model.itemFromIndex(current.siblingAtColumn(0)) if current.isValid() else None
        path = item.data(self.PathRole) if item is not None else ""
        entry = next((e for e in self._entries if e.path == path), None)
        chosen = path if entry is not None and entry.is_series else ""
        if chosen != self._selected:
            self._selected = chosen
            self.seriesSelected.emit(chosen)

    def _on_simulate_clicked(self) -> None:
        taken = {entry.path for entry in self._entries if entry.is_series}
        dialog = SimulateDialog(self, taken=taken)
        if dialog.exec_() == QDialog.Accepted:
            self.simulateRequested.emit(*dialog.values())
