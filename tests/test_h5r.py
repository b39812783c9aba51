"""cluster.h5r against the results file PYME's own data server wrote."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import tables

from cluster import h5r


@pytest.fixture
def fixture_h5r(pyme_fixtures):
    return pyme_fixtures / "results.h5r"


@pytest.fixture
def fixture_md(pyme_fixtures):
    return json.loads((pyme_fixtures / "series.pcs" / "metadata.json").read_text())


def _layout(path):
    """Everything PYME readers see of a results file: nodes, dtypes, filters, chunks, attributes."""
    out = {}
    with tables.open_file(str(path)) as f:
        for node in f.walk_nodes("/"):
            entry = {"class": type(node).__name__}
            if isinstance(node, tables.Table):
                entry.update(dtype=node.dtype.descr, filters=repr(node.filters),
                             chunkshape=tuple(int(c) for c in node.chunkshape))
            if isinstance(node, tables.Group) and node._v_pathname.startswith("/MetaData"):
                attrs = node._v_attrs
                entry["attrs"] = {name: repr(attrs._g_getattr(node, name))
                                  for name in attrs._f_list("user")}
            out[node._v_pathname] = entry
    return out


def test_reads_fixture_metadata_tables_and_events(fixture_h5r, fixture_md):
    assert h5r.read_metadata(fixture_h5r) == fixture_md
    assert h5r.list_tables(fixture_h5r) == ["Events", "FitResults"]
    fits = h5r.read_table(fixture_h5r, "FitResults")
    assert len(fits) == 5 and fits.dtype.itemsize == 108
    assert fits.dtype.names[:3] == ("tIndex", "fitResults", "fitError")
    assert fits["fitResults"]["x0"][1] == pytest.approx(2000.0)
    assert list(h5r.read_table(fixture_h5r, "FitResults", 1, 3)["tIndex"]) == [1, 2]
    events = h5r.read_table(fixture_h5r, "Events")
    assert events.dtype == h5r.EVENTS_DTYPE
    assert events[0]["EventName"] == b"StartAq"


def test_written_file_has_the_fixture_layout(tmp_path, fixture_h5r, fixture_md):
    ours = tmp_path / "ours.h5r"
    h5r.write_metadata(ours, fixture_md)
    fits = h5r.read_table(fixture_h5r, "FitResults")
    h5r.append_table(ours, "FitResults", fits[:2])
    h5r.append_table(ours, "FitResults", fits[2:])
    h5r.append_table(ours, "Events", h5r.read_table(fixture_h5r, "Events"))
    assert _layout(ours) == _layout(fixture_h5r)
    assert h5r.read_metadata(ours) == fixture_md
    np.testing.assert_array_equal(h5r.read_table(ours, "FitResults"), fits)


def test_metadata_merges_and_overwrites(tmp_path):
    path = tmp_path / "m.h5r"
    h5r.write_metadata(path, {"Camera.ADOffset": 100.0, "Analysis.BGRange": [-10, 0], "x": "a"})
    h5r.write_metadata(path, {"Camera.ADOffset": 90.5, "Camera.Deep.Key": {"k": [1, 2]},
                              "Flag": True, "Empty": ""})
    assert h5r.read_metadata(path) == {
        "Analysis.BGRange": [-10, 0], "Camera.ADOffset": 90.5, "Camera.Deep.Key": {"k": [1, 2]},
        "Empty": "", "Flag": True, "x": "a"}
    with pytest.raises(h5r.H5RError):
        h5r.write_metadata(path, {"bad..key": 1})
    with pytest.raises(h5r.H5RError):
        h5r.write_metadata(path, {"obj": object()})


def test_append_checks_dtype_and_names(tmp_path):
    path = tmp_path / "r.h5r"
    good = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f4")])
    good["a"] = [1, 2, 3]
    assert h5r.append_table(path, "T", good) == 3
    # same layout in the other byte order is converted, not refused
    assert h5r.append_table(path, "T", good.astype([("a", ">i4"), ("b", ">f4")])) == 6
    with pytest.raises(h5r.H5RError, match="does not match"):
        h5r.append_table(path, "T", np.zeros(2, dtype=[("a", "<i8"), ("b", "<f4")]))
    with pytest.raises(h5r.H5RError):
        h5r.append_table(path, "T", np.zeros(2))
    for bad in ("MetaData", "a/b", "../x", ""):
        with pytest.raises(h5r.H5RError):
            h5r.append_table(path, bad, good)
    assert list(h5r.read_table(path, "T")["a"]) == [1, 2, 3, 1, 2, 3]
    with pytest.raises(KeyError):
        h5r.read_table(path, "Missing")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".spoolside-tmp")]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_attributes_cannot_run_code(tmp_path):
    path = tmp_path / "evil.h5r"
    marker = str(tmp_path / "pwned")
    payload = pickle.dumps(_Exploit(marker), 0)
    assert payload.endswith(b".")
    with tables.open_file(str(path), "w") as f:
        group = f.create_group("/", "MetaData")
        group._v_attrs["evil"] = np.bytes_(payload)
        group._v_attrs["fine"] = [1, 2]
    md = h5r.read_metadata(path)
    assert not os.path.exists(marker)
    assert md["fine"] == [1, 2]
    assert isinstance(md["evil"], str)  # left as raw text, never unpickled into a call


def test_recipe_hdf_output_has_the_fixture_metadata_layout(tmp_path, fixture_h5r, fixture_md):
    """A recipe's HDFOutput stores metadata as PYME does (lists pickled, not arrays or JSON)."""
    from cluster.recipes.runner import run_recipe

    written = {}

    def write_file(path, data):
        written[path] = data
        return path

    recipe = ("- output.HDFOutput: {inputVariables: {res_FitResults: FitResults}, scheme: 'pyme-cluster://',"
              " filePattern: '{output_dir}/out.hdf'}\n")
    run_recipe(recipe, {"res": "pyme/results.h5r"}, read_file=lambda uri: fixture_h5r.read_bytes(),
               write_file=write_file, context={"output_dir": "pyme"})
    ours = tmp_path / "out.hdf"
    ours.write_bytes(written["pyme/out.hdf"])
    metadata_layout = {path: entry for path, entry in _layout(ours).items()
                       if path.startswith("/MetaData")}
    assert metadata_layout == {path: entry for path, entry in _layout(fixture_h5r).items()
                               if path.startswith("/MetaData")}
    assert h5r.read_metadata(ours) == fixture_md
