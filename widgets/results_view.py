"""Results of a chain: its outputs with their URIs, and a view of the one picked.

Images (``.tif``, ``.npy``) show full resolution in the live view's viewer
(:class:`widgets.image_canvas.ImageViewer`: colour map, percentile contrast, zoom, scale bar in
nm); tables (``.h5r`` tables, ``.csv``) with readable column names and units, every row (read in
pages, the first page shown at once), sortable, with a plot of any column
(:mod:`widgets.results_table`); text (failed tasks' logs ``LOGS/rules/<ruleID>.log``) in a
read-only text view, scrolled to its end. Every read and decode runs on the view's loader thread
through a data client it builds there; the GUI thread only shows what comes back.
"""
from __future__ import annotations

import io
import logging
import posixpath
import queue
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tifffile
from PyQt5.QtCore import (
    QCoreApplication,
    QObject,
    Qt,
    QThread,
    pyqtSignal,
    pyqtSlot,
)
from PyQt5.QtGui import QFontDatabase, QGuiApplication, QTextCursor
from PyQt5.QtWidgets import (
    QAction,
    QHeaderView,
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
from rules.result_tables import ResultTable
from rules.tiff_metadata import tiff_pixel_size_nm
from rules.uris import parse_cluster_uri
from widgets.image_canvas import ImageViewer
from widgets.results_table import ColumnPlot, ColumnsTableModel

logger = logging.getLogger(__name__)

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


class _Loader(QObject):
    """Reads and decodes previews on its own thread, newest request first, stale ones skipped."""

    loaded = pyqtSignal(int, str, str, object)  # request id, uri, kind, payload
    progressed = pyqtSignal(int)  # request id: more rows of the table it loaded were read
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
                    self.loaded.emit(request_id, uri, kind, payload)
                    if isinstance(payload, ResultTable):
                        # the rest of the table, until it is read or the user picks another file
                        while self._queue.empty() and payload.read_more():
                            self.progressed.emit(request_id)
                        self.progressed.emit(request_id)
                except (ClusterError, OSError, ValueError, KeyError, UnicodeError) as exc:
                    logger.info("preview of %s failed: %s", uri, exc)
                    self.failed.emit(request_id, uri, _message(exc))
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
    if kind == "table":
        table = ResultTable(client, uri)
        table.open()
        return table
    data = client.get_file(path)
    if kind == "image":
        return _read_image(data, ext)
    if len(data) > MAX_TEXT_BYTES:  # a runaway log: its end says what went wrong
        data = b"[...]\n" + data[-MAX_TEXT_BYTES:]
    return data.decode("utf-8", "replace")


@dataclass(frozen=True)
class ImageFile:
    """A 2-D image read from a file: pixels, pixel size (nm, None when the file does not say),
    and a note on how a stack became one image."""

    pixels: np.ndarray
    pixel_nm: float | None
    note: str = ""


def _read_image(data: bytes, ext: str) -> ImageFile:
    if ext == ".npy":
        pixels, pixel_nm = np.load(io.BytesIO(data), allow_pickle=False), None
    else:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pixels = tif.asarray()
            pixel_nm = tiff_pixel_size_nm(tif)[0]
    image = np.squeeze(np.asarray(pixels))
    note = ""
    if image.ndim == 3:  # a stack: its brightest value per pixel
        note = f"maximum projection of {image.shape[0]} planes"
        image = image.max(axis=0)
    if image.ndim != 2 or image.dtype.kind not in "iufb":
        raise ValueError(f"cannot show an image of shape {np.shape(pixels)} and type "
                         f"{np.asarray(pixels).dtype}")
    return ImageFile(image, pixel_nm, note)


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
    tableRead(str)
        every row of the table at the URI has been read (sorting is on).
    showInFolderRequested(str)
        *Show in Folder* was picked for the output with this URI.

    Call :meth:`stop` (or close the widget) to end the loader thread.
    """

    previewShown = pyqtSignal(str, str)
    previewFailed = pyqtSignal(str, str)
    tableRead = pyqtSignal(str)
    showInFolderRequested = pyqtSignal(str)

    def __init__(self, make_client: Callable[[], object], parent=None):
        super().__init__(parent)
        self._request_id = 0
        self._outputs: list[ResultOutput] = []
        self._shown_uri = ""
        self._image_uri = ""  # an image read, waiting to be coloured

        self.outputs = QTreeWidget(self)
        self.outputs.setHeaderLabels(["Output", "URI"])
        self.outputs.setRootIsDecorated(False)
        self.outputs.setColumnWidth(0, 160)
        self.outputs.currentItemChanged.connect(self._on_output_current_changed)
        copy_action = QAction("Copy URI", self.outputs)
        copy_action.triggered.connect(self._on_copy_uri_triggered)
        self.outputs.addAction(copy_action)
        self.show_action = QAction("Show in Folder", self.outputs)
        self.show_action.triggered.connect(self._on_show_in_folder_triggered)
        self.outputs.addAction(self.show_action)
        self.outputs.setContextMenuPolicy(Qt.ActionsContextMenu)

        self.caption = QLabel("Pick an output to preview it.", self)
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.message = QLabel("", self)
        self.message.setAlignment(Qt.AlignCenter)
        self.message.setWordWrap(True)
        self.image_view = ImageViewer(self)
        self.image_view.shown.connect(self._on_image_shown)
        self.table_model = ColumnsTableModel(parent=self)
        self.table_view = QTableView(self)
        self.table_view.setModel(self.table_model)
        self.table_view.setSortingEnabled(False)  # on once every row is read
        self.table_view.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.table_view.horizontalHeader().setSectionsMovable(True)
        # column widths from the first rows, not from calling data() for a thousand of them
        self.table_view.horizontalHeader().setResizeContentsPrecision(100)
        self.table_view.verticalHeader().setDefaultSectionSize(
            self.table_view.fontMetrics().height() + 6)
        self.table_view.setWordWrap(False)
        self.column_plot = ColumnPlot(self)
        self.table_page = QSplitter(Qt.Vertical, self)
        self.table_page.addWidget(self.table_view)
        self.table_page.addWidget(self.column_plot)
        self.table_page.setStretchFactor(0, 3)
        self.table_page.setStretchFactor(1, 2)
        self._table: ResultTable | None = None
        self.text_view = QPlainTextEdit(self)
        self.text_view.setReadOnly(True)
        # Logs wrap: the error line of a failed task is the one to read, and it is long.
        self.text_view.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.text_view.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.pages = QStackedWidget(self)
        for page in (self.message, self.image_view, self.table_page, self.text_view):
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
        self._loader.progressed.connect(self._on_loader_progressed)
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
        self._shown_uri = uri
        self._table = None
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

    def set_local_files(self, local: bool, reason: str) -> None:
        """Whether the outputs lie on this machine (*Show in Folder*), and why not."""
        self.show_action.setEnabled(local)
        self.show_action.setToolTip("" if local else reason)
        self.show_action.setText("Show in Folder" if local else "Show in Folder (embedded cluster only)")

    def _on_show_in_folder_triggered(self) -> None:
        item = self.outputs.currentItem()
        if item is not None:
            self.showInFolderRequested.emit(item.text(1))

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
        if kind != "image":  # an image is on screen once coloured (_on_image_shown)
            self.previewShown.emit(uri, kind)

    def _on_image_shown(self) -> None:
        if self.pages.currentWidget() is self.image_view and self._image_uri:
            uri, self._image_uri = self._image_uri, ""
            self.previewShown.emit(uri, "image")

    def _on_loader_failed(self, request_id: int, uri: str, message: str) -> None:
        if request_id != self._request_id:
            return
        self._show_message(f"Could not preview {uri}:\n{message}")
        self.previewFailed.emit(uri, message)

    def _show(self, kind: str, payload) -> None:
        if kind == "image":
            image: ImageFile = payload
            self._image_uri = self._shown_uri
            self.image_view.set_image(image.pixels, image.pixel_nm)
            details = f"{image.pixels.shape[1]} × {image.pixels.shape[0]} px, {image.pixels.dtype}"
            self._set_caption(details + (f", {image.note}" if image.note else ""))
            self.pages.setCurrentWidget(self.image_view)
        elif kind == "table":
            self._table = payload
            columns = payload.columns
            self.table_view.setSortingEnabled(False)
            self.table_view.horizontalHeader().setSortIndicator(-1, Qt.AscendingOrder)
            self.table_model.set_table(columns)
            self.table_view.resizeColumnsToContents()
            self.column_plot.set_table(columns)
            self._show_table_progress()
            self.pages.setCurrentWidget(self.table_page)
        else:
            self.text_view.setPlainText(payload)
            # a log's last lines say what went wrong
            self.text_view.moveCursor(QTextCursor.End)
            self.text_view.ensureCursorVisible()
            self.pages.setCurrentWidget(self.text_view)

    def _set_caption(self, details: str) -> None:
        self.caption.setText(f"{self._shown_uri}  —  {details}" if details else self._shown_uri)

    def _on_loader_progressed(self, request_id: int) -> None:
        if request_id != self._request_id or self._table is None:
            return
        self.table_model.rows_arrived()
        self._show_table_progress()

    def _show_table_progress(self) -> None:
        columns = self._table.columns if self._table is not None else None
        if columns is None:
            return
        notes = "; ".join(columns.notes)
        self._set_caption(columns.caption() + (f" — {notes}" if notes else ""))
        if columns.complete and not self.table_view.isSortingEnabled():
            self.table_view.setSortingEnabled(True)
            self.table_view.horizontalHeader().setToolTip("Click a column's name to sort by it")
            if columns.loaded > self.table_model.rowCount():
                self.table_model.rows_arrived()
            self.column_plot.redraw()
            self.tableRead.emit(self._shown_uri)
        elif not columns.complete:
            self.table_view.horizontalHeader().setToolTip(
                "Sorting is possible once every row is read")

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        self.pages.setCurrentWidget(self.message)
