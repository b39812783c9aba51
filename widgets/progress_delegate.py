"""A delegate that paints a progress bar from a fraction the model gives under ``PROGRESS_ROLE``."""
from __future__ import annotations

import logging

from PyQt5.QtCore import QModelIndex, Qt
from PyQt5.QtGui import QPalette
from PyQt5.QtWidgets import QApplication, QStyle, QStyledItemDelegate, QStyleOptionProgressBar

logger = logging.getLogger(__name__)

#: Item data role holding a float in [0, 1] (or None for "no progress to show").
PROGRESS_ROLE = Qt.UserRole + 10
#: Item data role holding the bar's ``QColor`` (None: the style's highlight colour).
PROGRESS_COLOUR_ROLE = Qt.UserRole + 11


class ProgressBarDelegate(QStyledItemDelegate):
    """Paints ``index.data(PROGRESS_ROLE)`` as a native progress bar with the display text on it.

    Painting uses the application style's ``CE_ProgressBar`` control, so the bar looks like any
    other progress bar on the platform; no widget is created per cell.
    """

    def paint(self, painter, option, index: QModelIndex) -> None:
        fraction = index.data(PROGRESS_ROLE)
        if fraction is None:
            super().paint(painter, option, index)
            return
        if option.state & QStyle.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 2, -2, -2)
        bar.minimum, bar.maximum = 0, 1000
        bar.progress = int(round(max(0.0, min(1.0, float(fraction))) * 1000))
        bar.text = index.data(Qt.DisplayRole) or ""
        bar.textVisible = True
        bar.textAlignment = Qt.AlignCenter
        bar.state = option.state | QStyle.State_Horizontal
        bar.palette = QPalette(option.palette)
        colour = index.data(PROGRESS_COLOUR_ROLE)
        if colour is not None:
            bar.palette.setColor(QPalette.Highlight, colour)
        bar.fontMetrics = option.fontMetrics
        style = option.widget.style() if option.widget is not None else QApplication.style()
        style.drawControl(QStyle.CE_ProgressBar, bar, painter, option.widget)
