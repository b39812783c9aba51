"""The live view follows a real localisation on a real embedded cluster, off the GUI thread."""
from __future__ import annotations

import numpy as np
import tables

from cluster.simulator import SampleModel, SimulatedAcquisition
from rules import LocalisationRuleFactory
from rules.render import DensityCanvas, colourise, contrast_levels
from widgets.image_canvas import colour_table, length_label, nice_length
from widgets.live_view import LiveView

ANALYSIS = {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
            "Analysis.BGRange": [-5, 0], "Analysis.StartAt": 0}


def test_canvas_counts_and_grows():
    canvas = DensityCanvas(10.0)
    canvas.add(np.array([5.0, 15.0, 15.0, np.nan]), np.array([5.0, 5.0, 5.0, 1.0]))
    assert canvas.counts[0, 0] == 1 and canvas.counts[0, 1] == 2 and canvas.outside == 1
    canvas.add(np.array([3000.0]), np.array([12.0]))
    assert canvas.counts.shape == (256, 512) and canvas.counts[1, 300] == 1 and canvas.total == 4
    argb = colourise(canvas.counts, colour_table("hot"), contrast_levels(canvas.counts, 100))
    assert argb[0, 1] == 0xFFFFFFFF and argb[0, 2] == 0xFF000000  # brightest white, empty black


def test_coloured_images_are_the_colourised_pixels_and_their_overviews():
    from widgets.image_canvas import OVERVIEW_FACTORS, Display, coloured_images

    rng = np.random.default_rng(1)
    image = (rng.gamma(0.5, 2.0, (37, 50)) * (rng.random((37, 50)) < 0.3)).astype(np.float32)
    display = Display(colour_map="magma", lut=colour_table("magma"), percentile=99.0)
    picture, overviews = coloured_images(image, display)
    levels = contrast_levels(image, 99.0)
    expected = colourise(image, display.lut, levels)
    assert (picture.width(), picture.height()) == (50, 37)
    assert all(picture.pixel(x, y) == expected[y, x] for y in range(37) for x in range(50))
    assert sorted(overviews) == list(OVERVIEW_FACTORS)
    quarter = overviews[4]
    assert (quarter.width(), quarter.height()) == (12, 9)
    block = image[4:8, 8:12].max()
    assert quarter.pixel(2, 1) == colourise(np.array([[block]]), display.lut, levels)[0, 0]


def test_overview_is_painted_when_zoomed_out():
    from PyQt5.QtCore import QRectF
    from PyQt5.QtGui import QImage

    from widgets.image_canvas import QImageItem
    full, half, quarter = QImage(8, 8, QImage.Format_RGB32), QImage(4, 4, QImage.Format_RGB32), \
        QImage(2, 2, QImage.Format_RGB32)
    item = QImageItem()
    item.set_image(full, QRectF(0, 0, 80, 80), {2: half, 4: quarter})
    assert item.image_for_scale(1.0) is full and item.image_for_scale(0.5) is half
    assert item.image_for_scale(0.2) is quarter


def test_scale_bar_lengths():
    assert nice_length(5000) == 1000 and nice_length(2600) == 500 and nice_length(90000) == 20000
    assert length_label(500) == "500 nm" and length_label(2000) == "2 µm"


def test_live_view_follows_a_spooling_localisation(qtbot, local_cluster, engine, tmp_path):
    # 6 s of spooling: several of the view's (every 0.5 s) updates fall inside the acquisition even
    # when the analysis keeps up with it
    acquisition = SimulatedAcquisition(engine.data, "sim/live_view", frames=300, fps=50,
                                       size=96, seed=2, serverfilter=engine.serverfilter,
                                       sample=SampleModel(emitters_per_frame=12)).start()
    rule = LocalisationRuleFactory(analysisMetadata=ANALYSIS).get_rule(
        context={"seriesName": acquisition.series_uri})
    rule.push(cluster=engine)
    view = LiveView()
    qtbot.addWidget(view)
    view.resize(1100, 650)
    view.show()
    view.follow(engine.data, rule.results_uri, acquisition.series_uri, engine.rules,
                rule._pushed_id())
    # mid-acquisition: some localisations shown while frames are still arriving
    qtbot.waitUntil(lambda: view.localisations > 0 and "lag" in view.progress_label.text(),
                    timeout=60000)
    assert view.scale_bar.isVisible() and view.summary_label.text().endswith(" nm")
    view.grab().save(str(tmp_path / "live_mid.png"))
    qtbot.waitUntil(lambda: not view.following, timeout=120000)
    acquisition.wait(10)
    rule.cleanup()
    path = local_cluster.root / "sim" / "analysis" / "live_view.h5r"
    with tables.open_file(str(path)) as h5:
        rows = h5.root.FitResults.nrows
        frames = np.unique(h5.root.FitResults.col("tIndex"))
    assert rows > 1000
    assert view.summary_label.text().startswith(f"{rows:,} localisations · 300 frames")
    assert "all 300 frames analysed" in view.progress_label.text()
    x, y = view.per_frame_curve.getData()
    assert len(x) == frames.max() + 1 and int(y.sum()) == rows
    assert view.image_item.boundingRect().width() > 9000  # 96 px × 100 nm
    # the render is on screen: the canvas shows coloured pixels, not only its black background
    picture = view.image_widget.grab().toImage()
    coloured = sum(picture.pixel(x, y) & 0xFFFFFF != 0
                   for x in range(0, picture.width(), 4) for y in range(0, picture.height(), 4))
    assert coloured > 20
    view.colour_box.setCurrentText("magma")
    count = len(view.gui_seconds)
    qtbot.waitUntil(lambda: len(view.gui_seconds) > count, timeout=10000)  # re-coloured
    view.grab().save(str(tmp_path / "live_done.png"))


def test_a_wild_fit_in_a_results_file_is_counted_not_drawn(qtbot, engine):
    from cluster.localisation.results import FIT_RESULTS_DTYPE
    rows = np.zeros(2000, FIT_RESULTS_DTYPE)
    rng = np.random.default_rng(8)
    rows["tIndex"] = np.arange(2000) // 20
    rows["fitResults"]["x0"], rows["fitResults"]["y0"] = rng.uniform(0, 12_800, (2, 2000))
    rows["fitResults"]["A"] = 300.0
    rows["fitError"]["x0"] = rows["fitError"]["y0"] = 10.0
    rows["fitResults"]["x0"][7] = 4e9  # a fit gone wild: a 300,000-pixel-wide canvas if drawn
    url = engine.data.aggregate_url("wild/analysis/wild.h5r", "h5r") + "/FitResults"
    engine.data.append_records(url, rows)
    view = LiveView()
    qtbot.addWidget(view)
    view.follow(engine.data, "wild/analysis/wild.h5r")
    qtbot.waitUntil(lambda: not view.following, timeout=30000)
    assert view.localisations == 2000
    assert "1 outside the render" in view.summary_label.text()
    width, height = view.image_item.boundingRect().width(), view.image_item.boundingRect().height()
    assert 12_800 <= width < 2 * 13_500 and 12_800 <= height < 2 * 13_500


def test_picture_buffers_are_written_in_turn_without_new_pictures():
    from widgets.image_canvas import Display, PictureBuffers, coloured_images

    buffers, display = PictureBuffers(), Display()
    first = np.zeros((40, 64), np.float32)
    first[5, 6] = 1.0
    a, a_overviews = coloured_images(first, display, buffers)
    b, _ = coloured_images(first * 0, display, buffers)
    c, c_overviews = coloured_images(first, display, buffers)
    assert a is c and a is not b and a_overviews[4] is c_overviews[4]  # two sets, reused
    assert c.pixel(6, 5) == 0xFFFFFFFF and b.pixel(6, 5) == 0xFF000000
    assert c_overviews[4].pixel(1, 1) == 0xFFFFFFFF
    grown, _ = coloured_images(np.zeros((3, 70), np.float32), display, buffers)  # a new shape
    assert grown is not a and grown is not b and grown.width() == 70


class _BlockingSource:
    """Stands in for a LiveSource whose first step takes as long as the test wants."""

    def __init__(self):
        import threading

        self.release = threading.Event()
        self.reads: list[bool] = []
        self.cancelled = False

    def step(self, display, *, read=True):
        from widgets.live_view import LiveFrame

        self.reads.append(read)
        if len(self.reads) == 1:
            assert self.release.wait(30)
        return LiveFrame(image=None, overviews={}, extent_nm=(0.0, 0.0), per_frame=np.zeros(0),
                         histograms={}, summary="", progress="", localisations=len(self.reads),
                         finished=False, seconds=0.0)


def test_ticks_during_a_long_step_read_again_as_soon_as_it_ends(qtbot):
    view = LiveView()
    qtbot.addWidget(view)
    source = _BlockingSource()
    view._source = source
    view._timer.start(600_000)  # following, but every tick below is the test's
    view._tick()
    qtbot.waitUntil(lambda: len(source.reads) == 1)
    view._tick()  # the timer's ticks while the step runs: one read is owed, not two
    view._tick()
    view._recolour()  # covered by that read
    source.release.set()
    qtbot.waitUntil(lambda: len(view.step_seconds) == 2, timeout=10000)
    qtbot.wait(300)
    assert source.reads == [True, True] and view.localisations == 2
    view.stop()


def test_per_frame_axis_labels_keep_their_distance(qtbot):
    from widgets.live_view import SpacedAxis
    axis = SpacedAxis("left")
    for low, high, size in [(0, 30, 50), (0, 30, 300), (3, 4000, 60), (0, 1e-3, 40)]:
        levels = axis.tickSpacing(low, high, size)
        assert levels and all(s * size / (high - low) >= SpacedAxis.min_gap_px for s, _ in levels)
        mantissa = levels[0][0] / 10 ** np.floor(np.log10(levels[0][0]))
        assert round(mantissa, 6) in (1, 2, 2.5, 5, 10)
    assert len(axis.tickSpacing(0, 30, 300)) >= 1
