"""The live view: a super-resolution render of the localisations so far, with density and quality
plots, updated every half second while a localisation rule runs.

All reading and rendering happens on a pool thread (:class:`LiveSource.step`, one at a time): it
reads only the rows added to the ``.h5r`` since the last step (``rules.live``), adds them to an
incremental density canvas (``rules.render``: the cost of an update is its new points plus one
colouring pass), colours it, and hands a finished :class:`LiveFrame` to the GUI thread, which only
swaps pictures and curves. Steps start every :data:`UPDATE_INTERVAL_MS`; one that overruns is
followed at once by the next, so new rows never wait for a skipped tick.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtGui import QImage
from PyQt5.QtWidgets import (
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
from rules.render import DensityCanvas
from rules.ruleserver_client import RuleServerClient
from rules.watchers import RuleStatus
from widgets.background import BackgroundCall, CallSignals, shared_pool
from widgets.image_canvas import (
    Display,
    DisplayControls,
    ImageCanvas,
    PictureBuffers,
    coloured_images,
    preload_render_loops,
)

logger = logging.getLogger(__name__)

#: Time from the start of one read to the start of the next (when the last one took less).
UPDATE_INTERVAL_MS = 500
RENDER_LABELS = {"gaussian": "Gaussian", "histogram": "Histogram"}


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


class SpacedAxis(pg.AxisItem):
    """An axis whose labelled ticks are at least :attr:`min_gap_px` apart (pyqtgraph packs them
    as densely as their text allows, which a short plot makes unreadable)."""

    min_gap_px = 28

    def tickSpacing(self, minVal, maxVal, size):  # noqa: N802,N803 - pyqtgraph's names
        levels = super().tickSpacing(minVal, maxVal, size)
        span = maxVal - minVal
        if not levels or not span > 0 or not size > 0:
            return levels
        roomy = [(spacing, offset) for spacing, offset in levels
                 if spacing * size / span >= self.min_gap_px]
        if roomy:
            return roomy
        spacing = levels[0][0]
        while spacing * size / span < self.min_gap_px:  # the next 1-2-5 step up
            mantissa = spacing / 10 ** np.floor(np.log10(spacing))
            spacing *= 2.5 if round(mantissa) == 2 else 2.0
        return [(spacing, 0)]


class LiveSource:
    """What the pool thread owns: the incremental reader, statistics and density canvas of one
    results file, and how far the rule that writes it has got."""

    def __init__(self, data: DataClient, results: str, series: str | None = None,
                 rules: RuleServerClient | None = None, rule_id: str | None = None):
        self.live = LiveLocalisations(data, results, series)
        self.rules = rules
        self.rule_id = rule_id
        self.canvas: DensityCanvas | None = None
        self.pictures = PictureBuffers()  # steps run one at a time, each shown before the next
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
            self.canvas = DensityCanvas.for_points(columns["x"], columns["y"])
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
        text = summary.text()
        if self.canvas is not None:
            if self.canvas.outside:
                text += f" · {self.canvas.outside:,} outside the render"
            density = self.canvas.image(display.render, summary.median_precision_nm)
            image, overviews = coloured_images(density, display, self.pictures)
            extent = self.canvas.extent_nm
        return LiveFrame(image=image, overviews=overviews, extent_nm=extent, per_frame=stats.per_frame(),
                         histograms={k: h.counts.copy() for k, h in stats.histograms.items()},
                         summary=text, progress=progress_text,
                         localisations=stats.count, finished=finished,
                         seconds=time.perf_counter() - started)


class LiveView(QWidget):
    """Density render, localisations per frame, histograms and the summary line of one results file.

    :meth:`follow` starts following (every :data:`UPDATE_INTERVAL_MS` until the rule is done and
    everything is read); :meth:`stop` stops. ``updated`` is emitted after each applied frame.
    """

    updated = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._source: LiveSource | None = None
        self._busy = False
        self._pending_read = False  # a tick came while a step ran: read again as soon as it ends
        self._pending_recolour = False
        self._generation = 0
        self._extent: tuple[float, float] | None = None
        self.localisations = 0
        self.gui_seconds: list[float] = []  # GUI-thread time of each applied update
        self.gui_cpu_seconds: list[float] = []  # its CPU time (not inflated by other processes)
        self.step_seconds: list[float] = []  # pool-thread time (read + render) of each update
        self._timer = QTimer(self)
        self._timer.setInterval(UPDATE_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._build()
        preload_render_loops()

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.controls = DisplayControls(RENDER_LABELS)
        self.colour_box = self.controls.colour_box
        self.render_box = self.controls.render_box
        self.contrast_box = self.controls.contrast_box
        self.controls.changed.connect(self._recolour)
        self.fit_button = QPushButton("Fit view")
        self.fit_button.setToolTip("Zoom to the whole render (wheel zooms, drag pans)")
        self.fit_button.clicked.connect(self.fit_view)
        controls = QHBoxLayout()
        controls.addWidget(self.controls)
        controls.addStretch(1)

        # The words go in the narrow column beside the render, above the plots, so the render
        # keeps the height of the tab (the tab shares the window with the rule table).
        self.title_label = QLabel("")
        self.title_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.summary_label = QLabel("No localisations yet")
        self.summary_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.progress_label = QLabel("")
        self.progress_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        for label in (self.title_label, self.summary_label, self.progress_label):
            label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)  # never widen
            label.setWordWrap(True)
        self.title_row = QHBoxLayout()  # "Fit view" here keeps the controls row narrow
        self.title_row.addWidget(self.title_label, 1)
        self.title_row.addWidget(self.fit_button, 0, Qt.AlignTop)

        self.image_widget = ImageCanvas()
        self.view = self.image_widget.view
        self.image_item = self.image_widget.image_item
        self.scale_bar = self.image_widget.scale_bar

        self.plots = pg.GraphicsLayoutWidget()
        self.per_frame_plot = self.plots.addPlot(row=0, col=0, colspan=2,
                                                 axisItems={"left": SpacedAxis("left")},
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
        self.plots.setMinimumHeight(260)  # below that the histograms are unreadable
        self.plots.ci.layout.setRowMinimumHeight(0, 120)  # the figure the laser is steered by

        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.setSpacing(2)
        side_layout.addLayout(self.title_row)
        side_layout.addWidget(self.summary_label)
        side_layout.addWidget(self.progress_label)
        side_layout.addWidget(self.plots, 1)
        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(self.image_widget)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(controls)
        layout.addWidget(splitter, 1)

    def set_title(self, text: str, tooltip: str = "") -> None:
        """What is followed, shown above the summary."""
        self.title_label.setText(text)
        self.title_label.setToolTip(tooltip)

    def display(self) -> Display:
        return self.controls.display()

    # -- following --------------------------------------------------------------------------
    def follow(self, data: DataClient, results: str, series: str | None = None,
               rules: RuleServerClient | None = None, rule_id: str | None = None) -> None:
        """Follow results file ``results`` (URI or path) of ``series``, written by ``rule_id``."""
        self.stop()
        self._generation += 1
        self._source = LiveSource(data, results, series, rules, rule_id)
        self._extent = None
        self.gui_seconds.clear()
        self.gui_cpu_seconds.clear()
        self.step_seconds.clear()
        self.summary_label.setText("Waiting for localisations…")
        self.progress_label.setText("")
        self.image_widget.clear_image()
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
            if read:
                self._pending_read = True
            else:
                self._pending_recolour = True
            return
        self._busy = True
        if read:
            self._pending_read = False
        self._pending_recolour = False  # any step re-colours with the display of now
        source, display = self._source, self.display()
        # signals without a Qt parent: the call keeps them alive even if this view is deleted
        # first (Qt then drops the connections), so a late step never emits on a deleted object
        signals = CallSignals()
        signals.done.connect(self._on_done)
        signals.failed.connect(self._on_failed)
        self._in_flight = signals  # and this view keeps them until the result has arrived
        shared_pool().start(BackgroundCall(
            str(self._generation), lambda: source.step(display, read=read), signals))

    def _recolour(self) -> None:
        self._tick(read=False)

    def _on_done(self, tag: str, frame: LiveFrame) -> None:
        self._busy = False
        if tag != str(self._generation):  # a step of what was followed before
            self._start_pending()
            return
        started, cpu_started = time.perf_counter(), time.thread_time()
        self._apply(frame)
        self.gui_seconds.append(time.perf_counter() - started)
        self.gui_cpu_seconds.append(time.thread_time() - cpu_started)
        self.step_seconds.append(frame.seconds)
        if frame.finished:
            self.stop()
            self.progress_label.setText((self.progress_label.text() + " · finished").lstrip(" ·"))
        self._start_pending()
        self.updated.emit()

    def _start_pending(self) -> None:
        """What was asked for while the last step ran: a read (it also re-colours), or a
        re-colour."""
        if self._pending_read and self.following:
            self._tick()
        elif self._pending_recolour:
            self._tick(read=False)

    def _on_failed(self, tag: str, message: str) -> None:
        self._busy = False
        self._pending_read = False  # the timer tries again
        if tag == str(self._generation):
            self.progress_label.setText(f"Cannot read the results: {message}")
        if self._pending_recolour:
            self._tick(read=False)

    def _apply(self, frame: LiveFrame) -> None:
        if frame.image is not None:
            first = self._extent is None
            self._extent = frame.extent_nm
            self.image_widget.show_image(frame.image, frame.extent_nm, frame.overviews, fit=first)
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
        self.image_widget.fit_view()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.stop()
        super().closeEvent(event)
