"""Each recipe module on small synthetic data with known answers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cluster.recipes import Image, RecipeError, Table, parse_recipe
from cluster.recipes.fileio import read_results


def run_one(yaml_text: str, namespace: dict) -> dict:
    (module,) = parse_recipe(yaml_text)
    module.run(namespace)
    return namespace


@pytest.fixture(scope="module")
def fixture_fits(pyme_fixtures) -> Table:
    return read_results((pyme_fixtures / "results.h5r").read_bytes())["FitResults"]


def fit_records(pyme_fixtures, xs, ys, error=8.0, amplitude=500.0):
    """FitResults records in PYME's LatGaussFitFR dtype (taken from PYME's own file)."""
    import tables
    with tables.open_file(str(pyme_fixtures / "results.h5r")) as h5:
        dtype = h5.root.FitResults.dtype
    records = np.zeros(len(xs), dtype=dtype)
    records["tIndex"] = np.arange(len(xs))
    records["fitResults"]["x0"] = xs
    records["fitResults"]["y0"] = ys
    records["fitResults"]["A"] = amplitude
    records["fitResults"]["sigma"] = 130.0
    records["fitError"]["x0"] = error
    records["fitError"]["y0"] = error
    return records


# --- tables ---------------------------------------------------------------------------------

def test_pyme_results_are_flattened_with_aliases_and_metadata(fixture_fits):
    assert len(fixture_fits) == 5
    for name in ("tIndex", "fitResults_x0", "fitError_y0", "slicesUsed_x_start", "nchi2"):
        assert name in fixture_fits.keys()
    np.testing.assert_array_equal(fixture_fits["x"], fixture_fits["fitResults_x0"])
    np.testing.assert_array_equal(fixture_fits["t"], [0, 1, 2, 3, 4])
    assert fixture_fits["error_x"][0] == pytest.approx(8.0)
    assert "x" not in fixture_fits.keys() and "x" in fixture_fits.names()
    assert fixture_fits.metadata["Camera.ADOffset"] == 100.0
    assert fixture_fits.metadata["voxelsize.x"] == pytest.approx(0.1)
    assert fixture_fits.metadata["Analysis.BGRange"] == [-30, 0]


def test_add_pipeline_derived_vars(fixture_fits):
    ns = run_one("- localisations.AddPipelineDerivedVars: {}\n", {"FitResults": fixture_fits})
    locs = ns["Localizations"]
    for column in ("x", "y", "A", "sig", "bg", "error_x", "error_y", "t", "z"):
        assert column in locs.keys()
    np.testing.assert_allclose(locs["x"], fixture_fits["fitResults_x0"])
    np.testing.assert_allclose(locs["sig"], 130.0)
    np.testing.assert_allclose(locs["z"], 0.0)
    assert locs.metadata["Camera.ElectronsPerCount"] == 0.5


def test_add_pipeline_derived_vars_missing_input_names_it():
    with pytest.raises(RecipeError, match="needs input 'FitResults'"):
        run_one("- localisations.AddPipelineDerivedVars: {}\n", {})


def test_filter_table_keeps_rows_strictly_inside():
    table = Table({"a": [0.0, 1.0, 2.0, 3.0], "b": [9.0, 9.0, 9.0, 0.0]})
    ns = run_one("- tablefilters.FilterTable: {inputName: t, filters: {a: [0, 3], b: [1, 10]}}\n",
                 {"t": table})
    np.testing.assert_array_equal(ns["filtered"]["a"], [1.0, 2.0])
    with pytest.raises(RecipeError, match="column 'c'.*lacks"):
        run_one("- tablefilters.FilterTable: {inputName: t, filters: {c: [0, 1]}}\n", {"t": table})


def test_filter_table_on_aliases(fixture_fits):
    ns = run_one("- tablefilters.FilterTable: {inputName: f, filters: {x: [1500, 10000]}}\n",
                 {"f": fixture_fits})
    assert len(ns["filtered"]) == int(np.sum(fixture_fits["x"] > 1500))
    assert "x" in ns["filtered"]


def test_mapping_adds_columns_and_names_unknown_ones():
    table = Table({"x": [3.0, 6.0], "y": [4.0, 8.0]})
    ns = run_one("- tablefilters.Mapping: {inputName: t, mappings: {r: 'sqrt(x**2 + y**2)', "
                 "r2: 'r * 2', big: 'x > 4'}}\n", {"t": table})
    np.testing.assert_allclose(ns["mapped"]["r"], [5.0, 10.0])
    np.testing.assert_allclose(ns["mapped"]["r2"], [10.0, 20.0])
    np.testing.assert_array_equal(ns["mapped"]["big"], [False, True])
    np.testing.assert_allclose(ns["mapped"]["x"], [3.0, 6.0])
    with pytest.raises(RecipeError, match="unknown column 'q'"):
        run_one("- tablefilters.Mapping: {inputName: t, mappings: {r: 'q + 1'}}\n", {"t": table})


@pytest.mark.parametrize("expression", ["__import__('os')", "x.real", "(lambda: 0)()",
                                        "open('x')", "x[0]"])
def test_mapping_refuses_unsafe_expressions(expression):
    with pytest.raises(RecipeError, match="tablefilters.Mapping"):
        parse_recipe(f"- tablefilters.Mapping: {{mappings: {{r: \"{expression}\"}}}}\n")


# --- rendering ------------------------------------------------------------------------------

def test_histogram_rendering_counts_and_geometry():
    table = Table({"x": [1005.0, 1005.0, 1095.0], "y": [2003.0, 2007.0, 2031.0]})
    ns = run_one("- localisations.DensityMapping: {inputLocalizations: t, renderingModule: Histogram, "
                 "pixelSize: 10, xyBoundsMode: manual, manualXYBounds: [1000, 2000, 1100, 2050]}\n",
                 {"t": table})
    image = ns["output"]
    assert image.data.shape == (10, 5)
    assert image.voxelsize[:2] == (10.0, 10.0) and image.origin[:2] == (1000.0, 2000.0)
    assert image.data[0, 0] == 2 and image.data[9, 3] == 1 and image.data.sum() == 3
    assert image.metadata["voxelsize.x"] == pytest.approx(0.01)


def test_gaussian_rendering_of_pyme_fit_results(pyme_fixtures):
    xs = np.array([1000.0, 1000.0, 1500.0])
    ys = np.array([2000.0, 2000.0, 1600.0])
    fits = Table.from_records(fit_records(pyme_fixtures, xs, ys, error=15.0))
    ns = {"FitResults": fits}
    for text in ("- localisations.AddPipelineDerivedVars: {}\n",
                 "- localisations.DensityMapping: {inputLocalizations: Localizations, "
                 "renderingModule: Gaussian, jitterVariable: error_x, pixelSize: 10, "
                 "xyBoundsMode: manual, manualXYBounds: [500, 1000, 2000, 2500], outputImage: im}\n"):
        run_one(text, ns)
    image = ns["im"]
    assert image.voxelsize[:2] == (10.0, 10.0)
    assert image.data.shape == (150, 150) and image.data.dtype == np.float32
    assert image.data.sum() == pytest.approx(3.0, rel=1e-4)
    # the brighter spot (two localisations) is centred on x=1000, y=2000 nm
    peak = np.unravel_index(np.argmax(image.data), image.data.shape)
    assert image.pixel_centres_nm(0, peak[0]) == pytest.approx(1000.0, abs=5.0)
    assert image.pixel_centres_nm(1, peak[1]) == pytest.approx(2000.0, abs=5.0)
    window = image.data[40:60, 90:110]
    assert window.sum() == pytest.approx(2.0, rel=1e-3)
    # its width follows error_x = 15 nm = 1.5 px
    ii = np.arange(40, 60)[:, None] + 0.5
    spread = np.sqrt((window * (ii - 50.0) ** 2).sum() / window.sum())
    assert spread == pytest.approx(1.5, rel=0.05)


def test_rendering_estimated_bounds_cover_the_data():
    table = Table({"x": [103.0, 251.0], "y": [-40.0, 12.0], "error_x": [5.0, 5.0]})
    ns = run_one("- localisations.DensityMapping: {inputLocalizations: t, renderingModule: Histogram,"
                 " pixelSize: 10}\n", {"t": table})
    image = ns["output"]
    assert image.origin[:2] == (100.0, -40.0)
    assert image.data.shape == (16, 6) and image.data.sum() == 2


def test_rendering_metadata_bounds_and_missing_metadata(fixture_fits):
    ns = {"Localizations": fixture_fits}
    with pytest.raises(RecipeError, match="Camera.ROIWidth"):
        run_one("- localisations.DensityMapping: {inputLocalizations: Localizations, "
                "renderingModule: Histogram, pixelSize: 50, xyBoundsMode: metadata}\n", ns)
    fits = Table(fixture_fits.columns, aliases=fixture_fits.aliases,
                 metadata={**fixture_fits.metadata, "Camera.ROIWidth": 64, "Camera.ROIHeight": 32})
    ns = run_one("- localisations.DensityMapping: {inputLocalizations: L, renderingModule: Histogram, "
                 "pixelSize: 50, xyBoundsMode: metadata}\n", {"L": fits})
    assert ns["output"].data.shape == (128, 64)  # 6.4 µm × 3.2 µm at 50 nm


def test_rendering_nothing_is_an_error_naming_the_input():
    with pytest.raises(RecipeError, match="nothing to render: 'L'"):
        run_one("- localisations.DensityMapping: {inputLocalizations: L, renderingModule: Gaussian}\n",
                {"L": Table({"x": np.zeros(0), "y": np.zeros(0)})})


# --- images ---------------------------------------------------------------------------------

def blobs_image():
    """Three discs (radius 4 px) and a 2-pixel speck on a 60×50 grid, 10 nm pixels, origin (100, 200)."""
    ii, jj = np.indices((60, 50))
    data = np.zeros((60, 50), dtype=np.float32)
    centres = [(10, 10), (30, 40), (50, 20)]
    for k, (ci, cj) in enumerate(centres):
        data[(ii - ci) ** 2 + (jj - cj) ** 2 <= 16] = k + 1.0
    data[0, 48:50] = 1.0
    return Image(data, (10.0, 10.0, 10.0), (100.0, 200.0, 0.0)), centres


def test_gaussian_filter_sigma_per_axis():
    data = np.zeros((21, 21), dtype=np.float32)
    data[10, 10] = 1.0
    ns = run_one("- filters.GaussianFilter: {sigmaX: 2, sigmaY: 0}\n",
                 {"input": Image(data, (10.0, 10.0, 10.0))})
    out = ns["filtered_image"]
    assert out.voxelsize == (10.0, 10.0, 10.0)
    np.testing.assert_allclose(out.data, ndimage.gaussian_filter(data, (2, 0), mode="constant"),
                               atol=1e-6)
    assert out.data[:, 10].sum() == pytest.approx(1.0, abs=1e-4)
    assert np.all(out.data[:, 9] == 0)


def test_threshold_label_measure_three_blobs():
    image, centres = blobs_image()
    ns = {"input": image}
    run_one("- processing.SimpleThreshold: {inputName: input, threshold: 0.5, outputName: mask}\n", ns)
    assert set(np.unique(ns["mask"].data)) == {0, 1}
    run_one("- processing.Label: {inputName: mask, minRegionPixels: 10, outputName: labels}\n", ns)
    labels = ns["labels"].data
    assert labels.max() == 3 and labels[0, 49] == 0  # the speck is dropped
    run_one("- measurement.Measure2D: {inputLabels: labels, inputIntensity: input}\n", ns)
    m = ns["measurements"]
    assert len(m) == 3
    np.testing.assert_array_equal(m["label"], [1, 2, 3])
    order = np.argsort(m["x"])
    expected_x = [100.0 + (ci + 0.5) * 10.0 for ci, _ in centres]
    expected_y = [200.0 + (cj + 0.5) * 10.0 for _, cj in centres]
    np.testing.assert_allclose(np.asarray(m["x"])[order], sorted(expected_x))
    np.testing.assert_allclose(np.asarray(m["y"])[order], [expected_y[i] for i in np.argsort(expected_x)])
    np.testing.assert_array_equal(m["area"], [49, 49, 49])
    np.testing.assert_allclose(m["area_nm2"], 4900.0)
    np.testing.assert_allclose(m["mean_intensity"][order], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(m["sum_intensity"][order], [49.0, 98.0, 147.0])
    np.testing.assert_allclose(m["eccentricity"], 0.0, atol=1e-9)
    np.testing.assert_array_equal(m["bbox_x1"] - m["bbox_x0"], [9, 9, 9])


def test_measure2d_shape_of_a_bar():
    labels = np.zeros((30, 30), dtype=np.int32)
    labels[5:25, 10:14] = 1  # 20 px along x, 4 px along y
    ns = run_one("- measurement.Measure2D: {inputLabels: L, inputIntensity: ''}\n",
                 {"L": Image(labels, (100.0, 100.0, 100.0))})
    m = ns["measurements"]
    # skimage's convention: 4 * sqrt(second central moment incl. the pixel's own 1/12)
    assert m["major_axis_length"][0] == pytest.approx(4 * np.sqrt((20 ** 2) / 12), rel=1e-6)
    assert m["minor_axis_length"][0] == pytest.approx(4 * np.sqrt((4 ** 2) / 12), rel=1e-6)
    assert abs(m["orientation"][0]) == pytest.approx(0.0, abs=1e-9)
    assert 0.9 < m["eccentricity"][0] < 1.0
    assert m["extent"][0] == pytest.approx(1.0)
    assert "mean_intensity" not in m


def test_measure2d_wrong_kinds_of_input():
    image, _ = blobs_image()
    with pytest.raises(RecipeError, match="integer label image"):
        run_one("- measurement.Measure2D: {inputLabels: L, inputIntensity: ''}\n", {"L": image})
    with pytest.raises(RecipeError, match="must be an image, but it is a table"):
        run_one("- measurement.Measure2D: {inputLabels: L}\n", {"L": Table({"a": [1]})})


def test_dbscan_clusters_and_noise():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 3, (20, 2))
    b = rng.normal(0, 3, (15, 2)) + 200
    noise = np.array([[500.0, 500.0], [-400.0, 300.0]])
    pts = np.vstack([a, b, noise])
    table = Table({"x": pts[:, 0], "y": pts[:, 1]})
    ns = run_one("- localisations.DBSCANClustering: {inputName: t, columns: [x, y], searchRadius: 20,"
                 " minClumpSize: 3}\n", {"t": table})
    ids = ns["dbscanClustered"]["dbscanClumpID"]
    assert len(set(ids[:20])) == 1 and len(set(ids[20:35])) == 1
    assert ids[0] != ids[20] and ids[0] > 0 and ids[20] > 0
    np.testing.assert_array_equal(ids[35:], [0, 0])
