"""The incremental render (rules.render): what it keeps up to date batch by batch equals what a
whole-canvas computation gives, and it reuses its buffers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from rules.render import (
    DensityCanvas,
    colourise,
    contrast_levels,
    gaussian_kernel,
    packed_lut,
    pooled_shape,
)

LUT = np.stack([np.arange(256), 255 - np.arange(256), np.arange(256) // 2], axis=1).astype(np.uint8)


def full_blur(canvas: DensityCanvas) -> np.ndarray:
    return ndimage.gaussian_filter(canvas.counts, canvas.sigma_px, truncate=3.0)


def batch(rng, n, extent=3000.0):
    """Localisations all over the field, some on its edges (where the blur is reflected), some
    NaN, negative or far outside."""
    x, y = rng.uniform(0, extent, n), rng.uniform(0, extent, n)
    x[:5], y[5:10] = 0.5, extent - 1.0
    x[10], y[11], x[12] = np.nan, -3.0, np.inf
    return x, y


def test_gaussian_kept_up_by_splats_equals_the_whole_blur():
    rng = np.random.default_rng(3)
    canvas = DensityCanvas(10.0)
    counts = np.zeros((512, 512))
    for step in range(6):
        x, y = batch(rng, 2000, extent=5120.0)
        canvas.add(x, y)
        keep = np.isfinite(x) & (x >= 0) & (y >= 0) & (x < 5120) & (y < 5120)
        np.add.at(counts, ((y[keep] / 10).astype(int), (x[keep] / 10).astype(int)), 1)
        image = canvas.image("gaussian", 23.0 + 0.5 * step)  # the precision drifts a little
        assert canvas.counts.shape == (512, 512)
        assert np.array_equal(canvas.counts, counts)
        np.testing.assert_allclose(image, full_blur(canvas), atol=1e-5)
    assert canvas.total == counts.sum() and canvas.outside == 6 * 3
    assert canvas.rebuilds == 1 and canvas.sigma_px == 2.3  # the rest were splats of new points
    assert image.sum() == pytest.approx(canvas.total, rel=1e-4)  # each splat adds one


def test_blur_rebuilt_when_the_precision_moves_or_the_canvas_grows():
    rng = np.random.default_rng(4)
    canvas = DensityCanvas(10.0)
    canvas.add(*batch(rng, 500, extent=2000.0))
    canvas.image("gaussian", 20.0)
    canvas.image("gaussian", 22.0)  # within 15 %: the same blur
    assert (canvas.rebuilds, canvas.sigma_px) == (1, 2.0)
    canvas.image("gaussian", 30.0)
    assert (canvas.rebuilds, canvas.sigma_px) == (2, 3.0)
    canvas.add(np.array([4000.0]), np.array([100.0]))  # grows to 512 wide
    image = canvas.image("gaussian", 30.0)
    assert canvas.rebuilds == 3 and image.shape == (256, 512)
    np.testing.assert_allclose(image, full_blur(canvas), atol=1e-5)


def test_a_large_batch_blurs_the_whole_canvas_instead_of_splatting():
    rng = np.random.default_rng(5)
    canvas = DensityCanvas(10.0)
    canvas.add(*batch(rng, 100))
    canvas.image("gaussian", 40.0)
    canvas.add(*batch(rng, 200_000))  # 200,000 splats of 25×25 cost more than one blur
    image = canvas.image("gaussian", 40.0)
    assert canvas.rebuilds == 2
    np.testing.assert_allclose(image, full_blur(canvas), atol=1e-4)


def test_wild_fits_neither_coarsen_the_render_nor_grow_it_without_bound():
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0, 25_600, 5000), rng.uniform(0, 25_600, 5000)
    x[0], y[1] = 5e7, 3e9  # two fits gone wild, in the very first batch
    canvas = DensityCanvas.for_points(x, y)
    assert canvas.pixel_nm == pytest.approx(25_600 * 1.05 / 2048, rel=0.01)  # the field's, ~13 nm
    canvas.add(x, y)
    assert canvas.total == 4998 and canvas.outside == 2
    assert canvas.counts.shape == (2048, 2048)
    canvas.add(np.array([30_000.0, 2e6]), np.array([100.0, 100.0]))  # the field's edge grows it,
    assert canvas.counts.shape == (2048, 2304) and canvas.outside == 3  # a wild fit does not
    canvas.add(np.full(1, 1e12), np.full(1, 1e12))
    assert max(canvas.counts.shape) <= 2 * 2048 + 256
    empty = DensityCanvas.for_points(np.array([np.nan]), np.array([-1.0]))
    assert empty.pixel_nm == 10.0


def test_canvas_buffers_are_reused_between_updates():
    rng = np.random.default_rng(6)
    canvas = DensityCanvas(10.0)
    canvas.add(*batch(rng, 1000, extent=2500.0))
    counts, blurred = canvas.counts, canvas.image("gaussian", 15.0)
    for _ in range(3):
        canvas.add(*batch(rng, 1000, extent=2500.0))
        assert canvas.counts is counts and canvas.image("gaussian", 15.0) is blurred
        assert canvas.image("histogram") is counts


def test_gaussian_kernel_is_scipys():
    for sigma in (0.5, 1.3, 4.0):
        kernel = gaussian_kernel(sigma)
        delta = np.zeros(41)
        delta[20] = 1.0
        blurred = ndimage.gaussian_filter1d(delta, sigma, truncate=3.0)
        r = len(kernel) // 2
        np.testing.assert_allclose(blurred[20 - r:21 + r], kernel, rtol=1e-12)
        assert blurred[:20 - r].sum() == 0 == blurred[21 + r:].sum()


def reference_colours(image, lut, levels):
    """Colouring written the plain numpy way: index = clip((value - low) * scale) in float32."""
    low, high = levels
    scale = (len(lut) - 1) / (high - low) if high > low else 0.0
    index = np.clip((image.astype(np.float32) - np.float32(low)) * np.float32(scale),
                    0, len(lut) - 1).astype(np.intp)
    return packed_lut(lut)[index], index


@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (3, 2)])
def test_colourise_and_overviews_equal_colouring_each_block_maximum(shape):
    rng = np.random.default_rng(7)
    image = (rng.gamma(0.5, 2.0, shape) * (rng.random(shape) < 0.3)).astype(np.float32)
    image[0, 0] = -1.0
    levels = contrast_levels(image, 95.0)
    out = np.zeros(shape, np.uint32)
    overviews = {f: np.zeros(pooled_shape(shape, f), np.uint32) for f in (2, 4)}
    result = colourise(image, LUT, levels, out=out, overviews=overviews)
    expected, _ = reference_colours(image, LUT, levels)
    assert result is out and np.array_equal(out, expected)
    for factor, pooled in overviews.items():
        h, w = pooled_shape(shape, factor)
        blocks = image[:h * factor, :w * factor].reshape(h, factor, w, factor).max(axis=(1, 3))
        assert np.array_equal(pooled, reference_colours(blocks, LUT, levels)[0])


def test_overview_keeps_thin_lines_and_dark_nan():
    image = np.zeros((8, 8), np.float32)
    image[:, 3] = 1.0  # a one-pixel line that sampling every 4th column would miss
    image[7, 7] = np.nan
    quarter = np.zeros((2, 2), np.uint32)
    full = colourise(image, LUT, (0.0, 1.0), overviews={4: quarter})
    top, bottom = packed_lut(LUT)[-1], packed_lut(LUT)[0]
    assert quarter.tolist() == [[top, bottom], [top, bottom]] and full[7, 7] == bottom
    with pytest.raises(ValueError, match="shape"):
        colourise(image, LUT, (0.0, 1.0), overviews={2: quarter})


def test_contrast_levels_percentile_of_the_non_empty_pixels():
    rng = np.random.default_rng(8)
    sparse = np.zeros((300, 300), np.float32)
    sparse[rng.integers(0, 300, 500), rng.integers(0, 300, 500)] = rng.random(500) + 0.1
    values = sparse[sparse > 0]
    assert contrast_levels(sparse, 90.0) == (0.0, pytest.approx(np.percentile(values, 90.0)))
    assert contrast_levels(sparse, 100.0)[1] == pytest.approx(values.max())
    dense = rng.gamma(2.0, 1.0, (1000, 1000)).astype(np.float32)  # more than the sample
    exact = np.percentile(dense, 99.0)
    assert contrast_levels(dense, 99.0, sample=50_000)[1] == pytest.approx(exact, rel=0.03)
    assert contrast_levels(np.zeros((4, 4), np.float32)) == (0.0, 1.0)
