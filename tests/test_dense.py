"""Crowded frames: one localisation per emitter, none pulled between neighbours, hidden
neighbours found (cluster/localisation/neighbours.py)."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from cluster.localisation import localise_frames
from cluster.localisation.neighbours import debounce, neighbour_light, split_wide
from cluster.localisation.synthetic import SIMULATED_CAMERA, expected_image, match_to_truth

SHAPE = (96, 96)


def _dense_frames(n_frames, emitters, seed=0):
    rng = np.random.default_rng(seed)
    frames = np.empty((n_frames,) + SHAPE, np.uint16)
    truth = []
    for t in range(n_frames):
        pos = rng.uniform(3.0, SHAPE[0] - 4.0, (emitters, 2))
        frames[t] = SIMULATED_CAMERA.expose(expected_image(pos, 1000.0, 1.3, SHAPE,
                                                           background=50.0), rng)
        truth.append(np.column_stack([np.full(emitters, t), pos * 100.0]))
    md = {**SIMULATED_CAMERA.metadata(), "voxelsize.x": 0.1, "voxelsize.y": 0.1,
          "Analysis.FitModule": "LatGaussFitFR", "Analysis.PSFSigmaGuess": 130.0,
          "Analysis.BGRange": [0, 0]}
    return frames, np.concatenate(truth), md


def test_dense_frames_one_fit_per_emitter_and_hidden_neighbours_found():
    # 56 emitters on 96×96 px: the density of 400 per 256×256 frame
    frames, truth, md = _dense_frames(12, 56)
    results = localise_frames(lambda i: frames[i], range(len(frames)), md)
    pairs, n_loc, n_truth = match_to_truth(results, truth, radius_nm=200.0)
    recall, false = len(pairs) / n_truth, (n_loc - len(pairs)) / n_loc
    assert recall >= 0.90 and false <= 0.03, (recall, false)
    for t in range(len(frames)):
        rows = results[results["tIndex"] == t]
        xy = np.column_stack([rows["fitResults"]["x0"], rows["fitResults"]["y0"]])
        assert not cKDTree(xy).query_pairs(150.0), "two localisations of one emitter"
    # Analysis.DebounceRadius (px) is honoured: no two fits of a frame closer than it
    wide = localise_frames(lambda i: frames[i], range(3), {**md, "Analysis.DebounceRadius": 4.0})
    for t in range(3):
        rows = wide[wide["tIndex"] == t]
        xy = np.column_stack([rows["fitResults"]["x0"], rows["fitResults"]["y0"]])
        assert len(rows) > 30 and not cKDTree(xy).query_pairs(400.0)


def test_debounce_keeps_the_brightest_of_close_fits_per_frame():
    f = np.array([0, 0, 0, 1])
    x = np.array([10.0, 11.0, 20.0, 10.5])
    y = np.array([10.0, 10.5, 20.0, 10.0])
    keep = debounce(f, x, y, brightness=np.array([5.0, 9.0, 1.0, 1.0]), radius=1.5)
    assert keep.tolist() == [False, True, True, True]
    assert debounce(f, x, y, np.ones(4), radius=0).all()


def test_neighbour_light_and_split_of_a_wide_fit():
    half = 5
    # two fits in frame 0, three pixels apart, one far away in frame 1
    theta = np.array([[1000.0, 5.0, 5.0, 1.3, 10.0], [500.0, 5.2, 4.9, 1.3, 10.0],
                      [800.0, 5.0, 5.0, 1.3, 10.0]])
    f, ix, iy = np.array([0, 0, 1]), np.array([20, 23, 20]), np.array([20, 20, 20])
    light, has = neighbour_light(theta, f, ix, iy, half, reach=9.0)
    assert has.tolist() == [True, True, False]
    assert abs(light[0].sum() - 500.0) < 60 and abs(light[1].sum() - 1000.0) < 150
    assert light[2].sum() == 0
    peak = np.unravel_index(np.argmax(light[0]), light[0].shape)
    assert peak == (8, 5)          # the neighbour's light sits 3 px along x in the ROI
    # two spots 3 px apart along y, fitted as one wide spot: split along y
    size = 2 * half + 1
    excess = expected_image(np.array([[5.0, 3.5], [5.0, 6.5]]), 500.0, 1.3, (size, size))
    wide = np.array([[1000.0, 5.0, 5.0, np.hypot(1.3, 1.5), 0.0]])
    pair = split_wide(wide, excess[None], 1.3)
    ys = sorted(pair[:, 0, 2])
    assert np.allclose(pair[:, 0, 1], 5.0, atol=0.05)
    assert abs(ys[0] - 3.5) < 0.2 and abs(ys[1] - 6.5) < 0.2
