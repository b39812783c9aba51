"""*File ▸ Import data…* and drag-and-drop: a local TIFF stack, PYME ``.h5`` file or ``.pcs`` folder into
the cluster.

The dialog reads and checks the file off the GUI thread (:func:`rules.importer.open_source`),
shows what it found, asks for the series name and for the metadata the file does not give
(checked with :mod:`rules.settings`), then uploads with a progress bar
(:func:`rules.importer.import_series`) and emits :attr:`ImportDialog.imported` with the series path.
"""
from __future__ import annotations

import pathlib
import threading
from typing import Callable

from PyQt5.QtCore import QEvent, QObject, pyqtSignal
from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from rules.dataserver_client import DataClient
from rules.importer import REQUIRED, ImportSource, import_series, open_source
from rules.settings import SettingError, check_setting
from rules.uris import check_name
from widgets.background import BackgroundCall, CallSignals, shared_pool

#: The fields the dialog offers: (metadata key, label, factor from the typed value to the key's).
FIELDS = (("voxelsize.x", "Pixel size (nm)", 1e-3), ("Camera.ADOffset", "Camera offset (ADU)", 1.0),
          ("Camera.ElectronsPerCount", "Electrons per ADU", 1.0),
          ("Camera.ReadNoise", "Read noise (e⁻)", 1.0), ("Camera.TrueEMGain", "EM gain", 1.0))
FILE_FILTER = "TIFF stacks and PYME series (*.tif *.tiff *.h5 *.hdf5);;All files (*)"


class _Progress(QObject):
    changed = pyqtSignal(int, int)


class ImportDialog(QDialog):
    """Import one file or folder; emits ``imported(series_path)`` when the upload is complete."""

    imported = pyqtSignal(str)

    def __init__(self, path: str | pathlib.Path, make_client: Callable[[], DataClient],
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.path = pathlib.Path(path)
        self.source: ImportSource | None = None
        self._make_client = make_client
        self._cancel = threading.Event()
        self._busy = False
        self.setWindowTitle(f"Import {self.path.name}")
        self.info = QLabel(f"Reading {self.path.name}…")
        self.info.setWordWrap(True)
        self.name = QLineEdit(f"imported/{self.path.name.split('.')[0]}")
        self.fields: dict[str, QLineEdit] = {key: QLineEdit() for key, _, _ in FIELDS}
        form = QFormLayout()
        form.addRow("Series name", self.name)
        for key, label, _ in FIELDS:
            form.addRow(label, self.fields[key])
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b3261e")
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.import_button = self.buttons.button(QDialogButtonBox.Ok)
        self.import_button.setText("Import")
        self.import_button.setEnabled(False)
        self.buttons.accepted.connect(self.start_import)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (self.info,):
            layout.addWidget(widget)
        layout.addLayout(form)
        for widget in (self.error, self.progress, self.buttons):
            layout.addWidget(widget)
        self.name.textChanged.connect(self._check)
        for edit in self.fields.values():
            edit.textChanged.connect(self._check)
        self._signals = CallSignals(self)
        self._signals.done.connect(self._on_done)
        self._signals.failed.connect(self._on_failed)
        self._progress = _Progress(self)
        self._progress.changed.connect(self._on_progress)
        self._pool = shared_pool()
        self._pool.start(BackgroundCall("open", lambda: open_source(self.path), self._signals))

    # -- reading ------------------------------------------------------------------------------
    def _on_done(self, tag: str, result) -> None:
        if tag == "open":
            self.source = result
            s = result
            self.info.setText(f"{s.path.name}: {s.n_frames} frames of {s.frame_shape[0]}×"
                              f"{s.frame_shape[1]} px, {s.dtype} ({s.kind}). Values the file gives "
                              "are filled in; enter the others.")
            for key, _, factor in FIELDS:
                if s.metadata.get(key) not in (None, ""):
                    self.fields[key].setText(f"{float(s.metadata[key]) / factor:g}")
            self._check()
        elif tag == "import":
            self._busy = False
            self.imported.emit(result)
            self.accept()

    def _on_failed(self, tag: str, message: str) -> None:
        self._busy = False
        self.progress.setVisible(False)
        self.error.setText(("Cannot import: " if tag == "open" else "Import failed: ") + message)
        if tag == "open":
            self.info.setText(f"{self.path.name} cannot be imported.")
        self._check(keep_error=True)

    # -- checking -----------------------------------------------------------------------------
    def overrides(self) -> tuple[dict, list[str]]:
        """The metadata typed in (keys and values as the series stores them), and the problems."""
        values, problems = {}, []
        for key, label, factor in FIELDS:
            text = self.fields[key].text().strip()
            if not text:
                if key in REQUIRED:
                    problems.append(f"{label} is needed")
                continue
            try:
                value = check_setting(key, float(text) * factor)
            except ValueError as exc:
                message = str(exc) if isinstance(exc, SettingError) else f"{text!r} is not a number"
                problems.append(f"{label}: {message}")
                continue
            values[key] = value
        if "voxelsize.x" in values:
            values["voxelsize.y"] = values["voxelsize.x"]
        try:
            check_name(self.name.text().strip())
        except ValueError as exc:
            problems.append(f"Series name: {exc}")
        return values, problems

    def _check(self, *_, keep_error: bool = False) -> None:
        _, problems = self.overrides()
        if not keep_error:
            self.error.setText("; ".join(problems) if self.source is not None else "")
        self.import_button.setEnabled(self.source is not None and not problems and not self._busy)

    # -- importing ----------------------------------------------------------------------------
    def start_import(self) -> None:
        values, problems = self.overrides()
        if self.source is None or problems or self._busy:
            return
        source, name = self.source, self.name.text().strip()
        self._busy = True
        self._cancel.clear()
        self.error.setText("")
        self.progress.setRange(0, source.n_frames)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.import_button.setEnabled(False)

        def run() -> str:
            with self._make_client() as client:
                return import_series(source, client, name, values,
                                     progress=self._progress.changed.emit,
                                     cancelled=self._cancel.is_set)
        self._pool.start(BackgroundCall("import", run, self._signals))

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setValue(done)
        self.progress.setFormat(f"%v / {total} frames")

    def reject(self) -> None:
        """Cancel: while uploading, the series is ended where it is (as a stopped acquisition)
        and the dialog closes when that is done."""
        if self._busy:
            self._cancel.set()
        else:
            super().reject()


def choose_import_path(parent: QWidget) -> str:
    """Ask for a TIFF stack or ``.h5`` file (a ``.pcs`` folder can be dropped on the window); "" if none."""
    path, _ = QFileDialog.getOpenFileName(parent, "Import data", "", FILE_FILTER)
    return path


class DropImporter(QObject):
    """Event filter: files or folders dropped on ``window`` are passed to ``on_drop(path)``."""

    def __init__(self, window: QWidget, on_drop: Callable[[str], None]):
        super().__init__(window)
        self._on_drop = on_drop
        window.setAcceptDrops(True)
        window.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.DragEnter, QEvent.DragMove) and event.mimeData().hasUrls():
            event.acceptProposedAction()
            return True
        if event.type() == QEvent.Drop and event.mimeData().hasUrls():
            for url in event.mimeData().urls():
                if url.isLocalFile():
                    self._on_drop(url.toLocalFile())
            event.acceptProposedAction()
            return True
        return False
