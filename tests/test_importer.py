"""``spoolside import``: TIFF stacks and .pcs folders into the cluster as PYME series, with the
file's own pixel size, Huffman-coded frames, events.json last, and no half series for bad files."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from rules.dataserver_client import DataClient
from rules.importer import ImportDataError, import_series, missing_metadata, open_source
from rules.pzf import COMPRESSION_HUFFMAN, decode_frame, read_header

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
