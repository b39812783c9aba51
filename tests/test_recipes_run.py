"""run_recipe end to end: inputs by URI, the bundled recipes, outputs through write-once storage."""
from __future__ import annotations

import io
import pathlib
import posixpath

import numpy as np
import pytest
import tables
import tifffile

from cluster.recipes import RecipeError, run_recipe
from cluster.recipes.datatypes import Image
from cluster.recipes.fileio import read_csv, read_results, read_tiff, write_tiff

RECIPES = pathlib.Path(__file__).resolve().parents[1] / "resources" / "recipes"
CENTRES = [(2000.0, 3000.0), (2600.0, 3400.0), (3500.0, 2500.0)]
PER_CLUSTER = 40


class Store:
    """Dict-backed cluster storage: write-once, adds ``_1``, ``_2`` … like the data server client."""

    def __init__(self):
        self.files: dict[str, bytes] = {}

    @staticmethod
    def path(uri: str) -> str:
        if uri.lower().startswith("pyme-cluster://"):
            uri = uri[len("pyme-cluster://"):].split("/", 1)[1]
        return uri.lstrip("/")

    def read_file(self, uri: str) -> bytes:
        try:
            return self.files[self.path(uri)]
        except KeyError:
            raise FileNotFoundError(uri) from None

    def write_file(self, path: str, data: bytes) -> str:
        stem, ext = posixpath.splitext(path)
        n, candidate = 0, path
        while candidate in self.files:
            n += 1
            candidate = f"{stem}_{n}{ext}"
        self.files[candidate] = data
        return candidate


def synthetic_h5r(tmp_path, pyme_fixtures) -> bytes:
    """An .h5r as PYME's data server writes it: 3 clusters of good fits + bad fits, events, metadata."""
    with tables.open_file(str(pyme_fixtures / "results.h5r")) as h5:
        fit_dtype = h5.root.FitResults.dtype
        event_dtype = h5.root.Events.dtype
    rng = np.random.default_rng(7)
    good = np.zeros(PER_CLUSTER * len(CENTRES), dtype=fit_dtype)
    for k, (cx, cy) in enumerate(CENTRES):
        rows = good[k * PER_CLUSTER:(k + 1) * PER_CLUSTER]
        rows["fitResults"]["x0"] = rng.normal(cx, 8.0, PER_CLUSTER)
        rows["fitResults"]["y0"] = rng.normal(cy, 8.0, PER_CLUSTER)
        good[k * PER_CLUSTER:(k + 1) * PER_CLUSTER] = rows
    good["tIndex"] = np.arange(len(good)) // 3
    good["fitResults"]["A"] = 180.0
    good["fitResults"]["sigma"] = 130.0
    good["fitError"]["x0"] = 8.0
    good["fitError"]["y0"] = 8.0
    bad = np.zeros(6, dtype=fit_dtype)
    bad["fitResults"]["x0"] = rng.uniform(1000, 4000, 6)
    bad["fitResults"]["y0"] = rng.uniform(1000, 4000, 6)
    bad["fitResults"]["A"] = 180.0
    bad["fitResults"]["sigma"] = 130.0
    bad["fitError"]["x0"] = [-5000, 100, 100, 8, 8, 8]  # not estimable / imprecise
    bad["fitResults"]["sigma"][3:] = [20, 900, 130]      # too narrow / too wide / ok ...
    bad["fitResults"]["A"][5] = 1.0                      # ... but dim
    events = np.zeros(1, dtype=event_dtype)
    events[0] = (b"StartAq", b"0", 1.7e9)
    path = tmp_path / "synthetic.h5r"
    filters = tables.Filters(complevel=5, complib="zlib", shuffle=True)
    with tables.open_file(str(path), "w") as h5:
        md = h5.create_group("/", "MetaData")
        h5.create_group(md, "voxelsize")
        md.voxelsize._v_attrs["x"] = 0.1
        md.voxelsize._v_attrs["y"] = 0.1
        md.voxelsize._v_attrs["units"] = "um"
        h5.create_group(md, "Camera")
        md.Camera._v_attrs["ADOffset"] = 100.0
        h5.create_table("/", "FitResults", obj=np.concatenate([good, bad]), filters=filters)
        h5.create_table("/", "Events", obj=events, filters=filters)
    return path.read_bytes()


@pytest.fixture
def store(tmp_path, pyme_fixtures) -> Store:
    store = Store()
    store.files["pyme/day1/analysis/s1.h5r"] = synthetic_h5r(tmp_path, pyme_fixtures)
    return store


CONTEXT = {"output_dir": "pyme/day1/analysis", "file_stub": "s1", "task_id": "rule-1"}
H5R_URI = "PYME-CLUSTER://testcluster/pyme/day1/analysis/s1.h5r"
# what a chained step's worker gets: output_dir = the series folder (PYME's launch and Spoolside's)
SERIES_CONTEXT = {"output_dir": "pyme/day1", "task_id": "rule-1"}


def run(store, text, inputs, context=CONTEXT):
    return run_recipe(text, inputs, read_file=store.read_file, write_file=store.write_file,
                      context=dict(context))


def test_bundled_recipes_chain_render_then_measure(store):
    render = (RECIPES / "render_image.yaml").read_text()
    written = run(store, render, {"input": H5R_URI}, SERIES_CONTEXT)
    assert written == ["pyme/day1/analysis/s1.tif"]
    image = read_tiff(store.files[written[0]])
    assert image.voxelsize[:2] == pytest.approx((10.0, 10.0))
    # the filters dropped all six bad fits: the image holds the good localisations only
    assert image.data.sum() == pytest.approx(PER_CLUSTER * len(CENTRES), rel=0.01)
    peak = np.unravel_index(np.argmax(image.data), image.data.shape)
    nearest = min(np.hypot(image.pixel_centres_nm(0, peak[0]) - cx,
                           image.pixel_centres_nm(1, peak[1]) - cy) for cx, cy in CENTRES)
    assert nearest < 30.0

    # measure_blobs given what render wrote (an input pattern: a Spoolside-only chain)
    measure = (RECIPES / "measure_blobs.yaml").read_text()
    written = run(store, measure, {"input": "PYME-CLUSTER://testcluster/" + written[0]},
                  SERIES_CONTEXT)
    assert written == ["pyme/day1/analysis/s1_blobs.csv"]
    # the default chain's one recipe writes the very same image and blob table
    both = Store()
    both.files["pyme/day1/analysis/s1.h5r"] = store.files["pyme/day1/analysis/s1.h5r"]
    combined = (RECIPES / "render_and_measure_blobs.yaml").read_text()
    assert run(both, combined, {"input": H5R_URI}, SERIES_CONTEXT) == [
        "pyme/day1/analysis/s1.tif", "pyme/day1/analysis/s1_blobs.csv"]
    tif = "pyme/day1/analysis/s1.tif"
    assert np.array_equal(read_tiff(both.files[tif]).data, read_tiff(store.files[tif]).data)
    csv_a, csv_b = (read_csv(s.files["pyme/day1/analysis/s1_blobs.csv"]) for s in (both, store))
    assert list(csv_a.columns) == list(csv_b.columns) and len(csv_a) == len(csv_b) == 3
    for column in ("x", "y", "area", "sum_intensity"):
        assert np.allclose(csv_a[column], csv_b[column], rtol=1e-5), column
    blobs = read_csv(store.files[written[0]])
    assert len(blobs) == 3
    fits = read_results(store.files["pyme/day1/analysis/s1.h5r"])["FitResults"]
    for k, (cx, cy) in enumerate(CENTRES):
        rows = slice(k * PER_CLUSTER, (k + 1) * PER_CLUSTER)
        mean_x, mean_y = float(np.mean(fits["x"][rows])), float(np.mean(fits["y"][rows]))
        distance = np.hypot(blobs["x"] - cx, blobs["y"] - cy)
        k = int(np.argmin(distance))
        assert distance[k] < 15.0  # centroid of the thresholded shape
        assert np.hypot(blobs["x_weighted"][k] - mean_x, blobs["y_weighted"][k] - mean_y) < 2.0
        assert blobs["sum_intensity"][k] == pytest.approx(PER_CLUSTER, rel=0.1)
        assert blobs["area"][k] >= 10


def test_outputs_are_write_once(store):
    render = (RECIPES / "render_image.yaml").read_text()
    assert run(store, render, {"input": H5R_URI}, SERIES_CONTEXT) == ["pyme/day1/analysis/s1.tif"]
    assert run(store, render, {"input": H5R_URI}, SERIES_CONTEXT) == ["pyme/day1/analysis/s1_1.tif"]


def test_context_file_stub_defaults_from_the_input_and_output_dir_uri_is_stripped(store):
    recipe = ("- output.CSVOutput: {inputName: Events, scheme: 'pyme-cluster:// - aggregate',"
              " filePattern: '{output_dir}/{file_stub}_{task_id}_events.csv'}\n")
    written = run(store, recipe, {"input": H5R_URI},
                  {"output_dir": "PYME-CLUSTER://testcluster/pyme/out/", "task_id": "R7"})
    assert written == ["pyme/out/s1_R7_events.csv"]
    events = read_csv(store.files[written[0]])
    assert events["EventName"].tolist() == ["StartAq"]


def test_input_keys_and_table_selection(store):
    recipe = ("- localisations.AddPipelineDerivedVars: {inputFitResults: res_FitResults,"
              " outputLocalizations: a}\n"
              "- localisations.AddPipelineDerivedVars: {inputFitResults: only, outputLocalizations: b}\n"
              "- output.HDFOutput: {inputVariables: {a: FromKey, b: FromQuery}, scheme: 'pyme-cluster://',"
              " filePattern: '{output_dir}/{file_stub}_both.hdf'}\n")
    written = run(store, recipe, {"res": H5R_URI, "only": H5R_URI + "?table=FitResults"},
                  {"output_dir": "pyme/out", "file_stub": "x"})
    assert written == ["pyme/out/x_both.hdf"]
    saved = read_results(store.files[written[0]])
    assert set(saved) == {"FromKey", "FromQuery"}
    assert len(saved["FromKey"]) == len(saved["FromQuery"]) == PER_CLUSTER * len(CENTRES) + 6
    np.testing.assert_allclose(saved["FromKey"]["x"], saved["FromQuery"]["x"])
    assert saved["FromKey"].metadata["voxelsize.x"] == pytest.approx(0.1)
    assert saved["FromKey"].metadata["Camera.ADOffset"] == 100.0


def test_modules_run_in_data_flow_order(store):
    recipe = ("- tablefilters.Mapping: {inputName: Localizations, mappings: {r: 'sqrt(x**2+y**2)'}}\n"
              "- output.CSVOutput: {inputName: mapped, scheme: 'pyme-cluster://', filePattern: "
              "'{output_dir}/m.csv'}\n"
              "- localisations.AddPipelineDerivedVars: {}\n")
    (path,) = run(store, recipe, {"input": H5R_URI})
    table = read_csv(store.files[path])
    np.testing.assert_allclose(table["r"], np.hypot(table["x"], table["y"]))


def test_tiff_round_trip_and_cm_resolution():
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    image = read_tiff(write_tiff(Image(data, (12.5, 20.0, 1.0), (-50.0, 100.0, 0.0))))
    np.testing.assert_array_equal(image.data, data)
    assert image.voxelsize[:2] == pytest.approx((12.5, 20.0))
    assert image.origin[:2] == pytest.approx((-50.0, 100.0))
    buffer = io.BytesIO()  # a plain TIFF with resolution in pixels per cm
    tifffile.imwrite(buffer, data.T, resolution=(1e7 / 65.0, 1e7 / 65.0), resolutionunit="CENTIMETER")
    plain = read_tiff(buffer.getvalue())
    assert plain.voxelsize[:2] == pytest.approx((65.0, 65.0))
    np.testing.assert_array_equal(plain.data, data)


# --- errors name their culprit --------------------------------------------------------------

@pytest.mark.parametrize("recipe, inputs, context, fragments", [
    ("- foo.Bar: {}\n", {}, CONTEXT, ["unknown recipe module 'foo.Bar'", "available:"]),
    ("- measurement.Measure2D: {inputIntensity: ''}\n", {"input": H5R_URI}, CONTEXT,
     ["measurement.Measure2D", "needs input 'labels'", "no input or earlier module provides"]),
    ("- processing.Label: {inputName: nothing}\n", {}, CONTEXT, ["processing.Label", "'nothing'"]),
    ("- localisations.AddPipelineDerivedVars: {}\n", {"input": "PYME-CLUSTER://c/pyme/missing.h5r"},
     CONTEXT, ["input 'input'", "missing.h5r", "not found"]),
    ("- localisations.AddPipelineDerivedVars: {}\n", {"input": H5R_URI + "?table=Nope"}, CONTEXT,
     ["input 'input'", "no table 'Nope'", "FitResults"]),
    ("- localisations.AddPipelineDerivedVars: {}\n", {"input": "PYME-CLUSTER://c/pyme/s.pcs"},
     CONTEXT, ["input 'input'", "unsupported file type '.pcs'"]),
    ("- output.CSVOutput: {inputName: Events, scheme: 'pyme-cluster://'}\n", {"input": H5R_URI},
     {"file_stub": "s1"}, ["output.CSVOutput", "{output_dir}", "task context lacks"]),
    ("- output.CSVOutput: {inputName: Events, scheme: 'pyme-cluster://', filePattern: "
     "'{output_dir.__class__}/x.csv'}\n", {"input": H5R_URI}, CONTEXT,
     ["output.CSVOutput", "output_dir.__class__"]),
    ("- output.CSVOutput: {inputName: Events, scheme: 'pyme-cluster://', filePattern: "
     "'{output_dir}/../../etc/x.csv'}\n", {"input": H5R_URI}, CONTEXT,
     ["output.CSVOutput", "'..' component"]),
    ("- output.ImageOutput: {inputName: Events, scheme: 'pyme-cluster://'}\n", {"input": H5R_URI},
     CONTEXT, ["output.ImageOutput", "'Events' must be an image, but it is a table"]),
    ("- tablefilters.Mapping: {inputName: FitResults, mappings: {q: 'x * nope'}}\n",
     {"input": H5R_URI}, CONTEXT, ["tablefilters.Mapping", "unknown column 'nope'"]),
    ("- tablefilters.FilterTable: {inputName: FitResults, outputName: a}\n"
     "- tablefilters.FilterTable: {inputName: Events, outputName: a}\n", {"input": H5R_URI}, CONTEXT,
     ["both write 'a'"]),
])
def test_run_errors_name_their_culprit(store, recipe, inputs, context, fragments):
    with pytest.raises(RecipeError) as info:
        run(store, recipe, inputs, context)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert not [p for p in store.files if not p.endswith(".h5r")]  # nothing written


def test_corrupt_input_names_the_input(store):
    store.files["pyme/bad.h5r"] = b"not hdf5 at all"
    store.files["pyme/bad.tif"] = b"not a tiff"
    for name in ("bad.h5r", "bad.tif"):
        with pytest.raises(RecipeError, match=f"input 'input' .*{name}"):
            run(store, "- processing.Label: {}\n", {"input": f"PYME-CLUSTER://c/pyme/{name}"})


def test_csv_and_tiff_inputs_load_by_extension(store):
    store.files["pyme/t.csv"] = b"# comment\nx,y,name\n1.5,2,a\n3.5,4,b\n"
    image = Image(np.eye(4, dtype=np.float32), (20.0, 20.0, 20.0), (0.0, 0.0, 0.0))
    store.files["pyme/im.tiff"] = write_tiff(image)
    recipe = ("- tablefilters.FilterTable: {inputName: t, filters: {x: [2, 5]}, outputName: f}\n"
              "- processing.SimpleThreshold: {inputName: im, threshold: 0.5, outputName: m}\n"
              "- output.CSVOutput: {inputName: f, scheme: 'pyme-cluster://', filePattern: '{output_dir}/f.csv'}\n"
              "- output.ImageOutput: {inputName: m, scheme: 'pyme-cluster://', filePattern: '{output_dir}/m.tif'}\n")
    written = run(store, recipe, {"t": "PYME-CLUSTER://c/pyme/t.csv", "im": "pyme/im.tiff"})
    assert written == ["pyme/day1/analysis/f.csv", "pyme/day1/analysis/m.tif"]
    table = read_csv(store.files[written[0]])
    assert table["name"].tolist() == ["b"] and table["x"].tolist() == [3.5]
    mask = read_tiff(store.files[written[1]])
    np.testing.assert_array_equal(mask.data, np.eye(4))
    assert mask.voxelsize[:2] == pytest.approx((20.0, 20.0))
