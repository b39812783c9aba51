"""The simulator's fast frames have the camera model's statistics: background pixels drawn from
their exact table, emitters rendered in windows, against ``CameraModel.expose`` on the whole
expected image (the reference) and against the model's mean and variance."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cluster.frame_render import FrameRenderer, _render_windows, adu_table, poisson_table, psf_half_width
from cluster.localisation.camera import CameraModel
from cluster.localisation.synthetic import SIMULATED_CAMERA, expected_image, simulate_scmos_maps
from cluster.simulator import EMCCD_CAMERA

SHAPE = (64, 64)


def _chi2_same(a: np.ndarray, b: np.ndarray) -> float:
    """p-value that two integer samples come from one distribution (bins with enough counts)."""
    lo, hi = np.percentile(np.concatenate([a, b]), [0.5, 99.5]).astype(int)
    edges = np.concatenate([[-np.inf], np.arange(lo, hi + 1) + 0.5, [np.inf]])
    ca, _ = np.histogram(a, edges)
    cb, _ = np.histogram(b, edges)
    return stats.chi2_contingency(np.stack([ca, cb]) + 1)[1]


@pytest.mark.parametrize("camera", [SIMULATED_CAMERA,
                                    CameraModel(ad_offset=50.0, electrons_per_count=2.0, read_noise=0.0),
                                    CameraModel(ad_offset=100.0, electrons_per_count=1.3, read_noise=4.0),
                                    EMCCD_CAMERA])
@pytest.mark.parametrize("background", [0.5, 20.0, 200.0])
def test_background_table_is_the_camera_model(camera, background):
    table = adu_table(camera, background)
    assert table.pmf.sum() == pytest.approx(1.0)
    # the table's own moments against the model: offset + λ/g, (λ + σ²)/g² (+ rounding's 1/12)
    values, pmf = table.values, table.pmf
    mean = values @ pmf
    var = (values - mean) ** 2 @ pmf
    g, gain = camera.electrons_per_count, camera.em_gain
    excess = 2.0 if gain > 1 else 1.0
    if camera.read_noise > 0:   # without read noise, rounding half-integers to even shifts these
        assert mean == pytest.approx(camera.ad_offset + gain * background / g, abs=0.02)
        model_var = (excess * gain ** 2 * background + camera.read_noise ** 2) / g ** 2 + 1 / 12
        assert var == pytest.approx(model_var, abs=0.02, rel=1e-3)
    # draws against draws of CameraModel.expose (the reference)
    rng = np.random.default_rng(1)
    drawn = table.draw(rng, 200_000)
    reference = camera.expose(np.full(200_000, background), rng).astype(np.int64)
    assert _chi2_same(drawn, reference) > 1e-3


def test_poisson_table_draws_poisson():
    rng = np.random.default_rng(2)
    drawn = poisson_table(37.5).draw(rng, 400_000)
    assert drawn.mean() == pytest.approx(37.5, abs=0.06)
    assert drawn.var() == pytest.approx(37.5, rel=0.02)
    assert _chi2_same(drawn, rng.poisson(37.5, 400_000)) > 1e-3


def test_windowed_psf_is_the_full_frame_model():
    rng = np.random.default_rng(3)
    centres = np.vstack([rng.uniform(5, 58, (20, 2)), [[0.2, 30.0], [63.4, 63.9], [-1.0, 10.0]]])
    photons = rng.uniform(200, 5000, len(centres))
    sigma = 1.3
    half = psf_half_width(sigma)
    extra = np.zeros(SHAPE)
    mask = np.zeros(SHAPE, bool)
    touched = np.empty(len(centres) * (2 * half + 1) ** 2, np.int64)
    count = _render_windows(centres, photons, sigma, half, extra, mask, touched)
    full = expected_image(centres, photons, sigma, SHAPE)
    # each emitter loses < 1e-4 of its photons outside its window
    assert np.abs(extra - full).sum() < 1e-4 * photons.sum()
    assert count == mask.sum() == len(np.unique(touched[:count]))
    assert np.array_equal(np.sort(touched[:count]), np.flatnonzero(mask))


def _frames(renderer, centres, photons, n, seed):
    rng = np.random.default_rng(seed)
    return np.stack([renderer.render(centres, photons, rng) for _ in range(n)]).astype(np.float64)


@pytest.mark.parametrize("kind", ["uniform", "maps", "emccd"])
def test_frames_have_the_model_mean_and_variance(kind):
    """Pixel mean and variance over 600 frames, under and away from emitters, against the model:
    E[ADU] = offset + gain·μ/g, Var = (F²·gain²·μ + σ²)/g² with F² = 2 for EM gain (+1/12)."""
    maps = simulate_scmos_maps(SHAPE, np.random.default_rng(4)) if kind == "maps" else None
    camera = EMCCD_CAMERA if kind == "emccd" else SIMULATED_CAMERA
    background, sigma = 30.0, 1.3
    renderer = FrameRenderer(SHAPE, camera, background, sigma, **({"maps": maps} if maps else {}))
    centres = np.array([[20.3, 20.6], [40.0, 44.5], [0.4, 63.2]])
    photons = np.array([2000.0, 800.0, 1500.0])
    frames = _frames(renderer, centres, photons, 600, seed=5)
    mu = expected_image(centres, photons, sigma, SHAPE, background=background)
    g, gain = camera.electrons_per_count, camera.em_gain
    offset = maps.dark if maps is not None else camera.ad_offset
    read_var = maps.variance if maps is not None else camera.read_noise ** 2
    excess = 2.0 if gain > 1 else 1.0
    mean_model = offset + gain * mu / g
    var_model = (excess * gain ** 2 * mu + read_var) / g ** 2 + 1 / 12
    n = len(frames)
    # z-scores of each pixel's sample mean; the variance ratio is ~ normal with sd sqrt(2/n) (a
    # little wider for EM gain's skewed output)
    z = (frames.mean(0) - mean_model) / np.sqrt(var_model / n)
    assert abs(z.mean()) < 0.1 and 0.9 < z.std() < 1.1
    ratio = frames.var(0, ddof=1) / var_model
    assert abs(ratio.mean() - 1) < 0.01
    under = mu > background + 20      # the pixels that carry an emitter's light
    assert under.sum() > 20
    assert abs(ratio[under].mean() - 1) < 0.05 and abs(z[under].mean()) < 0.3


def test_frames_match_expose_on_the_whole_image():
    """Same distribution as CameraModel.expose over the whole expected image, pixel for pixel."""
    renderer = FrameRenderer(SHAPE, SIMULATED_CAMERA, 50.0, 1.3)
    centres = np.array([[32.2, 31.7]])
    photons = np.array([1000.0])
    fast = _frames(renderer, centres, photons, 400, seed=6)
    mu = expected_image(centres, photons, 1.3, SHAPE, background=50.0)
    rng = np.random.default_rng(7)
    reference = np.stack([SIMULATED_CAMERA.expose(mu, rng) for _ in range(400)]).astype(np.float64)
    for x, y in [(32, 32), (33, 32), (34, 30), (10, 50)]:
        assert _chi2_same(fast[:, x, y], reference[:, x, y]) > 1e-3
    assert stats.ks_2samp(fast.sum((1, 2)), reference.sum((1, 2))).pvalue > 1e-3


def test_same_seed_same_frames():
    renderer = FrameRenderer(SHAPE, SIMULATED_CAMERA, 10.0, 1.3)
    centres, photons = np.array([[5.0, 6.0]]), np.array([500.0])
    a = renderer.render(centres, photons, np.random.default_rng(8))
    b = renderer.render(centres, photons, np.random.default_rng(8))
    assert a.dtype == np.uint16 and a.shape == SHAPE and np.array_equal(a, b)
