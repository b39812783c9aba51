"""The live-analysis engine: incremental table reads from a real data server, readable columns,
statistics, progress and export."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import tables

from rules.dataserver_client import DataClient
from rules.export import cluster_batches, export_localisations, format_for
from rules.live import LiveLocalisations
from rules.localisations import PhotonConversion, localisation_columns
from rules.locstats import Histogram, LocalisationStats, ProgressTracker
from rules.results_reader import IncrementalTable

FIXTURE_RESULTS = "pyme/results.h5r"


def _records(n: int, start_frame: int = 0, *, seed: int = 0) -> np.ndarray:
    from cluster.localisation.results import FIT_RESULTS_DTYPE
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, FIT_RESULTS_DTYPE)
    rows["tIndex"] = start_frame + np.arange(n) // 3
    rows["fitResults"]["x0"] = rng.uniform(0, 25600, n)
    rows["fitResults"]["y0"] = rng.uniform(0, 25600, n)
    rows["fitResults"]["A"] = 200.0
    rows["fitResults"]["sigma"] = 130.0
    rows["fitResults"]["background"] = 20.0
    rows["fitError"]["x0"] = 10.0
    rows["fitError"]["y0"] = 14.0
    return rows


@pytest.fixture
def client(data_server):
    with DataClient(data_server.url, "testcluster") as data:
        yield data


def _append(client: DataClient, path: str, rows: np.ndarray) -> None:
    client.append_records(client.aggregate_url(path, "h5r") + "/FitResults", rows)


def test_incremental_reads_only_new_rows_from_a_growing_file(client, data_server):
    reader = IncrementalTable(client, "PYME-CLUSTER://testcluster/live/analysis/s.h5r", chunk_rows=40)
    assert reader.read_new() is None  # nothing written yet: no file
    first = _records(100)
    _append(client, "live/analysis/s.h5r", first)
    got = reader.read_new()
    assert got is not None and len(got) == 100 and reader.rows_read == 100  # three chunked requests
    np.testing.assert_array_equal(got["fitResults"]["x0"], first["fitResults"]["x0"])
    assert reader.read_new() is None
    second = _records(7, start_frame=40, seed=1)
    _append(client, "live/analysis/s.h5r", second)
    got = reader.read_new(max_rows=5)
    np.testing.assert_array_equal(got["tIndex"], second["tIndex"][:5])
    got = reader.read_new()
    np.testing.assert_array_equal(got["tIndex"], second["tIndex"][5:])
    assert reader.rows_read == 107


def test_columns_of_pyme_results_have_units(client, fixture_series_root):
    reader = IncrementalTable(client, FIXTURE_RESULTS)
    conversion = PhotonConversion.from_metadata(reader.metadata())
    assert conversion == PhotonConversion(pixel_nm=100.0, electrons_per_count=0.5, em_gain=1.0)
    rows = reader.read_new()
    columns = localisation_columns(rows, conversion)
    assert columns["x"][:2].tolist() == [1000.0, 2000.0]
    # a Gaussian spot of peak 500 ADU and σ 1.3 px holds 500·2π·1.3² ADU, 0.5 e⁻ per ADU
    assert columns["intensity"][0] == pytest.approx(500 * 2 * math.pi * 1.3 ** 2 * 0.5, rel=1e-5)
    assert columns["background"][0] == pytest.approx(25.0)
    assert columns["uncertainty"][0] == pytest.approx(8.0)


def test_columns_refuse_a_table_without_positions():
    with pytest.raises(ValueError, match="tIndex and fitResults.x0/y0"):
        localisation_columns(np.zeros(3, [("Time", "f8")]))


def test_not_estimable_errors_are_nan():
    rows = _records(2)
    rows["fitError"]["x0"][1] = -5000.0
    columns = localisation_columns(rows)
    assert columns["uncertainty"][0] == pytest.approx(12.0)
    assert math.isnan(columns["uncertainty"][1])


def test_histogram_quantile_and_outside_values():
    histogram = Histogram(np.linspace(0, 10, 11))
    histogram.add(np.array([0.5, 1.5, 2.5, 3.5, np.nan, 50.0]))
    assert histogram.total == 5 and histogram.over == 1
    assert histogram.quantile(0.4) == pytest.approx(2.0)


def test_stats_per_frame_and_summary():
    stats = LocalisationStats()
    stats.add(localisation_columns(_records(30)))           # frames 0-9, 3 each
    stats.add(localisation_columns(_records(6, start_frame=20)))
    per_frame = stats.per_frame()
    assert len(per_frame) == 22 and per_frame[:10].tolist() == [3] * 10 and per_frame[21] == 3
    summary = stats.summary(frames_analysed=24)
    assert summary.localisations == 36 and summary.per_frame == pytest.approx(1.5)
    assert summary.median_precision_nm == pytest.approx(12.0, abs=0.25)
    assert "36 localisations" in summary.text() and "12." in summary.text()


def test_progress_lag_and_eta():
    tracker = ProgressTracker(window=10)
    tracker.update(0.0, spooled=100, analysed=50, spooling_done=False)
    progress = tracker.update(2.0, spooled=300, analysed=300, spooling_done=False)
    assert progress.lag == 0 and progress.spool_rate == pytest.approx(100)
    assert progress.analysis_rate == pytest.approx(125)
    progress = tracker.update(4.0, spooled=500, analysed=400, spooling_done=False)
    assert progress.lag == 100
    assert progress.analysis_rate == pytest.approx(87.5) and progress.eta_s is None  # falling behind
    progress = tracker.update(6.0, spooled=500, analysed=450, spooling_done=True)
    assert progress.eta_s == pytest.approx(50 / progress.analysis_rate)
    assert "lag 50 frames" in progress.text()


def test_live_localisations_follow_a_spooling_series(client, data_server, data_root):
    series = data_root / "live" / "s.pcs"
    series.mkdir(parents=True)
    (series / "metadata.json").write_text('{"voxelsize.x": 0.1, "Camera.ElectronsPerCount": 2.0}')
    for i in range(12):
        (series / f"frame{i:05d}.pzf").write_bytes(b"x")
    live = LiveLocalisations(client, "live/analysis/s.h5r", "PYME-CLUSTER://testcluster/live/s.pcs")
    update = live.poll(frames_analysed=0)
    assert update.columns is None and update.progress.lag == 12
    _append(client, "live/analysis/s.h5r", _records(9))
    update = live.poll(frames_analysed=3)
    assert len(update.columns["x"]) == 9 and live.stats.count == 9
    assert update.progress.spooled == 12 and update.progress.lag == 9
    # no MetaData in this results file yet: the series' metadata gives the conversion
    assert live.conversion.electrons_per_count == 2.0


def test_export_csv_thunderstorm_header(client, fixture_series_root, tmp_path):
    target = tmp_path / "locs.csv"
    count = export_localisations(cluster_batches(client, FIXTURE_RESULTS), target)
    assert count == 5
    with open(target, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "frame", "x [nm]", "y [nm]", "sigma [nm]", "intensity [photon]",
                       "offset [photon]", "uncertainty [nm]"]
    assert len(rows) == 6
    first = dict(zip(rows[0], rows[1]))
    assert first["id"] == "1" and first["frame"] == "1"  # ThunderSTORM counts frames from 1
    assert float(first["x [nm]"]) == 1000.0 and float(first["uncertainty [nm]"]) == 8.0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_export_hdf5_and_refusals(client, fixture_series_root, tmp_path):
    target = tmp_path / "locs.h5"
    assert export_localisations(cluster_batches(client, FIXTURE_RESULTS), target) == 5
    with tables.open_file(str(target)) as h5:
        table = h5.root.localisations
        assert table.nrows == 5 and table.attrs["x_unit"] == "nm"
        assert table.col("frame").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(FileExistsError):
        export_localisations(cluster_batches(client, FIXTURE_RESULTS), target)
    with pytest.raises(ValueError, match="export format"):
        format_for(tmp_path / "locs.xlsx")
    with pytest.raises(FileNotFoundError):
        export_localisations(cluster_batches(client, "pyme/missing.h5r"), tmp_path / "m.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "locs.h5"]
