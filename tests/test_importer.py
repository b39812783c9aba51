"""``spoolside import``: TIFF stacks, PYME .h5 files and .pcs folders into the cluster as PYME series, with the
file's own pixel size, Huffman-coded frames, events.json last, and no half series for bad files."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tables
import tifffile

from rules.dataserver_client import DataClient
from rules.importer import ImportDataError, import_series, missing_metadata, open_source
from rules.pzf import COMPRESSION_HUFFMAN, decode_frame, encode_frame, read_header

CAMERA = {"Camera.ADOffset": 100.0, "Camera.ElectronsPerCount": 0.5}


@pytest.fixture
def client(data_server):
    with DataClient([data_server.url], "testcluster") as c:
        yield c


@pytest.fixture
def fixture_stack(pyme_fixtures):
    """series.pcs's 8 frames as a TIFF stack would hold them: (t, y, x)."""
    frames = [decode_frame(p.read_bytes()) for p in sorted((pyme_fixtures / "series.pcs").glob("*.pzf"))]
    return np.stack([f.T for f in frames])


def _series_frames(root, series: str) -> np.ndarray:
    return np.stack([decode_frame(p.read_bytes()) for p in sorted((root / series).glob("*.pzf"))])


def test_ome_tiff_imported_with_its_pixel_size(tmp_path, data_root, client, fixture_stack):
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, fixture_stack, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": 0.1, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 100,
        "PhysicalSizeYUnit": "nm"})
    source = open_source(path)
    assert (source.kind, source.n_frames, source.frame_shape) == ("ome-tiff", 8, (64, 64))
    assert source.metadata["voxelsize.x"] == pytest.approx(0.1)
    assert missing_metadata(source) == ["Camera.ADOffset", "Camera.ElectronsPerCount"]
    seen = []
    series = import_series(source, client, "imp/cells", CAMERA, progress=lambda d, t: seen.append((d, t)))
    assert series == "imp/cells.pcs" and seen[-1] == (8, 8) and len(seen) == 8
    folder = data_root / "imp" / "cells.pcs"
    md = json.loads((folder / "metadata.json").read_text())
    assert md["voxelsize.x"] == pytest.approx(0.1) and md["voxelsize.y"] == pytest.approx(0.1)
    assert md["Camera.ADOffset"] == 100.0 and md["Camera.ROIWidth"] == 64
    # frames in PYME's orientation (axis 0 = x): exactly the fixture series' frames
    np.testing.assert_array_equal(_series_frames(data_root, "imp/cells.pcs"),
                                  fixture_stack.transpose(0, 2, 1))
    header = read_header((folder / "frame00003.pzf").read_bytes())
    assert header.compression == COMPRESSION_HUFFMAN and header.frame_num == 3
    assert header.sequence_id == md["imageID"]
    events = json.loads((folder / "events.json").read_text())
    assert [e[0] for e in events] == ["StartAq", "StopAq"] and events[1][1] == "8"


def test_imagej_hyperstack_pixel_size_from_its_tags(tmp_path, client, data_root):
    stack = np.arange(5 * 12 * 10, dtype=np.uint16).reshape(5, 1, 1, 12, 10)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 0.065, 1 / 0.065),
                     metadata={"axes": "TZCYX", "unit": "um"})
    source = open_source(path)
    assert (source.kind, source.n_frames, source.frame_shape) == ("imagej-tiff", 5, (10, 12))
    assert source.metadata["voxelsize.x"] == pytest.approx(0.065)
    import_series(source, client, "imp/hyper", CAMERA)
    np.testing.assert_array_equal(_series_frames(data_root, "imp/hyper.pcs"),
                                  stack[:, 0, 0].transpose(0, 2, 1))


def test_plain_tiff_needs_pixel_size_given(tmp_path, client, data_root):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.ones((3, 8, 8), np.uint16), photometric="minisblack")
    source = open_source(path)
    assert missing_metadata(source, CAMERA) == ["voxelsize.x", "voxelsize.y"]
    with pytest.raises(ImportDataError, match="does not give voxelsize.x, voxelsize.y"):
        import_series(source, client, "imp/plain", CAMERA)
    assert not (data_root / "imp").exists()
    import_series(source, client, "imp/plain", {**CAMERA, "voxelsize.x": 0.1, "voxelsize.y": 0.1})
    with pytest.raises(ImportDataError, match="already exists"):
        import_series(source, client, "imp/plain", {**CAMERA, "voxelsize.x": 0.1, "voxelsize.y": 0.1})


def _truncated(tmp_path):
    path = tmp_path / "truncated.tif"
    tifffile.imwrite(path, np.ones((20, 16, 16), np.uint16))
    path.write_bytes(path.read_bytes()[:5000])
    return path


@pytest.mark.parametrize("make, words", [
    (_truncated, "not a readable TIFF"),
    (lambda d: (tifffile.imwrite(d / "f64.tif", np.ones((5, 8, 8))), d / "f64.tif")[1],
     "pixels are float64"),
    (lambda d: (tifffile.imwrite(d / "one.tif", np.ones((8, 8), np.uint16)), d / "one.tif")[1],
     "a single 2-D image"),
    (lambda d: (tifffile.imwrite(d / "tc.tif", np.ones((3, 2, 8, 8), np.uint16), imagej=True,
                                 metadata={"axes": "TCYX"}), d / "tc.tif")[1], "more than one"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "not a TIFF stack"),
    (lambda d: d / "missing.tif", "no such file"),
])
def test_bad_files_get_a_clear_error_and_write_nothing(tmp_path, data_root, make, words):
    with pytest.raises(ImportDataError, match=words):
        open_source(make(tmp_path))
    assert list(data_root.iterdir()) == []


def test_pcs_folder_copied_frame_for_frame(pyme_fixtures, tmp_path, client, data_root):
    source = open_source(pyme_fixtures / "series_huffman.pcs")
    assert (source.kind, source.n_frames) == ("pcs", 8)
    assert missing_metadata(source) == []
    import_series(source, client, "imp/copy", None)
    for original in sorted((pyme_fixtures / "series_huffman.pcs").iterdir()):
        copied = data_root / "imp" / "copy.pcs" / original.name
        if original.suffix == ".pzf" or original.name == "events.json":
            assert copied.read_bytes() == original.read_bytes()
    md = json.loads((data_root / "imp" / "copy.pcs" / "metadata.json").read_text())
    assert md["imageID"] == 424242 and md["Spoolside.ImportedFrom"] == "series_huffman.pcs"
    broken = tmp_path / "broken.pcs"
    shutil.copytree(pyme_fixtures / "series_huffman.pcs", broken)
    (broken / "frame00004.pzf").write_bytes((broken / "frame00004.pzf").read_bytes()[:300])
    with pytest.raises(ImportDataError, match="frame00004.pzf.*Huffman"):
        open_source(broken)


def test_import_command(tmp_path, rule_server, data_server, data_root, fixture_stack):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, fixture_stack)
    base = [sys.executable, "-m", "app.cli", "import", str(path), "--name", "imp/cmd",
            "--server", rule_server.url, "--dataserver", data_server.url]
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--pixel-size NM" in refused.stderr
    assert "--adu-offset ADU" in refused.stderr and not (data_root / "imp").exists()
    done = subprocess.run(base + ["--pixel-size", "100", "--adu-offset", "100", "--e-per-adu", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "8 / 8 frames" in done.stdout and "imp/cmd.pcs" in done.stdout
    assert (data_root / "imp" / "cmd.pcs" / "events.json").exists()


# -- PYME .h5 series files (no PYME-written fixture: written here in the documented layouts) ------
#: PYME's events record, in its field order (protocol §5.5)
PYME_EVENTS = np.dtype([("EventDescr", "S256"), ("EventName", "S32"), ("Time", "<f8")])
EVENTS = [("StartAq", "0", 1714731000.25), ("ProtocolFocus", "12, 3.25", 1714731002.5)]
H5_MD = {"voxelsize.x": 0.105, "voxelsize.y": 0.11, "Camera.ADOffset": 98.0,
         "Camera.ElectronsPerCount": 0.47, "imageID": 777, "Protocol.Filename": "prebleach.py",
         "Lasers.l642.Power": [100.0, 50.5]}


def _write_h5(path, frames_xy, layout: str, metadata=H5_MD, events=EVENTS):
    """A PYME .h5 series: /MetaData (one group per key component), /Events, and the frames as
    /ImageData (t, x, y) or as /PZFImageData rows (stored out of order) with /PZFImageIndex."""
    with tables.open_file(str(path), "w") as h5:
        for key, value in metadata.items():
            *groups, name = key.split(".")
            node = h5.root
            for part in ["MetaData", *groups]:
                node = node._f_get_child(part) if part in node else h5.create_group(node, part)
            node._v_attrs[name] = value
        if events is not None:
            table = h5.create_table(h5.root, "Events", PYME_EVENTS)
            table.append(np.array([(d, n, t) for n, d, t in events], PYME_EVENTS))
        if layout == "raw":
            data = h5.create_earray(h5.root, "ImageData", tables.Atom.from_dtype(frames_xy.dtype),
                                    (0, *frames_xy.shape[1:]))
            data.append(frames_xy)
        elif layout == "pzf":
            rows = h5.create_vlarray(h5.root, "PZFImageData", tables.VLStringAtom())
            index = h5.create_table(h5.root, "PZFImageIndex", np.dtype([("FrameNum", "i4"), ("Position", "i4")]))
            for i in [*range(1, len(frames_xy)), 0]:
                rows.append(encode_frame(frames_xy[i], frame_num=i, sequence_id=777,
                                         compression=COMPRESSION_HUFFMAN))
                index.append(np.array([(i, rows.nrows - 1)], index.dtype))
    return path


@pytest.fixture
def h5_frames():
    """Non-square (t, x, y) frames, so a transposition would show."""
    return np.random.default_rng(5).integers(90, 4000, (6, 20, 12), dtype=np.uint16)


@pytest.mark.parametrize("layout, kind", [("raw", "h5"), ("pzf", "h5-pzf")])
def test_h5_series_round_trip(tmp_path, client, data_root, h5_frames, layout, kind):
    source = open_source(_write_h5(tmp_path / "s1.h5", h5_frames, layout))
    assert (source.kind, source.n_frames, source.frame_shape, source.dtype) == (kind, 6, (20, 12), "u2")
    assert missing_metadata(source) == []
    import_series(source, client, "imp/h5", None)
    folder = data_root / "imp" / "h5.pcs"
    np.testing.assert_array_equal(_series_frames(data_root, "imp/h5.pcs"), h5_frames)
    md = json.loads((folder / "metadata.json").read_text())
    assert {k: md[k] for k in H5_MD} == H5_MD and md["Camera.ROIWidth"] == 20
    assert md["Spoolside.ImportedFrom"] == "s1.h5"
    assert json.loads((folder / "events.json").read_text()) == [list(e) for e in EVENTS]
    header = read_header((folder / "frame00002.pzf").read_bytes())
    assert (header.frame_num, header.sequence_id) == (2, 777)


def _truncated_h5(d, frames):
    path = _write_h5(d / "cut.h5", frames, "raw")
    path.write_bytes(path.read_bytes()[:3000])
    return path


@pytest.mark.parametrize("make, words", [
    (lambda d, f: _write_h5(d / "empty.h5", f, "none"), "no frames"),
    (lambda d, f: _write_h5(d / "zero.h5", f[:0], "raw"), "holds no frames"),
    (_truncated_h5, "not a readable HDF5 series"),
    (lambda d, f: _write_h5(d / "f64.h5", f.astype(np.float64), "raw"), "pixels are float64"),
    (lambda d, f: _write_h5(d / "flat.h5", f[0], "raw"), "not a stack of 2-D frames"),
])
def test_bad_h5_gets_a_clear_error_and_writes_nothing(tmp_path, data_root, h5_frames, make, words):
    with pytest.raises(ImportDataError, match=words):
        open_source(make(tmp_path, h5_frames))
    assert list(data_root.iterdir()) == []


def test_h5_damaged_pzf_row_or_index_refused(tmp_path, h5_frames):
    path = _write_h5(tmp_path / "s.h5", h5_frames, "pzf")
    with tables.open_file(str(path), "a") as h5:
        h5.root.PZFImageIndex.modify_column(0, 1, column=np.array([9], "i4"), colname="FrameNum")
    with pytest.raises(ImportDataError, match="PZFImageIndex does not map"):
        open_source(path)
    path = _write_h5(tmp_path / "t.h5", h5_frames, "pzf")
    with tables.open_file(str(path), "a") as h5:
        h5.root.PZFImageData.append(b"BD" + b"\0" * 30)
        h5.root.PZFImageIndex.append(np.array([(6, 6)], h5.root.PZFImageIndex.dtype))
    with pytest.raises(ImportDataError, match="t.h5 frame 6"):
        open_source(path)


def test_import_command_h5(tmp_path, rule_server, data_server, data_root, h5_frames):
    path = _write_h5(tmp_path / "cells.h5", h5_frames, "raw")
    done = subprocess.run([sys.executable, "-m", "app.cli", "import", str(path), "--name", "imp/h5cmd",
                           "--server", rule_server.url, "--dataserver", data_server.url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "6 / 6 frames" in done.stdout
    np.testing.assert_array_equal(_series_frames(data_root, "imp/h5cmd.pcs"), h5_frames)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_h5_pickled_attribute_cannot_run_code(tmp_path, h5_frames, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write_h5(tmp_path / "evil.h5", h5_frames, "raw")
    with tables.open_file(str(path), "a") as h5:
        h5.root.MetaData.Camera._v_attrs["Name"] = np.bytes_(pickle.dumps(_RunsCode(), 0))
    source = open_source(path)
    assert "system" in source.metadata["Camera.Name"]  # kept as text, never unpickled
    assert not (tmp_path / "ran-code").exists()
