"""Asks which cluster to use: one of those registered on this machine, or typed URLs (checked as
they are typed)."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
)

logger = logging.getLogger(__name__)


def check_server_url(text: str) -> str:
    """Why ``text`` is not a server URL like ``http://host:port`` ("" when it is one)."""
    text = text.strip()
    if not text:
        return "type a URL such as http://192.168.0.10:15346"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        return f"{text!r} must start with http:// or https://"
    try:
        port = parts.port
    except ValueError:
        return f"the port in {text!r} is not a number from 0 to 65535"
    if not parts.hostname:
        return f"{text!r} has no host name"
    if port is None:
        return f"{text!r} needs a port, e.g. {parts.scheme}://{parts.hostname}:15346"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{text!r} should be just {parts.scheme}://host:port"
    return ""


def split_urls(text: str) -> list[str]:
    return [u.strip() for u in text.replace(";", ",").split(",") if u.strip()]


#: What the list says when no cluster is registered on this machine.
NONE_HERE = "No cluster is registered on this machine: enter its URLs below."
ENTER_URLS = "Enter URLs…"
#: What the list says while the clusters registered here are being looked up.
LOOKING = "Looking for clusters on this machine…"


class ServerDialog(QDialog):
    """The clusters registered on this machine, then the rule server URL and data server URL(s).

    Picking a listed cluster fills the URLs; typing URLs that match none picks "Enter URLs…". A bad
    URL is flagged under its field and "Connect" stays off until both are valid.

    Parameters
    ----------
    clusters
        ``[(serverfilter, rule server URL, data server URLs)]`` as
        :func:`rules.nameservice.local_clusters` lists them; ``None`` while they are looked up
        (off the GUI thread), given later to :meth:`set_clusters`.
    own_ruleserver
        the rule server of the window's embedded cluster, marked as such in the list.
    """

    def __init__(self, ruleserver: str = "", dataservers: tuple[str, ...] = (), parent=None,
                 clusters: list[tuple[str, str, list[str]]] | None = (), own_ruleserver: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Connect to cluster")
        self.clusters: list[tuple[str, str, tuple[str, ...]]] = []
        self.clusters_listed = False  # until set_clusters: the list says it is looking
        self._own_ruleserver = own_ruleserver.rstrip("/")
        self.cluster_list = QListWidget()
        self.cluster_list.setSpacing(2)
        self.cluster_list.setMaximumHeight(self.fontMetrics().lineSpacing() * 3 * 4)
        self.cluster_list.currentItemChanged.connect(self._on_cluster_picked)
        self.cluster_list.itemDoubleClicked.connect(
            lambda item: self.accept() if item.data(Qt.UserRole) else None)
        self.rule_edit = QLineEdit(ruleserver)
        self.rule_edit.setPlaceholderText("http://host:port")
        self.rule_edit.setMinimumWidth(self.fontMetrics().horizontalAdvance("x" * 40))
        self.data_edit = QLineEdit(", ".join(dataservers))
        self.data_edit.setPlaceholderText("http://host:port, comma-separated")
        self.rule_problem, self.data_problem = QLabel(), QLabel()
        for label in (self.rule_problem, self.data_problem):
            label.setStyleSheet("color: #b00020;")
            label.setWordWrap(True)
            label.hide()
        form = QFormLayout()
        form.addRow("Rule server", self.rule_edit)
        form.addRow("", self.rule_problem)
        form.addRow("Data server(s)", self.data_edit)
        form.addRow("", self.data_problem)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.Ok)
        self.ok_button.setText("Connect")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Clusters on this machine:"))
        layout.addWidget(self.cluster_list)
        layout.addLayout(form)
        layout.addWidget(self.buttons)
        self.rule_edit.textChanged.connect(self._check)
        self.data_edit.textChanged.connect(self._check)
        if clusters is None:
            looking = QListWidgetItem(LOOKING)
            looking.setFlags(Qt.NoItemFlags)
            self.cluster_list.addItem(looking)
            self._check()
        else:
            self.set_clusters(clusters)

    def set_clusters(self, clusters: list[tuple[str, str, list[str]]]) -> None:
        """List ``clusters`` (``None`` given to the constructor: they were still being looked
        up); the typed URLs stay, and pick their cluster if it is listed."""
        self.clusters = [(name, rule.rstrip("/"), tuple(u.rstrip("/") for u in data))
                         for name, rule, data in clusters]
        self.clusters_listed = True
        self.cluster_list.blockSignals(True)
        self.cluster_list.clear()
        for name, rule, data in self.clusters:
            own = bool(self._own_ruleserver) and rule == self._own_ruleserver
            mark = "  (this window's embedded cluster)" if own else ""
            item = QListWidgetItem(f"{name or '(no name)'}{mark}\n    rule server {rule}\n"
                                   f"    data server(s) {', '.join(data)}")
            item.setData(Qt.UserRole, (name, rule, data))
            self.cluster_list.addItem(item)
        manual = QListWidgetItem(ENTER_URLS if self.clusters else NONE_HERE)
        manual.setData(Qt.UserRole, None)
        self.cluster_list.addItem(manual)
        self.cluster_list.blockSignals(False)
        self._check()

    def values(self) -> tuple[str, tuple[str, ...]]:
        return self.rule_edit.text().strip(), tuple(split_urls(self.data_edit.text()))

    def serverfilter(self) -> str | None:
        """The name of the listed cluster the URLs are those of (None for typed URLs)."""
        row = self._listed_row()
        return None if row is None else self.clusters[row][0]

    def _listed_row(self) -> int | None:
        rule, data = self.values()
        typed = (rule.rstrip("/"), tuple(u.rstrip("/") for u in data))
        return next((i for i, (_n, r, d) in enumerate(self.clusters) if (r, d) == typed), None)

    def pick(self, row: int) -> None:
        """Choose the ``row``-th listed cluster (the last row is "Enter URLs…")."""
        self.cluster_list.setCurrentRow(row)

    def _on_cluster_picked(self, item, _previous=None) -> None:
        chosen = item.data(Qt.UserRole) if item is not None else None
        if chosen is not None:
            _name, rule, data = chosen
            self.rule_edit.setText(rule)
            self.data_edit.setText(", ".join(data))
        else:
            self.rule_edit.setFocus()

    def _sync_list(self) -> None:
        """Select the listed cluster the typed URLs are those of, else "Enter URLs…"."""
        if not self.clusters_listed:
            return
        row = self._listed_row()
        row = len(self.clusters) if row is None else row
        if self.cluster_list.currentRow() != row:
            self.cluster_list.blockSignals(True)
            self.cluster_list.setCurrentRow(row)
            self.cluster_list.blockSignals(False)

    def problems(self) -> tuple[str, str]:
        """(rule server problem, data servers problem); empty strings when fine."""
        rule = check_server_url(self.rule_edit.text())
        urls = split_urls(self.data_edit.text())
        data = next((p for p in map(check_server_url, urls) if p), "") if urls \
            else check_server_url("")
        return rule, data

    def accept(self) -> None:
        if not any(self.problems()):
            super().accept()

    def _check(self, *_args) -> None:
        self._sync_list()
        problems = self.problems()
        for label, problem, edit in zip((self.rule_problem, self.data_problem), problems,
                                        (self.rule_edit, self.data_edit)):
            # An empty field is only a hint, not an error, until something is typed.
            shown = problem if edit.text().strip() else ""
            label.setText(f"⚠ {shown}" if shown else "")
            label.setVisible(bool(shown))
        self.ok_button.setEnabled(not any(problems))
