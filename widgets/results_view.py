"""Results of a chain: its outputs with their URIs, and a preview of the one picked.

Images (``.tif``, ``.npy``) preview in a pyqtgraph ``ImageView``, tables (``.h5r`` tables, ``.csv``)
in a table view over a structured numpy array, text (failed tasks' logs
``LOGS/rules/<ruleID>.log``) in a read-only text view. Every read and decode runs on the view's
loader thread through a data client it builds there; the GUI thread only shows what comes back.
"""
from __future__ import annotations

import io
import logging
import posixpath
import queue
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyqtgraph as pg
import tifffile
from PyQt5.QtCore import (
    QAbstractTableModel,
    QCoreApplication,
    QModelIndex,
    QObject,
    Qt,
    QThread,
    pyqtSignal,
    pyqtSlot,
)
from PyQt5.QtGui import QFontDatabase, QGuiApplication
from PyQt5.QtWidgets import (
    QAction,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from rules.errors import ClusterError
from rules.uris import parse_cluster_uri

logger = logging.getLogger(__name__)

#: Rows of a table read for a preview.
PREVIEW_ROWS = 1000
#: Bytes of a text file (the end of it) shown in a preview.
MAX_TEXT_BYTES = 2_000_000
_IMAGE_EXTS = (".tif", ".tiff", ".npy")
_TABLE_EXTS = (".h5r", ".hdf", ".csv")
_TEXT_EXTS = (".log", ".txt", ".yaml", ".yml", ".json", ".md")


@dataclass(frozen=True)
class ResultOutput:
    """One output of a chain: a label and its ``PYME-CLUSTER://`` URI (``?table=`` for .h5r)."""

    name: str
    uri: str
    kind: str = ""  # "image", "table", "text" or "" (from the file extension)

    @property
    def preview_kind(self) -> str:
        return self.kind or kind_of(self.uri)


def kind_of(uri: str) -> str:
    """"image", "table", "text" or "file" (no preview) from a URI's extension."""
    path = parse_cluster_uri(uri).path.lower()
    if path.endswith(_IMAGE_EXTS):
        return "image"
    if path.endswith(_TABLE_EXTS):
        return "table"
    if path.endswith(_TEXT_EXTS):
        return "text"
    return "file"


def error_log_path(rule_id: str) -> str:
    """Where a rule's failed tasks write their log: ``LOGS/rules/<ruleID>.log``."""
    return f"LOGS/rules/{rule_id}.log"


class StructuredArrayModel(QAbstractTableModel):
    """A read-only table over a numpy structured array; nested fields become ``outer_inner``."""

    def __init__(self, array: np.ndarray | None = None, parent=None):
        super().__init__(parent)
        self._array = np.empty(0, dtype=[("empty", "f8")])
        self._fields: list[tuple[str, tuple[str, ...]]] = []
        self.set_array(array if array is not None else self._array)

    def set_array(self, array: np.ndarray) -> None:
        if array.dtype.names is None:
            raise ValueError("a table preview needs a structured array")
        self.beginResetModel()
        self._array = array
        self._fields = list(_flatten_fields(array.dtype))
        self.endResetModel()

    @property
    def array(self) -> np.ndarray:
        return self._array

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._array)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._fields)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if role != Qt.DisplayRole:
            return None
        if orientation == Qt.Horizontal:
            return self._fields[section][0] if 0 <= section < len(self._fields) else None
        return str(section)

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or role not in (Qt.DisplayRole, Qt.TextAlignmentRole):
            return None
        value = self._array[index.row()]
        for name in self._fields[index.column()][1]:
            value = value[name]
        if role == Qt.TextAlignmentRole:
            return int(Qt.AlignRight | Qt.AlignVCenter) if np.ndim(value) == 0 and isinstance(
                value, (np.number, int, float)) else None
        if isinstance(value, (bytes, np.bytes_)):
            return value.decode("utf-8", "replace")
        if isinstance(value, (float, np.floating)):
            return f"{value:.6g}"
        return str(value)


def _flatten_fields(dtype: np.dtype, prefix: tuple[str, ...] = ()):
    for name in dtype.names:
        sub = dtype.fields[name][0]
        path = prefix + (name,)
        if sub.names is not None:
            yield from _flatten_fields(sub, path)
        else:
            yield "_".join(path), path


class _Loader(QObject):
    """Reads and decodes previews on its own thread, newest request first, stale ones skipped."""

    loaded = pyqtSignal(int, str, str, object)  # request id, uri, kind, payload
    failed = pyqtSignal(int, str, str)  # request id, uri, message
    finished = pyqtSignal()

    def __init__(self, make_client: Callable[[], object]):
        super().__init__()
        self._make_client = make_client
        self._queue: queue.Queue = queue.Queue()

    def request(self, request_id: int, uri: str, kind: str) -> None:
        """Queue a read (any thread)."""
        self._queue.put((request_id, uri, kind))

    def stop(self) -> None:
        self._queue.put(None)

    @pyqtSlot()
    def run(self) -> None:
        client = None
        try:
            while True:
                item = self._queue.get()
                # Only the newest pending request matters: the user has moved on from the others.
                while item is not None and not self._queue.empty():
                    item = self._queue.get()
                if item is None:
                    return
                request_id, uri, kind = item
                try:
                    if client is None:
                        client = self._make_client()
                    payload = _read(client, uri, kind)
                except (ClusterError, OSError, ValueError, KeyError, UnicodeError) as exc:
                    logger.info("preview of %s failed: %s", uri, exc)
                    self.failed.emit(request_id, uri, _message(exc))
                    continue
                self.loaded.emit(request_id, uri, kind, payload)
        finally:
            if client is not None:
                client.close()
            self.finished.emit()


def _message(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"not found: {exc}"
    return str(exc) or type(exc).__name__


def _read(client, uri: str, kind: str):
    """Fetch and decode one preview (loader thread)."""
    parsed = parse_cluster_uri(uri)
    path = parsed.path
    ext = posixpath.splitext(path)[1].lower()
    if kind == "table" and ext in (".h5r", ".hdf"):
        table = parsed.query.get("table", "FitResults")
        return client.read_table(path, table, 0, PREVIEW_ROWS)
    data = client.get_file(path)
    if kind == "image":
        image = np.load(io.BytesIO(data), allow_pickle=False) if ext == ".npy" \
            else tifffile.imread(io.BytesIO(data))
        return np.asarray(image)
    if kind == "table":
        table = np.genfromtxt(io.BytesIO(data), delimiter=",", names=True, dtype=None,
                              encoding="utf-8", max_rows=PREVIEW_ROWS)
        return np.atleast_1d(table)
    if len(data) > MAX_TEXT_BYTES:  # a runaway log: its end says what went wrong
        data = b"[...]\n" + data[-MAX_TEXT_BYTES:]
    return data.decode("utf-8", "replace")


class ResultsView(QWidget):
    """A list of a chain's outputs and a preview pane.

    Parameters
    ----------
    make_client
        builds a data client (``rules.dataserver_client.DataClient`` or anything with
        ``get_file(path)`` and ``read_table(path, table, start, stop)``); called on the loader
        thread, which owns and closes it.

    Signals
    -------
    previewShown(str, str)
        a preview of the URI is on screen, and its kind ("image", "table", "text").
    previewFailed(str, str)
        the URI could not be read or decoded, and why.

    Call :meth:`stop` (or close the widget) to end the loader thread.
    """

    previewShown = pyqtSignal(str, str)
    previewFailed = pyqtSignal(str, str)

    def __init__(self, make_client: Callable[[], object], parent=None):
        super().__init__(parent)
        self._request_id = 0
        self._outputs: list[ResultOutput] = []

        self.outputs = QTreeWidget(self)
        self.outputs.setHeaderLabels(["Output", "URI"])
        self.outputs.setRootIsDecorated(False)
        self.outputs.setColumnWidth(0, 160)
        self.outputs.currentItemChanged.connect(self._on_output_current_changed)
        copy_action = QAction("Copy URI", self.outputs)
        copy_action.triggered.connect(self._on_copy_uri_triggered)
        self.outputs.addAction(copy_action)
        self.outputs.setContextMenuPolicy(Qt.ActionsContextMenu)

        self.caption = QLabel("Pick an output to preview it.", self)
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.message = QLabel("", self)
        self.message.setAlignment(Qt.AlignCenter)
        self.message.setWordWrap(True)
        self.image_view = pg.ImageView(self)
        self.table_model = StructuredArrayModel(parent=self)
        self.table_view = QTableView(self)
        self.table_view.setModel(self.table_model)
        self.text_view = QPlainTextEdit(self)
        self.text_view.setReadOnly(True)
        # Logs wrap: the error line of a failed task is the one to read, and it is long.
        self.text_view.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.text_view.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.pages = QStackedWidget(self)
        for page in (self.message, self.image_view, self.table_view, self.text_view):
            self.pages.addWidget(page)

        preview = QWidget(self)
        preview_layout = QVBoxLayout(preview)
        preview_layout.setContentsMargins(0, 0, 0, 0)
        preview_layout.addWidget(self.caption)
        preview_layout.addWidget(self.pages, 1)
        splitter = QSplitter(Qt.Horizontal, self)
        splitter.addWidget(self.outputs)
        splitter.addWidget(preview)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([320, 680])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        self._loader = _Loader(make_client)
        self._loader.loaded.connect(self._on_loader_loaded)
        self._loader.failed.connect(self._on_loader_failed)
        self._thread = QThread()
        self._thread.setObjectName("ResultsLoader")
        self._loader.moveToThread(self._thread)
        self._thread.started.connect(self._loader.run)
        self._loader.finished.connect(self._thread.quit)
        self._thread.start()
        # A safety net for windows that forget stop(): never leave a running QThread at exit.
        QCoreApplication.instance().aboutToQuit.connect(self.stop)

    # -- public API --------------------------------------------------------------------------
    def set_outputs(self, outputs: list[ResultOutput]) -> None:
        """List a chain's outputs (replacing the previous list and clearing a preview of another
        chain's output, so what is shown always belongs to what is listed)."""
        if list(outputs) == self._outputs:
            return
        self._outputs = list(outputs)
        self._request_id += 1   # a read still in flight belongs to the old list
        self.caption.setText("Pick an output to preview it." if outputs
                             else "This chain writes no files.")
        self._show_message("")
        self.outputs.clear()
        for output in self._outputs:
            item = QTreeWidgetItem([output.name, output.uri])
            item.setToolTip(1, output.uri)
            item.setData(0, Qt.UserRole, output)
            self.outputs.addTopLevelItem(item)
        self.outputs.resizeColumnToContents(0)

    def preview(self, uri: str, kind: str = "") -> None:
        """Read ``uri`` in the background and show it ("image", "table", "text"; "" = guess)."""
        kind = kind or kind_of(uri)
        self.caption.setText(uri)
        if kind == "file":
            self._show_message(f"No preview for {posixpath.basename(parse_cluster_uri(uri).path)}.")
            return
        self._request_id += 1
        self._show_message("Loading…")
        self._loader.request(self._request_id, uri, kind)

    def show_error_log(self, rule_id: str) -> None:
        """Show the error log of a rule's failed tasks (``LOGS/rules/<ruleID>.log``)."""
        self.preview(error_log_path(rule_id), "text")

    def stop(self, timeout_ms: int = 10000) -> bool:
        """End the loader thread (waits for a read in progress); True when it ended."""
        if not self._thread.isRunning():
            return True
        self._loader.stop()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    def closeEvent(self, event) -> None:
        self.stop()
        super().closeEvent(event)

    # -- slots -------------------------------------------------------------------------------
    def _on_output_current_changed(self, current, _previous) -> None:
        if current is None:
            return
        output: ResultOutput = current.data(0, Qt.UserRole)
        self.preview(output.uri, output.preview_kind)

    def _on_copy_uri_triggered(self) -> None:
        item = self.outputs.currentItem()
        if item is not None:
            QGuiApplication.clipboard().setText(item.text(1))

    def _on_loader_loaded(self, request_id: int, uri: str, kind: str, payload) -> None:
        if request_id != self._request_id:
            return
        try:
            self._show(kind, payload)
        except ValueError as exc:  # e.g. a .csv with no header row, an image of the wrong rank
            self._on_loader_failed(request_id, uri, str(exc))
            return
        self.previewShown.emit(uri, kind)

    def _on_loader_failed(self, request_id: int, uri: str, message: str) -> None:
        if request_id != self._request_id:
            return
        self._show_message(f"Could not preview {uri}:\n{message}")
        self.previewFailed.emit(uri, message)

    def _show(self, kind: str, payload) -> None:
        if kind == "image":
            image = np.squeeze(payload)
            if image.ndim not in (2, 3):
                raise ValueError(f"cannot show an image of shape {payload.shape}")
            # Our images are (row, column); pyqtgraph's are (x, y).
            self.image_view.setImage(np.swapaxes(image, -1, -2), autoRange=True, autoLevels=True)
            self.caption.setText(f"{self.caption.text()}  —  {image.shape} {image.dtype}")
            self.pages.setCurrentWidget(self.image_view)
        elif kind == "table":
            self.table_model.set_array(payload)
            self.caption.setText(f"{self.caption.text()}  —  first {len(payload)} rows"
                                 if len(payload) >= PREVIEW_ROWS
                                 else f"{self.caption.text()}  —  {len(payload)} rows")
            self.pages.setCurrentWidget(self.table_view)
        else:
            self.text_view.setPlainText(payload)
            self.pages.setCurrentWidget(self.text_view)

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        self.pages.setCurrentWidget(self.message)
