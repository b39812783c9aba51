"""The fit's analytic derivatives against central finite differences.

A wrong Jacobian or Hessian would not break the fit outright (a Newton step that does not go uphill
falls back to a damped scoring step), only slow it and bias it, so they are checked directly here.
"""
from __future__ import annotations

import numpy as np
import pytest

from cluster.localisation.fitting import (
    N_PARAMS,
    _curvature_correction,
    _model_only,
    _model_terms,
    model_and_jacobian,
)

SHAPE = (11, 11)
#: Parameters (N, x, y, s, b) away from any symmetry: off-centre, σ not 1, a sizeable background.
THETAS = np.array([[800.0, 5.3, 4.6, 1.35, 12.0],
                   [150.0, 3.9, 6.8, 0.9, 3.0],
                   [3000.0, 7.1, 5.05, 1.8, 40.0]])
#: Finite-difference step per parameter (absolute, in the parameter's unit).
STEPS = np.array([1e-2, 1e-5, 1e-5, 1e-5, 1e-4])


def _loglik(theta, data, gamma):
    mu = _model_only(theta, SHAPE) + gamma
    return (data * np.log(mu) - mu).sum(axis=1)


def _perturbed(theta, k, h):
    out = theta.copy()
    out[:, k] += h
    return out


def test_jacobian_matches_finite_differences():
    mu, jac = model_and_jacobian(THETAS, SHAPE)
    _, jac_terms, _, _ = _model_terms(THETAS, SHAPE)
    np.testing.assert_array_equal(jac, jac_terms)          # one Jacobian, two callers
    assert np.allclose(mu.reshape(len(THETAS), -1), _model_only(THETAS, SHAPE))
    for k in range(N_PARAMS):
        h = STEPS[k]
        numeric = (_model_only(_perturbed(THETAS, k, h), SHAPE)
                   - _model_only(_perturbed(THETAS, k, -h), SHAPE)) / (2 * h)
        scale = np.abs(numeric).max(axis=1, keepdims=True)
        assert np.abs(jac[:, k] - numeric).max() <= 1e-6 * scale.max(), f"parameter {k}"
        assert np.allclose(jac[:, k], numeric, rtol=1e-5, atol=1e-7 * scale.max())


@pytest.mark.parametrize("gamma", [0.0, 2.5])
def test_loglikelihood_gradient_and_hessian_match_finite_differences(gamma):
    rng = np.random.default_rng(3)
    truth = THETAS + [0.0, 0.4, -0.3, 0.1, 0.0]         # data not at the model: r ≠ 0
    data = rng.poisson(_model_only(truth, SHAPE) + gamma).astype(np.float64)
    mu, jac, ax, ay = _model_terms(THETAS, SHAPE)
    mu = mu + gamma
    ratio = data / mu
    # the analytic gradient and Hessian of the log-likelihood, as fit_rois builds them
    grad = np.matmul(jac, (ratio - 1.0)[:, :, None])[:, :, 0]
    observed = np.matmul(jac * (ratio / mu)[:, None, :], jac.transpose(0, 2, 1))
    hess = -(observed - _curvature_correction(ratio - 1.0, THETAS, ax, ay, SHAPE))

    num_grad = np.empty_like(grad)
    num_hess = np.empty_like(hess)
    for k in range(N_PARAMS):
        hk = STEPS[k]
        num_grad[:, k] = (_loglik(_perturbed(THETAS, k, hk), data, gamma)
                          - _loglik(_perturbed(THETAS, k, -hk), data, gamma)) / (2 * hk)
        for j in range(N_PARAMS):
            hj = STEPS[j] * 10        # second differences need a larger step

            def g(t):
                p = _perturbed(_perturbed(THETAS, k, t[0]), j, t[1])
                return _loglik(p, data, gamma)
            num_hess[:, k, j] = (g((hk * 10, hj)) - g((hk * 10, -hj)) - g((-hk * 10, hj))
                                 + g((-hk * 10, -hj))) / (4 * hk * 10 * hj)
    assert np.allclose(grad, num_grad, rtol=1e-4, atol=1e-4 * np.abs(num_grad).max())
    assert np.allclose(hess, hess.transpose(0, 2, 1))
    for i in range(len(THETAS)):
        # compare in the scale of each entry's diagonal (entries differ by orders of magnitude)
        d = np.sqrt(np.abs(np.diag(num_hess[i])))
        rel = np.abs(hess[i] - num_hess[i]) / np.outer(d, d)
        assert rel.max() < 1e-5, (i, rel.max())


def test_a_wrong_curvature_term_is_caught():
    """The Hessian check above can fail: dropping the curvature correction breaks it."""
    rng = np.random.default_rng(4)
    data = rng.poisson(_model_only(THETAS + [0, 0.5, 0.5, 0.2, 0], SHAPE)).astype(np.float64)
    mu, jac, ax, ay = _model_terms(THETAS, SHAPE)
    ratio = data / mu
    without = -np.matmul(jac * (ratio / mu)[:, None, :], jac.transpose(0, 2, 1))
    with_c = without + _curvature_correction(ratio - 1.0, THETAS, ax, ay, SHAPE)
    d = np.sqrt(np.abs(np.einsum("npp->np", with_c)))
    assert (np.abs(without - with_c) / (d[:, :, None] * d[:, None, :])).max() > 1e-2
