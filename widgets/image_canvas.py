"""The one image viewer of the window: a colour-mapped image in nm with zoom, pan and a scale bar.

:class:`ImageCanvas` paints finished ``QImage``s (no processing on the GUI thread) over a
rectangle in nm, with max-pooled overviews when zoomed out and a scale bar that follows the zoom;
:class:`DisplayControls` holds the colour map and percentile contrast; :func:`coloured_images`
turns a 2-D array into the pictures (any thread). The live view uses all three for its render;
:class:`ImageViewer` puts them together for an image file (the Results tab), colouring on a pool
thread.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QImage, QPainter
from PyQt5.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from rules import render_kernels
from rules.render import colourise, contrast_levels, pooled_shape
from widgets.background import BackgroundCall, CallSignals, shared_pool

logger = logging.getLogger(__name__)

COLOUR_MAPS = ("hot", "magma")
#: Sides of the overview images painted when zoomed out (each a max-pooled copy of the image).
OVERVIEW_FACTORS = (2, 4)


_preload_started = threading.Event()


def preload_render_loops() -> None:
    """Load the render's compiled loops on a background thread, once per process (about 0.4 s of
    CPU from numba's cache, ~2 s the first time they are compiled), so the first picture does not
    wait for them."""
    if _preload_started.is_set():
        return
    _preload_started.set()

    def load() -> None:
        try:
            logger.debug("render loops loaded in %.2f s of CPU", render_kernels.preload())
        except Exception:  # noqa: BLE001 - the first render shows the same error where it matters
            logger.exception("loading the render loops failed")
    threading.Thread(target=load, name="render-preload", daemon=True).start()


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
    """How to show an image: colour map (and its table), contrast percentile, and for the live
    view the render."""

    render: str = "gaussian"
    colour_map: str = "hot"
    lut: np.ndarray = field(default_factory=lambda: colour_table("hot"), compare=False)
    percentile: float = 99.5


def picture_pixels(picture: QImage, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of RGB32 ``picture`` of ``shape`` (rows, columns) as a writable ``uint32`` array
    over its memory (call it again after the picture was copied elsewhere: Qt then detaches it).
    An empty shape (a null picture) gets an empty array."""
    if picture.isNull():
        return np.zeros(shape, np.uint32)
    bits = picture.bits()
    bits.setsize(picture.sizeInBytes())
    rows = np.frombuffer(bits, np.uint32).reshape(picture.height(), picture.bytesPerLine() // 4)
    return rows if rows.shape[1] == picture.width() else rows[:, :picture.width()]


def new_pictures(shape: tuple[int, int]) -> tuple[QImage, dict[int, QImage]]:
    """A new RGB32 picture of ``shape`` (rows, columns) and its :data:`OVERVIEW_FACTORS`
    overviews, not yet written."""
    height, width = shape
    return QImage(width, height, QImage.Format_RGB32), {
        factor: QImage(w, h, QImage.Format_RGB32)
        for factor, (h, w) in ((f, pooled_shape(shape, f)) for f in OVERVIEW_FACTORS)}


class PictureBuffers:
    """Two sets of pictures (full size and overviews) written in turn, so that one producing
    pictures over and over allocates none: one set is on screen while the other is written.

    Only for a producer whose pictures are shown one at a time and who starts writing the next
    only after the last one has been put on screen (the live view's steps); a new shape
    (the canvas grew) gets new pictures.
    """

    def __init__(self):
        self._sets: list[tuple[QImage, dict[int, QImage]]] = []
        self._shape: tuple[int, int] | None = None
        self._turn = 0

    def next(self, shape: tuple[int, int]) -> tuple[QImage, dict[int, QImage]]:
        """The set to write now (the one shown the time before last)."""
        if shape != self._shape:
            self._sets = [new_pictures(shape) for _ in range(2)]
            self._shape = (shape[0], shape[1])
        self._turn ^= 1
        return self._sets[self._turn]


def coloured_images(image: np.ndarray, display: Display, buffers: PictureBuffers | None = None
                    ) -> tuple[QImage, dict[int, QImage]]:
    """The picture of a 2-D ``image`` through the display's colour map and contrast, and its
    overviews (:data:`OVERVIEW_FACTORS`); any thread. One pass over ``image``, written straight
    into the pictures' pixels: new ones, or the next of ``buffers``."""
    levels = contrast_levels(image, display.percentile)
    picture, overviews = buffers.next(image.shape) if buffers is not None \
        else new_pictures(image.shape)
    colourise(image, display.lut, levels, out=picture_pixels(picture, image.shape),
              overviews={factor: picture_pixels(q, pooled_shape(image.shape, factor))
                         for factor, q in overviews.items()})
    return picture, overviews


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

    def image(self) -> QImage | None:
        return self._image

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


class ImageCanvas(pg.GraphicsLayoutWidget):
    """A black canvas showing one picture over ``width × height`` nm: wheel zooms, drag pans, a
    scale bar follows; no pyqtgraph menus or ROI buttons."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackground("k")
        self.view = self.addViewBox(lockAspect=True, invertY=True)
        self.view.setMenuEnabled(False)
        self.image_item = QImageItem()
        self.view.addItem(self.image_item)
        self.scale_bar = ScaleBar()
        self.scale_bar.setParentItem(self.view)
        self.scale_bar.setVisible(False)
        # Until the user zooms or pans, the whole image stays in view, also when the canvas is
        # first laid out or resized after the image arrived (a tab opened later, a window resize).
        self.following_size = True
        self.view.sigRangeChangedManually.connect(self._on_range_changed_manually)

    def _on_range_changed_manually(self, *_args) -> None:
        self.following_size = False

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if getattr(self, "following_size", False):  # (also called while being built)
            self.fit_view()

    def show_image(self, image: QImage | None, extent_nm: tuple[float, float],
                   overviews: dict[int, QImage] | None = None, *, fit: bool = False) -> None:
        """Paint ``image`` over ``extent_nm`` (width, height); ``fit`` zooms to the whole of it."""
        width, height = extent_nm
        self.image_item.set_image(image, QRectF(0.0, 0.0, width, height), overviews)
        self.scale_bar.setVisible(image is not None)
        if fit or self.following_size:
            self.fit_view()

    def clear_image(self) -> None:
        # not ``clear``: pyqtgraph's GraphicsLayoutWidget sets its own ``clear`` (emptying the
        # layout) on each instance, which would win over a method of that name
        self.image_item.set_image(None, QRectF())
        self.scale_bar.setVisible(False)
        self.following_size = True

    def fit_view(self) -> None:
        """Zoom to the whole image (and keep it so until the user zooms or pans)."""
        self.following_size = True
        rect = self.image_item.boundingRect()
        if rect.width() > 0:
            self.view.setRange(rect, padding=0.02)


class DisplayControls(QWidget):
    """Colour map and contrast boxes (and, for the live view, the render) in one row.

    Signals: ``changed()`` when any of them changes.
    """

    changed = pyqtSignal()

    def __init__(self, renders: dict[str, str] | None = None, parent=None):
        super().__init__(parent)
        self._luts = {name: colour_table(name) for name in COLOUR_MAPS}
        self.colour_box = QComboBox()
        self.colour_box.addItems(COLOUR_MAPS)
        self.render_box = QComboBox()
        for key, label in (renders or {}).items():
            self.render_box.addItem(label, key)
        self.contrast_box = QDoubleSpinBox()
        self.contrast_box.setRange(90.0, 100.0)
        self.contrast_box.setDecimals(1)
        self.contrast_box.setSingleStep(0.1)
        self.contrast_box.setValue(99.5)
        self.contrast_box.setSuffix(" %")
        self.contrast_box.setToolTip("Contrast: the brightest colour is this percentile of the "
                                     "non-empty pixels")
        for box in (self.colour_box, self.render_box):
            box.currentIndexChanged.connect(self.changed)
        self.contrast_box.valueChanged.connect(self.changed)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        rows = [("Colour map", self.colour_box), ("Contrast", self.contrast_box)]
        if renders:
            rows.insert(0, ("Render", self.render_box))
        else:
            self.render_box.hide()
        for label, widget in rows:
            layout.addWidget(QLabel(label))
            layout.addWidget(widget)

    def display(self) -> Display:
        name = self.colour_box.currentText()
        return Display(render=self.render_box.currentData() or "histogram", colour_map=name,
                       lut=self._luts[name], percentile=self.contrast_box.value())


@dataclass
class _Coloured:
    image: QImage
    overviews: dict[int, QImage]
    seconds: float


class ImageViewer(QWidget):
    """An image file's pixels shown full resolution through :class:`DisplayControls` and an
    :class:`ImageCanvas` (pixel size in nm from the file; 1 px = 1 unit when unknown).

    Colouring runs on the global pool; ``shown`` is emitted when the picture is on screen.
    """

    shown = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.controls = DisplayControls()
        self.canvas = ImageCanvas()
        self.info = QLabel("")
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        fit = QPushButton("Fit view")
        fit.clicked.connect(self.canvas.fit_view)
        row = QHBoxLayout()
        row.addWidget(self.controls)
        row.addStretch(1)
        row.addWidget(self.info)
        row.addWidget(fit)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.canvas, 1)
        self._image: np.ndarray | None = None
        self._pixel_nm = 1.0
        self._scaled = False
        self._generation = 0
        self._fit_next = False
        self._busy = False
        self._again = False
        self._signals = CallSignals(self)
        self._signals.done.connect(self._on_coloured)
        self._signals.failed.connect(self._on_colour_failed)
        self.controls.changed.connect(self._recolour)
        preload_render_loops()

    def set_image(self, image: np.ndarray, pixel_nm: float | None) -> None:
        """Show 2-D ``image`` whose pixels are ``pixel_nm`` wide (None: unknown)."""
        if image.ndim != 2:
            raise ValueError(f"cannot show an image of shape {image.shape}")
        self._image = np.asarray(image, np.float32)
        self._scaled = bool(pixel_nm and pixel_nm > 0)
        self._pixel_nm = float(pixel_nm) if self._scaled else 1.0
        self.info.setText(f"{self._pixel_nm:g} nm/px" if self._scaled else "pixel size unknown")
        self._generation += 1
        self._fit_next = True
        self._recolour()

    def _recolour(self) -> None:
        if self._image is None:
            return
        if self._busy:
            self._again = True
            return
        self._busy = True
        image, display = self._image, self.controls.display()

        def colour() -> _Coloured:
            started = time.perf_counter()
            picture, overviews = coloured_images(image, display)
            return _Coloured(picture, overviews, time.perf_counter() - started)
        shared_pool().start(BackgroundCall(str(self._generation), colour,
                                                          self._signals))

    def _on_colour_failed(self, _tag: str, message: str) -> None:
        self._busy = self._again = False
        self.info.setText(f"Cannot show the image: {message}")

    def _on_coloured(self, tag: str, result: _Coloured) -> None:
        self._busy = False
        if self._again:
            self._again = False
            self._recolour()
            if tag != str(self._generation):
                return
        if tag != str(self._generation) or self._image is None:
            return
        height, width = self._image.shape
        self.canvas.show_image(result.image, (width * self._pixel_nm, height * self._pixel_nm),
                               result.overviews, fit=self._fit_next)
        self.canvas.scale_bar.setVisible(self._scaled)  # no bar in nm without a pixel size
        self._fit_next = False
        self.shown.emit()
