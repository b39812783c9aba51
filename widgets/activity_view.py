"""The Activity tab: the window's :class:`rules.activity.ActivityLog`, newest at the bottom,
selectable and copyable."""
from __future__ import annotations

from PyQt5.QtCore import pyqtSignal
from PyQt5.QtGui import QFontDatabase, QGuiApplication, QTextCursor
from PyQt5.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from rules.activity import Activity, ActivityLog


class ActivityView(QWidget):
    """Shows an :class:`ActivityLog`; call :meth:`show_activity` (GUI thread) for each new entry.

    Signals: ``added(str)`` the line of each entry shown.
    """

    added = pyqtSignal(str)

    def __init__(self, log: ActivityLog, parent=None):
        super().__init__(parent)
        self.log = log
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.WidgetWidth)  # the time stays in view
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.text.setMaximumBlockCount(log.max_entries)
        self.text.setPlaceholderText("Launches, failures, reconnections, automatic launches and "
                                     "worker restarts appear here, with their times.")
        self.copy_button = QPushButton("Copy all")
        self.copy_button.setToolTip("Copy every line (select lines and Ctrl+C for a few)")
        self.copy_button.clicked.connect(self.copy_all)
        self.count_label = QLabel("")
        self.count_label.setStyleSheet("color: gray;")
        row = QHBoxLayout()
        row.addWidget(self.count_label, 1)
        row.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.text, 1)
        layout.addLayout(row)
        for activity in log.entries():
            self.show_activity(activity)

    def show_activity(self, activity: Activity) -> None:
        bar = self.text.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        line = activity.line()
        self.text.appendPlainText(line)
        if at_end:  # follow the newest, unless the user scrolled up to read
            self.text.moveCursor(QTextCursor.End)
            self.text.moveCursor(QTextCursor.StartOfBlock)
            self.text.ensureCursorVisible()
        self.count_label.setText(f"{len(self.log):,} entries")
        self.added.emit(line)

    def copy_all(self) -> None:
        QGuiApplication.clipboard().setText(self.log.text())
