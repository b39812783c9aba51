"""*File ▸ Open from Cluster…*: a browser of the cluster's folders and files, listed a folder at
a time off the GUI thread; the file picked (an ``.h5r``, ``.tif``, ``.csv``, ...) opens in the
Results tab."""
from __future__ import annotations

import posixpath

from PyQt5.QtCore import QModelIndex, Qt, pyqtSignal
from PyQt5.QtGui import QStandardItem
from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QVBoxLayout,
)

from widgets.background import BackgroundCall, CallSignals, TaskPool
from widgets.series_browser import OUTPUT_EXTS, name_tree, size_text

#: Files the Results tab can show (others are listed greyed).
OPENABLE_EXTS = OUTPUT_EXTS + (".log", ".txt", ".yaml", ".yml", ".json")
_LOADING = "Loading…"


class ClusterFileDialog(QDialog):
    """Pick a file on the cluster. ``make_lister()`` → a context-managed client with
    ``listdirectory(path, fresh=...)``.

    Signals: ``fileChosen(str)`` the cluster path of the file opened (double-click or *Open*).
    """

    fileChosen = pyqtSignal(str)
    PathRole = Qt.UserRole + 1
    DirRole = Qt.UserRole + 2

    def __init__(self, make_lister, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Open from Cluster")
        self.resize(640, 480)
        self._make_lister = make_lister
        self._pool = TaskPool(1, name='cluster_files')
        self._signals = CallSignals(self)
        self._signals.done.connect(self._on_listed)
        self._signals.failed.connect(self._on_failed)
        self.model, self.tree = name_tree(["Name", "Size"], self)
        self.tree.expanded.connect(self._on_expanded)
        self.tree.doubleClicked.connect(self._on_double_clicked)
        self.tree.selectionModel().currentRowChanged.connect(self._update_open)
        self.status = QLabel("")
        self.status.setStyleSheet("color: gray;")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        self.open_button = self.buttons.button(QDialogButtonBox.Open)
        self.open_button.setEnabled(False)
        self.buttons.accepted.connect(self._open_current)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Localisations (.h5r), images (.tif) and tables (.csv) open in "
                                "the Results tab."))
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self._list("", self.model.invisibleRootItem())

    def _list(self, path: str, item: QStandardItem) -> None:
        make_lister = self._make_lister

        def listing():
            with make_lister() as client:
                return path, client.listdirectory(path, fresh=True)
        self._pending = getattr(self, "_pending", {})
        self._pending[path] = item
        self.status.setText(f"Listing /{path}…")
        self._pool.start(BackgroundCall(path, listing, self._signals))

    def _on_listed(self, _tag: str, result) -> None:
        path, listing = result
        item = self._pending.pop(path, None)
        if item is None:
            return
        item.removeRows(0, item.rowCount())
        names = sorted(listing, key=lambda n: (not n.endswith("/"), n.lower()))
        for name in names:
            info = listing[name]
            child_path = posixpath.join(path, name.rstrip("/"))
            folder = name.endswith("/") and not (info.is_series or name.endswith(".pcs/"))
            label = QStandardItem(name.rstrip("/"))
            label.setData(child_path, self.PathRole)
            label.setData(folder, self.DirRole)
            size = QStandardItem("" if folder else
                                 ("series" if name.endswith("/") else size_text(info.size)))
            if folder:
                label.appendRow([QStandardItem(_LOADING), QStandardItem("")])
            elif name.endswith("/") or not name.lower().endswith(OPENABLE_EXTS):
                label.setEnabled(False)
                size.setEnabled(False)
            item.appendRow([label, size])
        self.status.setText(f"/{path}: {len(names)} entries" if path else f"{len(names)} entries")

    def _on_failed(self, tag: str, message: str) -> None:
        self._pending.pop(tag, None)
        self.status.setText(f"Cannot list /{tag}: {message}")

    def _on_expanded(self, index: QModelIndex) -> None:
        item = self.model.itemFromIndex(index)
        if item.rowCount() == 1 and item.child(0).text() == _LOADING:
            self._list(item.data(self.PathRole), item)

    def _chosen(self, index: QModelIndex) -> str:
        item = self.model.itemFromIndex(index.siblingAtColumn(0)) if index.isValid() else None
        if item is None or item.data(self.DirRole) or not item.isEnabled():
            return ""
        return item.data(self.PathRole) or ""

    def _update_open(self, current, _previous=None) -> None:
        self.open_button.setEnabled(bool(self._chosen(current)))

    def _on_double_clicked(self, index: QModelIndex) -> None:
        if self._chosen(index):
            self._open_current()

    def _open_current(self) -> None:
        path = self._chosen(self.tree.currentIndex())
        if path:
            self.fileChosen.emit(path)
            self.accept()

    def select(self, path: str) -> bool:
        """Make the listed entry ``path`` current; False when it is not listed (yet) or cannot be
        picked (a series, a file the Results tab does not show)."""
        pending = [self.model.invisibleRootItem()]
        while pending:
            parent = pending.pop()
            for row in range(parent.rowCount()):
                child = parent.child(row, 0)
                if child.data(self.PathRole) == path:
                    self.tree.setCurrentIndex(child.index())
                    return self.tree.currentIndex() == child.index()
                pending.append(child)
        return False

    def done(self, result: int) -> None:
        self._pool.waitForDone(5000)
        super().done(result)
