"""The live view: a super-resolution render of the localisations so far, with density and quality
plots, updated about once a second while a localisation rule runs.

All reading and rendering happens on a pool thread (:class:`LiveSource.step`, one at a time): it
reads only the rows added to the ``.h5r`` since the last step (``rules.live``), adds them to an
incremental density canvas (``rules.render``), colours it, and hands a finished :class:`LiveFrame`
to the GUI thread, which only swaps pictures and curves.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import QRectF, Qt, QThreadPool, QTimer, pyqtSignal
from PyQt5.QtGui import QImage, QPainter
from PyQt5.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from rules.dataserver_client import DataClient
from rules.live import LiveLocalisations
from rules.locstats import HISTOGRAMS
from rules.render import DensityCanvas, colourise, contrast_levels, max_pool, pixel_size_for
from rules.ruleserver_client import RuleServerClient
from rules.watchers import RuleStatus
from widgets.background import BackgroundCall, CallSignals

logger = logging.getLogger(__name__)

UPDATE_INTERVAL_MS = 1000
#: Sides of the overview images painted when zoomed out (each a max-pooled copy of the render).
OVERVIEW_FACTORS = (2, 4)
COLOUR_MAPS = ("hot", "magma")
RENDER_LABELS = {"gaussian": "Gaussian", "histogram": "Histogram"}


def colour_table(name: str, n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 RGB look-up table of colour map ``name`` (``hot`` or ``magma``)."""
    if name == "hot":
        cmap = pg.ColorMap([0.0, 0.375, 0.75, 1.0],
                           [(0, 0, 0), (255, 0, 0), (255, 255, 0), (255, 255, 255)])
    elif name == "magma":
        cmap = pg.colormap.get("magma")
    else:
        raise ValueError(f"unknown colour map {name!r} (known: {', '.join(COLOUR_MAPS)})")
    return np.asarray(cmap.getLookupTable(0.0, 1.0, n, alpha=False), np.uint8)[:, :3]


@dataclass(frozen=True)
class Display:
    """How to show the density: render, colour map (its table) and contrast percentile."""

    render: str = "gaussian"
    colour_map: str = "hot"
    lut: np.ndarray = field(default_factory=lambda: colour_table("hot"), compare=False)
    percentile: float = 99.5


@dataclass
class LiveFrame:
    """One finished update for the GUI thread."""

    image: QImage | None
    overviews: dict[int, QImage]
    extent_nm: tuple[float, float]
    per_frame: np.ndarray
    histograms: dict[str, np.ndarray]
    summary: str
    progress: str
    localisations: int
    finished: bool
    seconds: float


class LiveSource:
    """What the pool thread owns: the incremental reader, statistics and density canvas of one
    results file, and how far the rule that writes it has got."""

    def __init__(self, data: DataClient, results: str, series: str | None = None,
                 rules: RuleServerClient | None = None, rule_id: str | None = None):
        self.live = LiveLocalisations(data, results, series)
        self.rules = rules
        self.rule_id = rule_id
        self.canvas: DensityCanvas | None = None
        self._analysed: int | None = None
        self._rule_done = rules is None or rule_id is None
        self.cancelled = False  # set when the view stops following: a queued step does nothing

    def _rule_progress(self) -> None:
        if self.rules is None or self.rule_id is None:
            return
        info = self.rules.queue_info().get(self.rule_id)
        if info is None:
            return  # not listed yet, or dropped after finishing: keep the last counts
        status = RuleStatus.from_info(self.rule_id, info)
        self._analysed = status.done
        self._rule_done = status.terminal

    def _canvas_for(self, columns: dict[str, np.ndarray]) -> DensityCanvas:
        if self.canvas is None:
            extent = float(np.nanmax([np.nanmax(columns["x"]), np.nanmax(columns["y"]), 1.0]))
            self.canvas = DensityCanvas(pixel_size_for(extent * 1.05))
        return self.canvas

    def step(self, display: Display, *, read: bool = True) -> LiveFrame:
        """Read what is new (unless ``read`` is false: only re-colour) and render."""
        started = time.perf_counter()
        finished = False
        progress_text = ""
        if read and not self.cancelled:
            rule_done_before = self._rule_done
            self._rule_progress()
            update = self.live.poll(self._analysed)
            if update.columns is not None and len(update.columns["x"]):
                self._canvas_for(update.columns).add(update.columns["x"], update.columns["y"])
            if update.progress is not None:
                progress_text = update.progress.text()
            # no rule to ask: a results file is taken as complete once read to the end
            finished = (rule_done_before and update.columns is None and not update.more
                        and (self.rule_id is not None or update.rows_read > 0))
        stats = self.live.stats
        summary = stats.summary(self._analysed)
        image, overviews, extent = None, {}, (0.0, 0.0)
        if self.canvas is not None:
            density = self.canvas.image(display.render, summary.median_precision_nm)
            levels = contrast_levels(density, display.percentile)
            image = _qimage(colourise(density, display.lut, levels))
            for factor in OVERVIEW_FACTORS:
                overviews[factor] = _qimage(colourise(max_pool(density, factor), display.lut,
                                                      levels))
            extent = self.canvas.extent_nm
        return LiveFrame(image=image, overviews=overviews, extent_nm=extent, per_frame=stats.per_frame(),
                         histograms={k: h.counts.copy() for k, h in stats.histograms.items()},
                         summary=summary.text(), progress=progress_text,
                         localisations=stats.count, finished=finished,
                         seconds=time.perf_counter() - started)


def _qimage(argb: np.ndarray) -> QImage:
    """A QImage owning a copy of ARGB32 pixels (QImage may be built off the GUI thread)."""
    return QImage(argb.data, argb.shape[1], argb.shape[0], 4 * argb.shape[1],
                  QImage.Format_RGB32).copy()


class QImageItem(pg.GraphicsObject):
    """A QImage drawn over a rectangle in view coordinates (nm); painting only, no processing.

    Zoomed out, a max-pooled overview (``overviews[factor]``) is painted instead, so structures
    thinner than a screen pixel stay visible.
    """

    def __init__(self):
        super().__init__()
        self._image: QImage | None = None
        self._overviews: dict[int, QImage] = {}
        self._rect = QRectF()

    def set_image(self, image: QImage | None, rect: QRectF,
                  overviews: dict[int, QImage] | None = None) -> None:
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = rect
        self._image = image
        self._overviews = dict(overviews or {})
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt's name
        return QRectF(self._rect)

    def image_for_scale(self, screen_px_per_image_px: float) -> QImage | None:
        """The coarsest image that still has at least one pixel per screen pixel."""
        chosen = self._image
        for factor in sorted(self._overviews):
            if screen_px_per_image_px * factor <= 1.0:
                chosen = self._overviews[factor]
        return chosen

    def paint(self, painter: QPainter, *args) -> None:
        if self._image is None or self._image.width() == 0:
            return
        scale = painter.worldTransform().m11() * self._rect.width() / self._image.width()
        painter.drawImage(self._rect, self.image_for_scale(abs(scale)))


def nice_length(span_nm: float) -> float:
    """A 1-2-5 × 10ⁿ length in nm close to a fifth of ``span_nm``."""
    if not span_nm > 0:
        return 1000.0
    target = span_nm / 5
    power = 10 ** math.floor(math.log10(target))
    return min((m * power for m in (1, 2, 5, 10)), key=lambda v: abs(v - target))


def length_label(nm: float) -> str:
    return f"{nm / 1000:g} µm" if nm >= 1000 else f"{nm:g} nm"


class ScaleBar(pg.ScaleBar):
    """pyqtgraph's scale bar with a length that follows the zoom, labelled in nm / µm."""

    def __init__(self):
        super().__init__(1000.0, width=6, brush="w", pen="w", suffix="", offset=(-20, -20))

    def updateBar(self) -> None:  # noqa: N802 - pyqtgraph's name
        view = self.parentItem()
        if view is None:
            return
        (x0, x1), _ = view.viewRange()
        self.size = nice_length(x1 - x0)
        self.text.setText(length_label(self.size))
        super().updateBar()


class LiveView(QWidget):
    """Density render, localisations per frame, histograms and the summary line of one results file.

    :meth:`follow` starts following (about once a second until the rule is done and everything is
    read); :meth:`stop` stops. ``updated`` is emitted after each applied frame.
    """

    updated = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._source: LiveSource | None = None
        self._busy = False
        self._pending_recolour = False
        self._generation = 0
        self._extent: tuple[float, float] | None = None
        self.localisations = 0
        self.gui_seconds: list[float] = []  # GUI-thread time of each applied update
        self.step_seconds: list[float] = []  # pool-thread time (read + render) of each update
        self._timer = QTimer(self)
        self._timer.setInterval(UPDATE_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._luts = {name: colour_table(name) for name in COLOUR_MAPS}
        self._build()

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.colour_box = QComboBox()
        self.colour_box.addItems(COLOUR_MAPS)
        self.render_box = QComboBox()
        for key, label in RENDER_LABELS.items():
            self.render_box.addItem(label, key)
        self.contrast_box = QDoubleSpinBox()
        self.contrast_box.setRange(90.0, 100.0)
        self.contrast_box.setDecimals(1)
        self.contrast_box.setSingleStep(0.1)
        self.contrast_box.setValue(99.5)
        self.contrast_box.setSuffix(" %")
        self.contrast_box.setToolTip("Contrast: the brightest colour is this percentile of the "
                                     "non-empty pixels")
        reset = QPushButton("Fit view")
        reset.clicked.connect(self.fit_view)
        for box in (self.colour_box, self.render_box):
            box.currentIndexChanged.connect(self._recolour)
        self.contrast_box.valueChanged.connect(self._recolour)
        controls = QHBoxLayout()
        for label, widget in (("Render", self.render_box), ("Colour map", self.colour_box),
                              ("Contrast", self.contrast_box)):
            controls.addWidget(QLabel(label))
            controls.addWidget(widget)
        controls.addStretch(1)

        self.summary_label = QLabel("No localisations yet")
        self.summary_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.progress_label = QLabel("")
        self.progress_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        for label in (self.summary_label, self.progress_label):  # never widen the window
            label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
            label.setWordWrap(True)

        self.image_widget = pg.GraphicsLayoutWidget()
        self.image_widget.setBackground("k")
        self.view = self.image_widget.addViewBox(lockAspect=True, invertY=True)
        self.view.setMenuEnabled(False)
        self.image_item = QImageItem()
        self.view.addItem(self.image_item)
        self.scale_bar = ScaleBar()
        self.scale_bar.setParentItem(self.view)
        self.scale_bar.setVisible(False)

        self.plots = pg.GraphicsLayoutWidget()
        self.per_frame_plot = self.plots.addPlot(row=0, col=0, colspan=2,
                                                 title="Localisations per frame")
        self.per_frame_plot.setLabel("bottom", "frame")
        self.per_frame_plot.setDownsampling(auto=True, mode="peak")
        self.per_frame_plot.setClipToView(True)
        self.per_frame_curve = self.per_frame_plot.plot(pen=pg.mkPen("#e6550d"))
        self.histogram_curves: dict[str, pg.PlotDataItem] = {}
        for i, (key, (label, edges)) in enumerate(HISTOGRAMS.items()):
            plot = self.plots.addPlot(row=1 + i // 2, col=i % 2, title=label)
            log = bool(edges[0] > 0 and edges[-1] / edges[0] > 1000)
            plot.setLogMode(x=log, y=False)
            plot.hideAxis("left")
            self.histogram_curves[key] = plot.plot(
                stepMode="center", fillLevel=0, brush=pg.mkBrush("#3182bd"), pen=None)

        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(self.image_widget)
        splitter.addWidget(self.plots)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        summary_row = QHBoxLayout()  # "Fit view" beside the summary keeps the controls row narrow
        summary_row.addWidget(self.summary_label, 1)
        summary_row.addWidget(reset)
        layout.addLayout(summary_row)
        layout.addWidget(self.progress_label)
        layout.addWidget(splitter, 1)

    def display(self) -> Display:
        name = self.colour_box.currentText()
        return Display(render=self.render_box.currentData(), colour_map=name, lut=self._luts[name],
                       percentile=self.contrast_box.value())

    # -- following --------------------------------------------------------------------------
    def follow(self, data: DataClient, results: str, series: str | None = None,
               rules: RuleServerClient | None = None, rule_id: str | None = None) -> None:
        """Follow results file ``results`` (URI or path) of ``series``, written by ``rule_id``."""
        self.stop()
        self._generation += 1
        self._source = LiveSource(data, results, series, rules, rule_id)
        self._extent = None
        self.gui_seconds.clear()
        self.step_seconds.clear()
        self.summary_label.setText("Waiting for localisations…")
        self.progress_label.setText("")
        self.image_item.set_image(None, QRectF())
        self.scale_bar.setVisible(False)
        self.localisations = 0
        self._timer.start()
        self._tick()

    def stop(self) -> None:
        self._timer.stop()
        if self._source is not None:
            self._source.cancelled = True

    @property
    def following(self) -> bool:
        return self._timer.isActive()

    def _tick(self, read: bool = True) -> None:
        if self._source is None:
            return
        if self._busy:
            self._pending_recolour = self._pending_recolour or not read
            return
        self._busy = True
        source, display = self._source, self.display()
        # signals without a Qt parent: the call keeps them alive even if this view is deleted
        # first (Qt then drops the connections), so a late step never emits on a deleted object
        signals = CallSignals()
        signals.done.connect(self._on_done)
        signals.failed.connect(self._on_failed)
        self._in_flight = signals  # and this view keeps them until the result has arrived
        QThreadPool.globalInstance().start(BackgroundCall(
            str(self._generation), lambda: source.step(display, read=read), signals))

    def _recolour(self) -> None:
        self._tick(read=False)

    def _on_done(self, tag: str, frame: LiveFrame) -> None:
        self._busy = False
        if tag != str(self._generation):
            return
        started = time.perf_counter()
        self._apply(frame)
        self.gui_seconds.append(time.perf_counter() - started)
        self.step_seconds.append(frame.seconds)
        if frame.finished:
            self.stop()
            self.progress_label.setText((self.progress_label.text() + " · finished").lstrip(" ·"))
        if self._pending_recolour:
            self._pending_recolour = False
            self._tick(read=False)
        self.updated.emit()

    def _on_failed(self, tag: str, message: str) -> None:
        self._busy = False
        if tag == str(self._generation):
            self.progress_label.setText(f"Cannot read the results: {message}")

    def _apply(self, frame: LiveFrame) -> None:
        if frame.image is not None:
            width, height = frame.extent_nm
            self.image_item.set_image(frame.image, QRectF(0.0, 0.0, width, height),
                                      frame.overviews)
            if self._extent is None:
                self._extent = frame.extent_nm
                self.scale_bar.setVisible(True)
                self.fit_view()
        self.localisations = frame.localisations
        if len(frame.per_frame):
            self.per_frame_curve.setData(np.arange(len(frame.per_frame)), frame.per_frame)
        for key, counts in frame.histograms.items():
            edges = HISTOGRAMS[key][1]
            self.histogram_curves[key].setData(edges, counts)
        self.summary_label.setText(frame.summary if frame.localisations else
                                   "Waiting for localisations…")
        if frame.progress:
            self.progress_label.setText(frame.progress)

    def fit_view(self) -> None:
        """Zoom to the whole render."""
        rect = self.image_item.boundingRect()
        if rect.width() > 0:
            self.view.setRange(rect, padding=0.02)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.stop()
        super().closeEvent(event)
