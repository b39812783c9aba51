"""The window's status bar: a message too long for the room left of the permanent widgets (the
cluster label) is painted ending in "…" there instead of being cut off against them; the whole
message stays :meth:`QStatusBar.currentMessage` and is the tooltip."""
from __future__ import annotations

from PyQt5.QtCore import QRect, Qt
from PyQt5.QtGui import QPainter
from PyQt5.QtWidgets import QStatusBar, QStyle, QStyleOption, QWidget

#: Room kept between a message and the first permanent widget (px).
GAP_PX = 12


class ElidingStatusBar(QStatusBar):
    """A :class:`QStatusBar` whose temporary messages are painted elided to the room they have."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._permanent: list[QWidget] = []
        self.messageChanged.connect(self._on_message_changed)

    def addPermanentWidget(self, widget: QWidget, stretch: int = 0) -> None:  # noqa: N802 - Qt's
        self._permanent.append(widget)
        super().addPermanentWidget(widget, stretch)

    def message_room(self) -> int:
        """Pixels a message may take: up to the first visible permanent widget, less a gap."""
        right = self.width() - 12
        for widget in self._permanent:
            if widget.isVisible():
                right = min(right, widget.x() - GAP_PX)
        return max(0, right - 6)

    def shown_message(self) -> str:
        """The current message as painted (elided to :meth:`message_room`)."""
        text = self.currentMessage()
        return self.fontMetrics().elidedText(text, Qt.ElideRight, self.message_room()) if text else ""

    def _on_message_changed(self, text: str) -> None:
        self.setToolTip(text if text and self.shown_message() != text else "")

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """QStatusBar's painting (panel, permanent widgets' frames, message), the message elided."""
        text = self.currentMessage()
        if not text:
            super().paintEvent(event)
            return
        painter = QPainter(self)
        option = QStyleOption()
        option.initFrom(self)
        self.style().drawPrimitive(QStyle.PE_PanelStatusBar, option, painter, self)
        for widget in self._permanent:
            if widget.isVisible():
                frame = QStyleOption()
                frame.rect = widget.geometry().adjusted(-2, -1, 2, 1)
                frame.palette = self.palette()
                frame.state = QStyle.State_None
                self.style().drawPrimitive(QStyle.PE_FrameStatusBarItem, frame, painter, widget)
        painter.setPen(self.palette().windowText().color())
        painter.drawText(QRect(6, 0, self.message_room(), self.height()),
                         int(Qt.AlignLeading | Qt.AlignVCenter | Qt.TextSingleLine),
                         self.shown_message())
