"""Localisation: PYME's record layout, PYME's fixture series against its truth, simulated frames
against ground truth and the Cramér–Rao bound, metadata handling."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tables

from cluster.localisation import FIT_RESULTS_DTYPE, LocalisationError, localise_frames
from cluster.localisation.background import bg_frame_indices, without_spots
from cluster.localisation.camera import CameraModel
from cluster.localisation.fitting import fisher_information
from cluster.localisation.synthetic import (
    SIMULATED_CAMERA,
    expected_image,
    match_to_truth,
    simulate_frames,
)
from cluster.pzf import decode_frame


class FlatMetadata:
    """A read-only metadata handler that is not a dict (``get`` and ``[]`` only)."""

    def __init__(self, values):
        self._values = dict(values)

    def get(self, key, default=None):
        return self._values.get(key, default)

    def __getitem__(self, key):
        return self._values[key]


def _fixture_series(pyme_fixtures):
    series = pyme_fixtures / "series.pcs"
    md = json.loads((series / "metadata.json").read_text())
    frames = {i: decode_frame((series / f"frame{i:05d}.pzf").read_bytes()) for i in range(8)}
    return frames, md


def test_dtype_is_pymes_latgaussfitfr_record(pyme_fixtures):
    with tables.open_file(str(pyme_fixtures / "results.h5r")) as h5:
        pyme_dtype = h5.root.FitResults.dtype
    assert FIT_RESULTS_DTYPE == pyme_dtype
    assert FIT_RESULTS_DTYPE.descr == pyme_dtype.descr
    assert FIT_RESULTS_DTYPE.itemsize == 108


def test_fixture_series_matches_truth(pyme_fixtures, caplog):
    frames, md = _fixture_series(pyme_fixtures)
    truth = np.load(pyme_fixtures / "series_truth_nm.npy")
    with caplog.at_level(logging.DEBUG, logger="cluster.localisation"):
        res = localise_frames(frames.__getitem__, range(8), FlatMetadata(md))
    assert res.dtype == FIT_RESULTS_DTYPE
    assert any("candidates" in rec.getMessage() for rec in caplog.records)
    assert len(res) == len(truth) == 24                     # every spot, no extras
    pairs, _, _ = match_to_truth(res, truth, radius_nm=200.0)
    assert len(pairs) == 24
    fit = res["fitResults"][pairs[:, 0]]
    err = np.column_stack([fit["x0"], fit["y0"]]) - truth[pairs[:, 1], 1:3]
    assert np.abs(err).max() < 30.0
    assert np.sqrt(np.mean(err ** 2)) < 12.0
    assert np.all(np.abs(fit["sigma"] - 130) < 25)
    # ~1000 photons at 0.5 e-/ADU: peak ≈ 1000 / (2π·1.3²) photons ≈ 190 ADU
    assert np.all((fit["A"] > 120) & (fit["A"] < 280))
    errors = res["fitError"]
    assert np.all((errors["x0"] > 4) & (errors["x0"] < 15))
    assert np.all(errors["bx"] == -5000)
    assert np.all(res["resultCode"] == 0)
    assert np.all(np.abs(res["nchi2"] - 1) < 0.6)
    # background fitted on top of the subtracted background frames' level (~50 photons = 100 ADU)
    assert np.all(np.abs(res["subtractedBackground"] - 100) < 15)
    assert np.all(np.abs(res["fitResults"]["background"]) < 15)
    sl = res["slicesUsed"]
    x_px = res["fitResults"]["x0"] / 100
    assert np.all((sl["x"]["start"] <= x_px) & (x_px < sl["x"]["stop"]))
    assert np.all(sl["x"]["stop"] - sl["x"]["start"] <= 11) and np.all(sl["z"]["step"] == 1)


def test_start_at_and_no_spots(pyme_fixtures):
    frames, md = _fixture_series(pyme_fixtures)
    res = localise_frames(frames.__getitem__, range(8), {**md, "Analysis.StartAt": 5})
    assert sorted(set(res["tIndex"])) == [5, 6, 7] and len(res) == 9
    empty = localise_frames(frames.__getitem__, [1, 2], {**md, "Analysis.StartAt": 5})
    assert empty.dtype == FIT_RESULTS_DTYPE and len(empty) == 0
    flat = localise_frames(lambda i: np.full((32, 32), 200, np.uint16), [0, 1], md)
    assert len(flat) == 0


@pytest.mark.parametrize("module", ["LatGaussFitFR3D", "AstigGaussGPUFitFR", None])
def test_unsupported_fit_module(pyme_fixtures, module):
    frames, md = _fixture_series(pyme_fixtures)
    md = {k: v for k, v in md.items() if k != "Analysis.FitModule"}
    if module is not None:
        md["Analysis.FitModule"] = module
    with pytest.raises(LocalisationError, match="FitModule"):
        localise_frames(frames.__getitem__, [0], md)


def test_bad_metadata_is_a_clear_error(pyme_fixtures):
    frames, md = _fixture_series(pyme_fixtures)
    with pytest.raises(LocalisationError, match="voxelsize"):
        localise_frames(frames.__getitem__, [0], {**md, "voxelsize.x": 0})
    with pytest.raises(LocalisationError, match="ElectronsPerCount|electrons_per_count"):
        localise_frames(frames.__getitem__, [0], {**md, "Camera.ElectronsPerCount": "lots"})


def test_background_frame_ranges():
    assert list(bg_frame_indices(20, (-10, 0), laser_on=0)) == list(range(10, 20))
    assert list(bg_frame_indices(12, (-10, 0), laser_on=5)) == list(range(5, 12))
    assert list(bg_frame_indices(3, (-10, 0), laser_on=5)) == []
    assert list(bg_frame_indices(0, (-10, 0))) == []
    assert list(bg_frame_indices(10, (-5, 5))) == list(range(5, 15))


def test_camera_noise_model_follows_pyme_formula():
    cam = CameraModel(ad_offset=100, electrons_per_count=4.0, em_gain=50.0, read_noise=80.0,
                      noise_factor=1.41)
    data = np.array([0.0, 10.0, 1000.0])
    expected = np.sqrt(80.0 ** 2 + 1.41 ** 2 * (4.0 * 50.0 * np.maximum(data, 1) + 50.0 ** 2)) / 4
    np.testing.assert_allclose(cam.noise_sigma_adu(data), expected)
    np.testing.assert_allclose(cam.to_units(np.array([100.0, 100 + 50 * 1.41 ** 2 / 4])), [0, 1],
                               atol=1e-6)


def _crlb_x_nm(photons, background, gamma, subpixel):
    n = len(subpixel)
    theta = np.column_stack([np.full(n, photons), 10 + subpixel[:, 0], 10 + subpixel[:, 1],
                             np.full(n, 1.3), np.full(n, background)])
    cov = np.linalg.inv(fisher_information(theta, (21, 21), gamma))
    return 100.0 * np.sqrt(np.mean(np.concatenate([cov[:, 1, 1], cov[:, 2, 2]])))


@pytest.mark.parametrize("photons,background", [(1000, 20), (400, 50)])
def test_synthetic_frames_recall_precision_accuracy(photons, background):
    camera = SIMULATED_CAMERA
    frames, truth, md = simulate_frames(30, shape=(96, 96), emitters_per_frame=12,
                                        photons=photons, background=background, camera=camera,
                                        seed=7)
    res = localise_frames(lambda i: frames[i], range(30), md)
    pairs, n_loc, n_truth = match_to_truth(res, truth, radius_nm=200.0)
    assert len(pairs) / n_truth >= 0.98
    assert (n_loc - len(pairs)) / n_loc <= 0.01
    fit = res["fitResults"][pairs[:, 0]]
    err = np.column_stack([fit["x0"], fit["y0"]]) - truth[pairs[:, 1], 1:3]
    rmse = np.sqrt(np.mean(err ** 2))
    sub = truth[pairs[:, 1], 1:3] / 100.0
    crlb = _crlb_x_nm(photons, background, camera.read_noise ** 2, sub - np.round(sub))
    assert rmse < 1.25 * crlb, (rmse, crlb)
    assert np.abs(err.mean(axis=0)).max() < 0.3 * crlb       # unbiased
    # the reported 1-σ errors match the real scatter
    reported = np.sqrt(np.mean(res["fitError"]["x0"][pairs[:, 0]] ** 2))
    assert 0.8 < rmse / reported < 1.25
    # photons back from amplitude and σ: N = 2π σ² A, in photo-electrons (0.5 e-/ADU)
    n_est = 2 * np.pi * (fit["sigma"] / 100) ** 2 * fit["A"] * 0.5
    assert abs(np.median(n_est) / photons - 1) < 0.1


def test_emccd_camera_units_and_border_spots():
    camera = CameraModel(ad_offset=200.0, electrons_per_count=10.0, em_gain=100.0, read_noise=60.0,
                         noise_factor=1.41)
    frames, truth, md = simulate_frames(12, shape=(64, 64), emitters_per_frame=8, photons=1500,
                                        background=30, camera=camera, margin_px=0.0, seed=3)
    md = {**md, "Analysis.BGRange": [0, 0]}  # background estimated from each frame itself
    res = localise_frames(lambda i: frames[i], range(12), md)
    pairs, n_loc, n_truth = match_to_truth(res, truth, radius_nm=200.0)
    assert len(pairs) / n_truth >= 0.95 and n_loc - len(pairs) <= 1
    fit = res["fitResults"][pairs[:, 0]]
    err = np.column_stack([fit["x0"], fit["y0"]]) - truth[pairs[:, 1], 1:3]
    assert np.sqrt(np.mean(err ** 2)) < 25.0
    adu_per_photon = camera.em_gain / camera.electrons_per_count
    total_bg = res["fitResults"]["background"] + res["subtractedBackground"]
    assert abs(np.median(total_bg) / (30 * adu_per_photon) - 1) < 0.1
    # ROIs at the border are clipped to the frame
    sl = res["slicesUsed"]
    assert sl["x"]["start"].min() >= 0 and sl["x"]["stop"].max() <= 64


@pytest.mark.parametrize("indices", [[0, 1, 2, 3, 4, 5], [3, 9, 10, 25], [20, 21, 35, 36]])
@pytest.mark.parametrize("pct", [0.0, 0.5])
def test_background_stack_matches_direct_estimate(indices, pct):
    from cluster.localisation import FitSettings, _background_stack, _FrameCache

    rng = np.random.default_rng(5)
    raw = rng.poisson(80, size=(40, 16, 16)).astype(np.uint16)
    md = {"Analysis.FitModule": "LatGaussFitFR", "voxelsize.x": 0.1, "voxelsize.y": 0.1,
          "Analysis.BGRange": [-6, 0], "EstimatedLaserOnFrameNo": 2,
          "Analysis.PCTBackground": pct}
    settings = FitSettings.from_metadata(md)
    camera = CameraModel.from_metadata(md)
    cache = _FrameCache(lambda i: raw[i], camera)
    maps, rel_var = _background_stack(cache, indices, settings)
    for k, i in enumerate(indices):
        bg_idx = list(bg_frame_indices(i, (-6, 0), laser_on=2))
        if not bg_idx:
            assert rel_var[k] == 0 and maps[k].shape == (16, 16)
            continue
        stack = raw[bg_idx].astype(float)
        if pct:
            expected = np.percentile(stack, 50, axis=0)
        else:   # the mean of the pixels outside spots (here: outside noise peaks)
            clean, keep = without_spots(stack.astype(np.float32), camera.gamma)
            n_kept = keep.sum(axis=0)
            expected = np.where(n_kept > 0, clean.sum(axis=0) / np.maximum(n_kept, 1),
                                stack.mean(axis=0))
            assert n_kept.mean() > 0.99 * len(bg_idx)   # noise alone is hardly ever a spot
        np.testing.assert_allclose(maps[k], expected, rtol=1e-5)
        assert rel_var[k] > 0


def test_detection_keeps_one_pixel_of_a_plateau_and_border_spots():
    from cluster.localisation.detection import detect

    frames = np.zeros((1, 32, 32), np.float32)
    frames[0, 10, 10] = frames[0, 10, 11] = 500.0      # two equal pixels: one candidate
    frames[0, 0, 20] = 500.0                           # a spot on the border is found
    f, ix, iy = detect(frames, np.zeros_like(frames), np.ones(1, np.float32),
                       lambda f, x, y: np.ones(f.size, np.float32), threshold=1.0,
                       psf_sigma_px=1.3)
    found = sorted(zip(ix.tolist(), iy.tolist()))
    assert len(found) == 2 and found[0] == (0, 20) and found[1][0] == 10


def test_results_do_not_depend_on_batching(monkeypatch):
    import cluster.localisation as loc

    frames, _, md = simulate_frames(10, shape=(96, 96), emitters_per_frame=12, seed=7)
    whole = localise_frames(lambda i: frames[i], range(10), md)
    monkeypatch.setattr(loc, "FIT_CHUNK", 7)
    monkeypatch.setattr(loc, "BATCH_PIXELS", 3 * 96 * 96)
    pieces = localise_frames(lambda i: frames[i], list(range(10))[::-1], md)
    assert len(whole) == 120
    np.testing.assert_array_equal(whole, pieces)


def test_frames_through_pzf_files(tmp_path):
    from cluster.pzf import encode_frame

    frames, truth, md = simulate_frames(6, shape=(64, 64), emitters_per_frame=5, seed=11)
    for i, frame in enumerate(frames):
        (tmp_path / f"frame{i:05d}.pzf").write_bytes(encode_frame(frame, frame_num=i))
    res = localise_frames(
        lambda i: decode_frame((tmp_path / f"frame{i:05d}.pzf").read_bytes()), range(6), md)
    direct = localise_frames(lambda i: frames[i], range(6), md)
    np.testing.assert_array_equal(res, direct)
    pairs, n_loc, n_truth = match_to_truth(res, truth, radius_nm=200.0)
    assert len(pairs) == n_truth == n_loc == 30


def test_camera_metadata_round_trips():
    camera = CameraModel(ad_offset=200.0, electrons_per_count=10.0, em_gain=100.0, read_noise=60.0,
                         noise_factor=1.41)
    assert CameraModel.from_metadata(camera.metadata()) == camera


def test_a_wrong_psf_guess_is_corrected_from_the_bright_spots():
    frames, truth, md = simulate_frames(20, shape=(128, 128), emitters_per_frame=15,
                                        photons=1000, background=50, psf_sigma_nm=130.0, seed=4)
    md = {**md, "Analysis.BGRange": [0, 0]}

    def rmse(results):
        pairs, _, _ = match_to_truth(results, truth, radius_nm=200.0)
        fit = results["fitResults"][pairs[:, 0]]
        err = np.column_stack([fit["x0"], fit["y0"]]) - truth[pairs[:, 1], 1:3]
        return float(np.sqrt(np.mean(err ** 2)))

    right = localise_frames(lambda i: frames[i], range(20), md)
    wrong = localise_frames(lambda i: frames[i], range(20), {**md, "Analysis.PSFSigmaGuess": 90.0})
    assert abs(np.median(wrong["fitResults"]["sigma"]) - 130.0) < 6.0
    assert rmse(wrong) < 1.02 * rmse(right)


def test_blinking_spots_do_not_leak_into_the_temporal_background():
    """A spot on in half the background frames is left out of their mean (the plain mean, PYME's,
    would raise the background under it and dim the next frame's spot there)."""
    from cluster.localisation import FitSettings, _background_stack, _FrameCache

    rng = np.random.default_rng(8)
    spot = expected_image(np.array([[16.3, 15.8]]), 3000.0, 1.3, (32, 32))
    raw = np.stack([rng.poisson(20.0 + (spot if 3 <= t < 8 else 0.0 * spot)) for t in range(11)])
    md = {"Analysis.FitModule": "LatGaussFitFR", "voxelsize.x": 0.1, "voxelsize.y": 0.1,
          "Analysis.BGRange": [-10, 0]}
    settings = FitSettings.from_metadata(md)
    cache = _FrameCache(lambda i: raw[i].astype(np.uint16), CameraModel.from_metadata(md))
    maps, _ = _background_stack(cache, [10], settings)
    assert abs(maps[0][14:19, 14:19].mean() - 20.0) < 1.5
    assert raw[:10, 14:19, 14:19].mean() > 50       # what the plain mean would have given
