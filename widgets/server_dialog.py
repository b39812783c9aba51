"""Asks for a cluster's rule server and data server URLs, checking them as they are typed."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

from PyQt5.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout

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


class ServerDialog(QDialog):
    """Rule server URL and data server URL(s); a bad URL is flagged under its field and
    "Connect" stays off until both are valid."""

    def __init__(self, ruleserver: str = "", dataservers: tuple[str, ...] = (), parent=None):
        super().__init__(parent)
        self.setWindowTitle("Connect to cluster")
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
        layout.addLayout(form)
        layout.addWidget(self.buttons)
        self.rule_edit.textChanged.connect(self._check)
        self.data_edit.textChanged.connect(self._check)
        self._check()

    def values(self) -> tuple[str, tuple[str, ...]]:
        return self.rule_edit.text().strip(), tuple(split_urls(self.data_edit.text()))

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
        problems = self.problems()
        for label, problem, edit in zip((self.rule_problem, self.data_problem), problems,
                                        (self.rule_edit, self.data_edit)):
            # An empty field is only a hint, not an error, until something is typed.
            shown = problem if edit.text().strip() else ""
            label.setText(f"⚠ {shown}" if shown else "")
            label.setVisible(bool(shown))
        self.ok_button.setEnabled(not any(problems))
