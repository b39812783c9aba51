"""A browser of the cluster's series (complete / still spooling), listed off the GUI thread.

The listing walks the data server's tree a few levels deep on a pool thread (``list_directory``
is ``DataClient.listdirectory``-like: ``path -> {name: FileInfo}``) and hands plain
:class:`SeriesEntry` rows back. "Simulate acquisition…" asks for a name, frame count and rate, and
the sample and camera; the window decides whether it is available (embedded cluster, simulator
installed) and reports a running simulation's real spool rate here (:meth:`set_simulation_status`).
"""
from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass

from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtGui import QBrush, QColor, QStandardItem, QStandardItemModel
from PyQt5.QtWidgets import (
    QAction,
    QComboBox,
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

from rules.simulation import (
    SIMULATION_SETTINGS,
    SimulationSettings,
    free_series_name,
    series_name_problem,
)
from widgets.background import BackgroundCall, CallSignals, TaskPool

logger = logging.getLogger(__name__)

MAX_DEPTH = 4
SKIPPED = {"LOGS/", "RECIPES/", "analysis/", "__pycache__/"}
REFRESH_MS = 3000
#: While listings come back unchanged the interval doubles up to this (idle CPU); any change, a
#: click on Refresh or a series to follow brings it back to ``REFRESH_MS``.
IDLE_REFRESH_MS = 24000


#: Analysis outputs listed under their series (files of a folder's ``analysis/``).
OUTPUT_EXTS = (".h5r", ".hdf", ".tif", ".tiff", ".csv", ".npy")


@dataclass(frozen=True)
class SeriesEntry:
    """A folder, a series, or an analysis output on the cluster (``path`` relative to the data
    root). An output is listed under ``parent`` (its series, or its ``analysis`` folder)."""

    path: str
    is_series: bool
    complete: bool = False
    frames: int | None = None
    is_output: bool = False
    parent: str | None = None
    size: int = -1

    @property
    def parent_path(self) -> str:
        return self.parent if self.parent is not None else posixpath.dirname(self.path)

    @property
    def status(self) -> str:
        if self.is_output:
            return size_text(self.size)
        if not self.is_series:
            return ""
        return "complete" if self.complete else "spooling…"


def size_text(size: int) -> str:
    if size < 0:
        return "being written"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def output_owner(name: str, stubs: list[str]) -> str | None:
    """The series stub an output file belongs to (``cells_01_blobs.csv`` → ``cells_01``; the
    longest that fits), or None."""
    stem = posixpath.splitext(name)[0]
    owners = [s for s in stubs if stem == s or stem.startswith(s + "_")]
    return max(owners, key=len) if owners else None


def _outputs(list_directory, folder: str, series: dict[str, str]) -> list[SeriesEntry]:
    """The analysis outputs in ``folder/analysis``, each under the series of ``series``
    (stub → path) it belongs to, else under the ``analysis`` folder entry."""
    analysis = posixpath.join(folder, "analysis")
    listing = list_directory(analysis)
    files = sorted((n for n in listing if not n.endswith("/") and n.lower().endswith(OUTPUT_EXTS)),
                   key=str.lower)
    entries: list[SeriesEntry] = []
    loose = []
    for name in files:
        owner = output_owner(name, list(series))
        entry = SeriesEntry(posixpath.join(analysis, name), False, is_output=True,
                            parent=series[owner] if owner else analysis, size=listing[name].size)
        (entries if owner else loose).append(entry)
    if loose:
        entries.append(SeriesEntry(analysis, False))
        entries.extend(loose)
    return entries


def walk_series(list_directory, root: str = "", depth: int = MAX_DEPTH) -> list[SeriesEntry]:
    """Folders, series and their analysis outputs under ``root``; a series' frames are not
    listed (it is not descended)."""
    entries: list[SeriesEntry] = []
    listing = list_directory(root)
    series: dict[str, str] = {}
    for name in sorted(listing, key=str.lower):
        info = listing[name]
        if not name.endswith("/") or name in SKIPPED or name.startswith("."):
            continue
        path = posixpath.join(root, name.rstrip("/"))
        if info.is_series or name.endswith(".pcs/"):
            entries.append(SeriesEntry(path, True, bool(info.is_complete)))
            series[posixpath.splitext(posixpath.basename(path))[0]] = path
        else:
            entries.append(SeriesEntry(path, False))
            if depth > 1:
                entries.extend(walk_series(list_directory, path, depth - 1))
    if "analysis/" in listing:
        entries.extend(_outputs(list_directory, root, series))
    return entries


def list_series(make_lister) -> list[SeriesEntry]:
    """:func:`walk_series` over a fresh listing from a ``make_lister()`` client (closed after)."""
    with make_lister() as client:
        return walk_series(lambda p: client.listdirectory(p, fresh=True))


class SimulateDialog(QDialog):
    """Asks for a simulated acquisition: series name, frames and rate, and the sample and camera
    (structure, emitter density, photons, background, camera).

    What is typed is checked by the one schema (``rules.simulation``), whose bounds are also the
    spin boxes' ranges; a problem is shown under its field and "Spool and launch" stays off.
    """

    def __init__(self, parent=None, name: str | None = None,
                 taken: frozenset[str] | set[str] = frozenset(),
                 settings: SimulationSettings = SimulationSettings()):
        super().__init__(parent)
        self._taken = frozenset(taken)
        name = name or free_series_name(self._taken)
        self.setWindowTitle("Simulate acquisition")
        self.name_edit = QLineEdit(name)
        self.name_edit.setToolTip("Cluster path of the new series (.pcs is added)")
        self.name_edit.setMinimumWidth(self.fontMetrics().horizontalAdvance("microscope/series_0000")
                                       + 24)
        self.name_problem = self._problem_label()
        self.frames = self._spin("frames", settings.frames, step=100)
        self.fps = self._spin("fps", settings.fps, step=50, decimals=1, suffix=" frames/s")
        self.duration = QLabel()
        self.duration.setStyleSheet("color: gray;")
        self.structure = QComboBox()
        self.structure.addItems(SIMULATION_SETTINGS["structure"].choices)
        self.structure.setCurrentText(settings.structure)
        self.structure.setToolTip("What the fluorophores label")
        self.density = self._spin("emitters_per_frame", settings.emitters_per_frame, step=5,
                                  decimals=1, suffix=" per frame")
        self.density.setToolTip("Emitters switched on in a frame, on average (blinking)")
        self.photons = self._spin("photons", settings.photons, step=100, decimals=0,
                                  suffix=" photons")
        self.photons.setToolTip("Mean photons an emitter gives in one frame (lognormal spread)")
        self.background = self._spin("background", settings.background, step=5, decimals=1,
                                     suffix=" photons/px")
        self.background.setToolTip("Background photons per pixel and frame")
        self.camera = QComboBox()
        self.camera.addItems(SIMULATION_SETTINGS["camera"].choices)
        self.camera.setCurrentText(settings.camera)
        self.camera.setToolTip("sCMOS: uniform offset and read noise; with pixel maps: per-pixel "
                               "offset and read noise (hot pixels), the maps written beside the "
                               "frames; EMCCD: EM gain 100")
        self.settings_problem = self._problem_label()
        form = QFormLayout(self)
        form.addRow("Series name", self.name_edit)
        form.addRow("", self.name_problem)
        form.addRow("Frames", self.frames)
        form.addRow("Frame rate", self.fps)
        form.addRow("", self.duration)
        form.addRow("Structure", self.structure)
        form.addRow("Emitter density", self.density)
        form.addRow("Photons", self.photons)
        form.addRow("Background", self.background)
        form.addRow("Camera", self.camera)
        form.addRow("", self.settings_problem)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.Ok)
        self.ok_button.setText("Spool and launch")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        form.setSizeConstraint(QFormLayout.SetFixedSize)   # grows with a problem shown, and back
        self.name_edit.textChanged.connect(self._on_input_changed)
        for spin in (self.frames, self.fps, self.density, self.photons, self.background):
            spin.valueChanged.connect(self._on_input_changed)
        self.structure.currentTextChanged.connect(self._on_input_changed)
        self.camera.currentTextChanged.connect(self._on_input_changed)
        self._on_input_changed()

    @staticmethod
    def _problem_label() -> QLabel:
        label = QLabel()
        label.setWordWrap(True)
        label.setStyleSheet("color: #b00020;")
        label.hide()
        return label

    @staticmethod
    def _spin(field: str, value, *, step: float, decimals: int | None = None, suffix: str = ""):
        """A spin box over the range the schema allows for ``field``."""
        spec = SIMULATION_SETTINGS[field]
        spin = QSpinBox() if spec.type == "int" else QDoubleSpinBox()
        if decimals is not None:
            spin.setDecimals(decimals)
        spin.setRange(spec.minimum, spec.maximum)
        spin.setSingleStep(step)
        spin.setGroupSeparatorShown(True)
        spin.setSuffix(suffix)
        spin.setValue(value)
        return spin

    def settings(self) -> SimulationSettings:
        return SimulationSettings(
            frames=self.frames.value(), fps=self.fps.value(),
            structure=self.structure.currentText(), emitters_per_frame=self.density.value(),
            photons=self.photons.value(), background=self.background.value(),
            camera=self.camera.currentText())

    def values(self) -> tuple[str, SimulationSettings]:
        return self.name_edit.text().strip(), self.settings()

    def accept(self) -> None:
        if not self._problems():
            super().accept()

    def _problems(self) -> list[str]:
        problems = [series_name_problem(self.name_edit.text(), self._taken)]
        return [p for p in problems + list(self.settings().problems().values()) if p]

    def _on_input_changed(self, *_args) -> None:
        problem = series_name_problem(self.name_edit.text(), self._taken)
        self.name_problem.setText(f"⚠ {problem}" if problem else "")
        self.name_problem.setVisible(bool(problem))
        settings_problems = list(self.settings().problems().values())
        self.settings_problem.setText("\n".join(f"⚠ {p}" for p in settings_problems))
        self.settings_problem.setVisible(bool(settings_problems))
        self.ok_button.setEnabled(not self._problems())
        seconds = self.frames.value() / self.fps.value()
        self.duration.setText(f"about {seconds:.0f} s of acquisition" if seconds < 120
                              else f"about {seconds / 60:.1f} min of acquisition")


def name_tree(headers: list[str], parent: QWidget) -> tuple[QStandardItemModel, QTreeView]:
    """A read-only tree of cluster entries: a wide name column, then a narrow one."""
    model = QStandardItemModel(parent)
    model.setHorizontalHeaderLabels(headers)
    tree = QTreeView()
    tree.setModel(model)
    tree.setUniformRowHeights(True)
    tree.setEditTriggers(QTreeView.NoEditTriggers)
    tree.header().setStretchLastSection(False)
    tree.header().setSectionResizeMode(0, QHeaderView.Stretch)
    tree.header().setSectionResizeMode(1, QHeaderView.ResizeToContents)
    return model, tree


class SeriesBrowser(QWidget):
    """The cluster's folders, series and each series' analysis outputs, refreshed in the
    background.

    Signals
    -------
    seriesSelected(str)
        The cluster path of the series picked (``""`` when a folder or nothing is picked).
    simulateRequested(str, object)
        Name and :class:`~rules.simulation.SimulationSettings` of a simulated acquisition to start.
    openRequested(str)
        The cluster path of an analysis output to open (double-click, or *Open in Results*).
    showInFolderRequested(str)
        The cluster path of an entry to show in the system's file browser.
    copyUriRequested(str)
        The cluster path of an entry whose URI is to be copied.
    """

    seriesSelected = pyqtSignal(str)
    simulateRequested = pyqtSignal(str, object)
    openRequested = pyqtSignal(str)
    showInFolderRequested = pyqtSignal(str)
    copyUriRequested = pyqtSignal(str)
    PathRole = Qt.UserRole + 1

    def __init__(self, parent=None):
        super().__init__(parent)
        self._make_lister = None
        self._busy = False
        self._entries: list[SeriesEntry] = []
        self._selected = ""
        self._pool = TaskPool(1, name='series_browser')
        self._signals = CallSignals(self)
        self._signals.done.connect(self._on_listed)
        self._signals.failed.connect(self._on_failed)
        self.model, self.tree = name_tree(["Series", "Status"], self)
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
        hint = QLabel("Pick the series to analyse; a series still spooling can be analysed live. "
                      "Double-click an analysis output to open it in the Results tab.")
        hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(hint)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        self.simulation_label = QLabel()
        self.simulation_label.setWordWrap(True)
        self.simulation_label.hide()
        layout.addWidget(self.simulation_label)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self._list)
        self.refresh_button.clicked.connect(self.refresh)
        self.simulate_button.clicked.connect(self._on_simulate_clicked)
        self.tree.selectionModel().currentRowChanged.connect(self._on_current_changed)
        self.tree.doubleClicked.connect(self._on_double_clicked)
        self.open_action = QAction("Open in Results", self.tree)
        self.open_action.triggered.connect(lambda: self._emit_for_current(self.openRequested, True))
        self.show_action = QAction("Show in Folder", self.tree)
        self.show_action.triggered.connect(
            lambda: self._emit_for_current(self.showInFolderRequested))
        self.copy_action = QAction("Copy URI", self.tree)
        self.copy_action.triggered.connect(lambda: self._emit_for_current(self.copyUriRequested))
        for action in (self.open_action, self.show_action, self.copy_action):
            self.tree.addAction(action)
        self.tree.setContextMenuPolicy(Qt.ActionsContextMenu)
        self.set_local_files(False, "")

    # -- public API -----------------------------------------------------------------------------
    def set_source(self, make_lister) -> None:
        """``make_lister()`` → a context-managed client with ``listdirectory(path, fresh=...)``."""
        self._make_lister = make_lister
        self._timer.start()
        self.refresh()

    def set_local_files(self, local: bool, reason: str) -> None:
        """Whether the cluster's files are on this machine (*Show in Folder*), and why not."""
        self.show_action.setEnabled(local)
        self.show_action.setToolTip("" if local else reason)
        self.show_action.setText("Show in Folder" if local else "Show in Folder (embedded cluster only)")

    def set_simulate_available(self, available: bool, tooltip: str) -> None:
        self.simulate_button.setEnabled(available)
        self.simulate_button.setToolTip(tooltip)

    def set_simulation_status(self, text: str) -> None:
        """One line on the window's simulated acquisition ("" hides it)."""
        self.simulation_label.setText(text)
        self.simulation_label.setVisible(bool(text))

    def refresh(self) -> None:
        self._timer.setInterval(REFRESH_MS)
        self._list()

    def _list(self) -> None:
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
            if not self.select_series(path):
                self.refresh()

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
        text = f"{sum(e.is_series for e in entries)} series"
        if self.status_label.text() != text:
            self.status_label.setText(text)
        if entries == self._entries:
            self._timer.setInterval(min(self._timer.interval() * 2, IDLE_REFRESH_MS))
            return
        self._timer.setInterval(REFRESH_MS)
        self._entries = list(entries)
        expanded = {self.model.itemFromIndex(i).data(self.PathRole)
                    for i in self._expanded_indexes()}
        selected = self._selected
        self.tree.selectionModel().blockSignals(True)
        self.model.removeRows(0, self.model.rowCount())
        items: dict[str, QStandardItem] = {}
        for entry in entries:
            parent = items.get(entry.parent_path, self.model.invisibleRootItem())
            name = QStandardItem(posixpath.basename(entry.path))
            name.setData(entry.path, self.PathRole)
            name.setToolTip(entry.path)
            status = QStandardItem(entry.status)
            if entry.is_series and not entry.complete:
                status.setForeground(QBrush(QColor(20, 90, 170)))
            if entry.is_output:
                name.setForeground(QBrush(QColor(90, 90, 90)))
                name.setToolTip(f"{entry.path} — double-click to open it in the Results tab")
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

    def _entry_at(self, index) -> SeriesEntry | None:
        item = self.model.itemFromIndex(index.siblingAtColumn(0)) if index.isValid() else None
        path = item.data(self.PathRole) if item is not None else ""
        return next((e for e in self._entries if e.path == path), None)

    def _emit_for_current(self, signal, outputs_only: bool = False) -> None:
        entry = self._entry_at(self.tree.currentIndex())
        if entry is not None and (entry.is_output or not outputs_only):
            signal.emit(entry.path)

    def _on_double_clicked(self, index) -> None:
        entry = self._entry_at(index)
        if entry is not None and entry.is_output:
            self.openRequested.emit(entry.path)

    def _on_current_changed(self, current, _previous) -> None:
        entry = self._entry_at(current)
        self.open_action.setEnabled(entry is not None and entry.is_output)
        if entry is not None and entry.is_output:
            return  # looking at a series' output keeps the series picked
        path = entry.path if entry is not None else ""
        chosen = path if entry is not None and entry.is_series else ""
        if chosen != self._selected:
            self._selected = chosen
            self.seriesSelected.emit(chosen)

    def _on_simulate_clicked(self) -> None:
        taken = {entry.path for entry in self._entries if entry.is_series}
        dialog = SimulateDialog(self, taken=taken)
        if dialog.exec_() == QDialog.Accepted:
            self.simulateRequested.emit(*dialog.values())
