"""The fit's analytic derivatives against central finite differences.

A wrong Jacobian or Hessian would not break the fit outright (a Newton step that does not go uphill
falls back to a damped scoring step), only slow it and bias it, so they are checked directly here:
the vectorised model and Jacobian (:func:`model_and_jacobian`, used for the Fisher information and
the Cramér–Rao bounds) and the per-ROI likelihood, gradient, Fisher and observed information the
compiled fit uses (:func:`_evaluate`).
"""
from __future__ import annotations

import numpy as np
import pytest

from cluster.localisation.fitting import (
    N_PARAMS,
    _evaluate,
    _model_only,
    fisher_information,
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


def _evaluated(theta, data, gamma, mask=None):
    """``(loglik, χ², grad, fisher, observed information)`` of :func:`_evaluate` for each ROI."""
    w, h = SHAPE
    out = []
    for t, d in zip(theta, data):
        m = np.ones(w * h) if mask is None else mask.astype(float)
        grad, fisher, hess = np.empty(N_PARAMS), np.empty((5, 5)), np.empty((5, 5))
        ll, chi2 = _evaluate(np.asarray(t, float), d * m + 0.0, m, np.full(w * h, float(gamma)),
                             w, h, np.empty((6, w)), np.empty((6, h)), True, grad, fisher, hess)
        out.append((ll, chi2, grad, fisher, hess))
    return [np.array(v) for v in zip(*out)]


def test_jacobian_matches_finite_differences():
    mu, jac = model_and_jacobian(THETAS, SHAPE)
    assert np.allclose(mu.reshape(len(THETAS), -1), _model_only(THETAS, SHAPE))
    for k in range(N_PARAMS):
        h = STEPS[k]
        numeric = (_model_only(_perturbed(THETAS, k, h), SHAPE)
                   - _model_only(_perturbed(THETAS, k, -h), SHAPE)) / (2 * h)
        scale = np.abs(numeric).max(axis=1, keepdims=True)
        assert np.abs(jac[:, k] - numeric).max() <= 1e-6 * scale.max(), f"parameter {k}"
        assert np.allclose(jac[:, k], numeric, rtol=1e-5, atol=1e-7 * scale.max())


def test_fit_uses_the_same_model_and_fisher_information():
    """The compiled fit's per-pixel sums agree with the vectorised model and Jacobian."""
    gamma = 2.5
    data = _model_only(THETAS, SHAPE) + gamma + 3.0
    ll, chi2, _, fisher, _ = _evaluated(THETAS, data, gamma)
    mu = _model_only(THETAS, SHAPE) + gamma
    np.testing.assert_allclose(ll, (data * np.log(mu) - mu).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(chi2, ((data - mu) ** 2 / mu).sum(axis=1), rtol=1e-12)
    expected = fisher_information(THETAS, SHAPE, gamma)
    d = np.sqrt(np.einsum("npp->np", expected))
    assert (np.abs(fisher - expected) / (d[:, :, None] * d[:, None, :])).max() < 1e-10


@pytest.mark.parametrize("gamma", [0.0, 2.5])
def test_loglikelihood_gradient_and_hessian_match_finite_differences(gamma):
    rng = np.random.default_rng(3)
    truth = THETAS + [0.0, 0.4, -0.3, 0.1, 0.0]         # data not at the model: r ≠ 0
    data = rng.poisson(_model_only(truth, SHAPE) + gamma).astype(np.float64)
    ll, _, grad, _, observed = _evaluated(THETAS, data, gamma)
    np.testing.assert_allclose(ll, _loglik(THETAS, data, gamma), rtol=1e-12)
    hess = -observed

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


def test_masked_pixels_do_not_count():
    rng = np.random.default_rng(5)
    data = rng.poisson(_model_only(THETAS, SHAPE) + 1.0).astype(np.float64)
    mask = np.ones(SHAPE[0] * SHAPE[1], bool)
    mask[:SHAPE[1] * 3] = False                          # the first three rows off the frame
    ll, _, grad, _, _ = _evaluated(THETAS, data, 1.0, mask)
    mu = _model_only(THETAS, SHAPE) + 1.0
    np.testing.assert_allclose(ll, ((data * np.log(mu) - mu) * mask).sum(axis=1), rtol=1e-12)
    _, jac = model_and_jacobian(THETAS, SHAPE)
    np.testing.assert_allclose(grad, np.matmul(jac, ((data / mu - 1) * mask)[:, :, None])[:, :, 0],
                               rtol=1e-9, atol=1e-9)


def test_a_wrong_curvature_term_is_caught():
    """The Hessian check above can fail: without the curvature term (Gauss–Newton's
    approximation) the observed information is off by far more than its tolerance."""
    rng = np.random.default_rng(4)
    data = rng.poisson(_model_only(THETAS + [0, 0.5, 0.5, 0.2, 0], SHAPE)).astype(np.float64)
    _, _, _, _, observed = _evaluated(THETAS, data, 0.0)
    mu, jac = model_and_jacobian(THETAS, SHAPE)
    mu = mu.reshape(len(THETAS), -1)
    without = np.matmul(jac * (data / mu ** 2)[:, None, :], jac.transpose(0, 2, 1))
    d = np.sqrt(np.abs(np.einsum("npp->np", observed)))
    assert (np.abs(without - observed) / (d[:, :, None] * d[:, None, :])).max() > 1e-2
