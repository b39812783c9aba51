"""sCMOS camera maps: PYME's keys, file formats, ROI cut and orientation, and what they do to
localisation (hot pixels not detected, per-pixel noise in the fit)."""
from __future__ import annotations

import numpy as np
import pytest
import tables
import tifffile

from cluster.localisation import CameraMaps, LocalisationError, localise_frames
from cluster.localisation.camera_maps import (
    CameraMapCache,
    CameraMapError,
    camera_roi,
    cut_to_roi,
    load_camera_maps,
    map_ids,
)
from cluster.localisation.synthetic import match_to_truth, simulate_frames, simulate_scmos_maps

SENSOR = (40, 30)


def _sensor_map():
    """A map whose value encodes its (x, y) pixel: 1000·x + y."""
    x, y = np.meshgrid(np.arange(SENSOR[0]), np.arange(SENSOR[1]), indexing="ij")
    return (1000.0 * x + y).astype(np.float32)


def _write(path, array):
    if path.suffix == ".npy":
        np.save(path, array)
    elif path.suffix == ".tif":
        tifffile.imwrite(path, array)          # a page as stored: axis 0 = x, as PYME writes it
    else:
        with tables.open_file(str(path), "w") as h5:  # PYME's image file: ImageData (slice, x, y)
            h5.create_array("/", "ImageData", array[None])
    return str(path)


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".h5"])
def test_map_formats_roi_cut_and_orientation(tmp_path, suffix):
    name = _write(tmp_path / f"dark{suffix}", _sensor_map())
    md_new = {"Camera.DarkMapID": name, "Camera.ROIOriginX": 5, "Camera.ROIOriginY": 7,
              "Camera.ROIWidth": 20, "Camera.ROIHeight": 10}
    md_old = {"Camera.DarkMapID": name, "Camera.ROIPosX": 6, "Camera.ROIPosY": 8,
              "Camera.ROIWidth": 20, "Camera.ROIHeight": 10}
    assert camera_roi(md_new) == camera_roi(md_old) == (5, 7, 20, 10)
    dark = load_camera_maps(md_new, (20, 10)).dark
    assert dark.shape == (20, 10) and dark.dtype == np.float32
    assert dark[0, 0] == 1000 * 5 + 7 and dark[19, 9] == 1000 * 24 + 16   # x first
    np.testing.assert_array_equal(load_camera_maps(md_old, (20, 10)).dark, dark)
    # a map already of the frames' size is used as it is
    assert load_camera_maps({"Camera.DarkMapID": name}, SENSOR).dark[3, 4] == 3004


def test_map_ids_and_errors_name_the_map(tmp_path):
    assert map_ids({"Camera.DarkMapID": "", "Camera.VarianceMapID": "<none>"}) == {}
    good = _write(tmp_path / "var.npy", np.ones(SENSOR, np.float32))
    missing = str(tmp_path / "nowhere" / "dark.tif")
    with pytest.raises(CameraMapError, match=r"Camera.DarkMapID .*nowhere/dark.tif"):
        load_camera_maps({"Camera.DarkMapID": missing, "Camera.VarianceMapID": good}, SENSOR)
    with pytest.raises(CameraMapError, match="outside the map"):
        load_camera_maps({"Camera.VarianceMapID": good, "Camera.ROIOriginX": 30,
                          "Camera.ROIWidth": 20, "Camera.ROIHeight": 10}, (20, 10))
    with pytest.raises(CameraMapError, match="negative"):
        load_camera_maps({"Camera.VarianceMapID": _write(tmp_path / "neg.npy",
                                                         -np.ones(SENSOR))}, SENSOR)
    with pytest.raises(CameraMapError, match="format"):
        load_camera_maps({"Camera.VarianceMapID": str(tmp_path / "map.png")}, SENSOR)
    with pytest.raises(CameraMapError, match="no camera ROI"):
        cut_to_roi(np.zeros(SENSOR), None, (20, 10))


def test_a_named_map_that_cannot_be_read_fails_the_localisation(tmp_path):
    frames, _, md = simulate_frames(2, shape=(32, 32), emitters_per_frame=2, seed=1)
    md["Camera.VarianceMapID"] = str(tmp_path / "variance.npy")
    with pytest.raises(LocalisationError, match=r"Camera.VarianceMapID .*variance.npy"):
        localise_frames(lambda i: frames[i], [0, 1], md)


def test_maps_are_loaded_once_per_series():
    reads = []
    payload = {}

    def read(name):
        reads.append(name)
        return payload[name]

    import io
    buffer = io.BytesIO()
    np.save(buffer, np.ones((8, 8), np.float32))
    payload["v.npy"] = buffer.getvalue()
    cache = CameraMapCache()
    md = {"Camera.VarianceMapID": "v.npy"}
    first = cache.get("s1", md, (8, 8), read)
    assert cache.get("s1", md, (8, 8), read) is first and reads == ["v.npy"]
    cache.get("s2", md, (8, 8), read)
    assert reads == ["v.npy", "v.npy"]


@pytest.fixture(scope="module")
def scmos_series():
    maps = simulate_scmos_maps((128, 128), np.random.default_rng(7), hot_fraction=0.01)
    frames, truth, md = simulate_frames(30, shape=(128, 128), emitters_per_frame=15,
                                        photons=1000, background=20, maps=maps, seed=3)
    md["Analysis.BGRange"] = [0, 0]
    return frames, truth, md, maps


def _score(results, truth):
    pairs, n_loc, n_truth = match_to_truth(results, truth, radius_nm=200.0)
    return len(pairs) / n_truth, (n_loc - len(pairs)) / max(n_loc, 1)


def test_scmos_maps_remove_hot_pixel_false_positives(scmos_series, tmp_path):
    frames, truth, md, maps = scmos_series
    without = localise_frames(lambda i: frames[i], range(len(frames)), md, maps=CameraMaps())
    recall0, false0 = _score(without, truth)
    assert false0 > 0.05          # ignoring the maps, hot pixels are found as spots
    md = {**md, "Camera.DarkMapID": _write(tmp_path / "dark.tif", maps.dark),
          "Camera.VarianceMapID": _write(tmp_path / "variance.npy", maps.variance)}
    with_maps = localise_frames(lambda i: frames[i], range(len(frames)), md)
    recall, false = _score(with_maps, truth)
    assert recall >= 0.98 and false <= 0.01, (recall, false)
    assert with_maps.dtype == without.dtype


def test_flatfield_multiplies_the_offset_corrected_data(scmos_series, tmp_path):
    frames, truth, md, maps = scmos_series
    base = CameraMaps(dark=maps.dark, variance=maps.variance)
    flat = CameraMaps(dark=maps.dark, variance=maps.variance,
                      flatfield=np.full(maps.dark.shape, 2.0, np.float32))
    a = localise_frames(lambda i: frames[i], range(5), md, maps=base)
    b = localise_frames(lambda i: frames[i], range(5), md, maps=flat)
    assert len(a) == len(b)
    ratio = b["fitResults"]["A"] / a["fitResults"]["A"]
    assert abs(np.median(ratio) - 2.0) < 0.01 and np.abs(ratio - 2.0).max() < 0.1
    np.testing.assert_allclose(b["fitResults"]["x0"], a["fitResults"]["x0"], atol=5.0)  # nm
