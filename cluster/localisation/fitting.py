"""Vectorised maximum-likelihood fit of a pixel-integrated 2-D Gaussian with flat background.

Model per ROI pixel ``(i, j)`` (ROI coordinates, pixel centres at integers):
``μ = N · Ex(i) · Ey(j) + b`` with ``Ex(i) = Φ((i+½−x)/s) − Φ((i−½−x)/s)``.  Parameters
``θ = (N, x, y, s, b)``: photon count, centre (px), PSF σ (px), background per pixel.  The data
``d`` (effective photon units, see :mod:`.camera`) plus the read-noise variance ``gamma`` (one
value, or one per pixel for an sCMOS camera: Huang et al., Nat. Methods 2013) are treated as
Poisson with mean ``μ + gamma``; the log-likelihood is maximised by Fisher scoring
(iteratively re-weighted Gauss–Newton with Levenberg damping), for all ROIs at once.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import erf

N_PARAMS = 5
#: Width of the prior on the PSF σ, relative to the guess (see :func:`fit_rois`).
SIGMA_PRIOR_REL = 0.25
_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _axis_terms(centre: np.ndarray, s: np.ndarray, size: int, second: bool = False):
    """Per-axis integrated PSF ``E`` and its derivatives along one axis, each ``(n, size)``.

    Returns ``(E, dE/dc, dE/ds)``, plus ``(d²E/dc², d²E/dc ds, d²E/ds²)`` when ``second``.
    With ``u = (edge − c)/s`` at the pixel edges and φ the normal density:
    ``dE/dc = −Δφ/s``, ``dE/ds = −Δ(uφ)/s``, ``d²E/dc² = −Δ(uφ)/s²``,
    ``d²E/dc ds = −Δ((u²−1)φ)/s²``, ``d²E/ds² = −Δ((u³−2u)φ)/s²`` (Δ: upper minus lower edge).
    """
    edges = np.arange(size + 1, dtype=np.float64) - 0.5            # pixel edges
    inv_s = 1.0 / s[:, None]
    u = (edges[None, :] - centre[:, None]) * inv_s                  # (n, size+1)
    cdf = 0.5 * erf(u / _SQRT2)
    pdf = _INV_SQRT2PI * np.exp(-0.5 * u * u)
    upd = u * pdf
    e = cdf[:, 1:] - cdf[:, :-1]
    de_dc = (pdf[:, :-1] - pdf[:, 1:]) * inv_s
    de_ds = (upd[:, :-1] - upd[:, 1:]) * inv_s
    if not second:
        return e, de_dc, de_ds
    inv_s2 = inv_s * inv_s
    u2 = u * u
    t_cs = (u2 - 1.0) * pdf
    t_ss = (u2 - 2.0) * upd
    d2_cc = de_ds * inv_s
    d2_cs = (t_cs[:, :-1] - t_cs[:, 1:]) * inv_s2
    d2_ss = (t_ss[:, :-1] - t_ss[:, 1:]) * inv_s2
    return e, de_dc, de_ds, d2_cc, d2_cs, d2_ss


def model_and_jacobian(theta: np.ndarray, shape: tuple[int, int]):
    """Expected counts ``(n, W, H)`` and Jacobian ``(n, 5, W·H)`` for parameters ``(n, 5)``."""
    n_ph, x, y, s, b = theta.T
    ex, dex, dsx = _axis_terms(x, s, shape[0])
    ey, dey, dsy = _axis_terms(y, s, shape[1])
    psf = ex[:, :, None] * ey[:, None, :]
    mu = n_ph[:, None, None] * psf + b[:, None, None]
    jac = np.empty((theta.shape[0], N_PARAMS, shape[0], shape[1]))
    jac[:, 0] = psf
    jac[:, 1] = n_ph[:, None, None] * dex[:, :, None] * ey[:, None, :]
    jac[:, 2] = n_ph[:, None, None] * ex[:, :, None] * dey[:, None, :]
    jac[:, 3] = n_ph[:, None, None] * (dsx[:, :, None] * ey[:, None, :]
                                       + ex[:, :, None] * dsy[:, None, :])
    jac[:, 4] = 1.0
    return mu, jac.reshape(theta.shape[0], N_PARAMS, -1)


def fisher_information(theta: np.ndarray, shape: tuple[int, int], gamma,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """Fisher information ``(n, 5, 5)`` of the model at ``theta`` (Poisson + read noise;
    ``gamma`` one value or per pixel, ``(n, W·H)``)."""
    mu, jac = model_and_jacobian(np.atleast_2d(theta), shape)
    w = 1.0 / np.maximum(mu.reshape(mu.shape[0], -1) + gamma, 1e-6)
    if weights is not None:
        w = w * weights.reshape(w.shape)
    return np.matmul(jac * w[:, None, :], jac.transpose(0, 2, 1))


def initial_guess(rois: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Starting parameters from ROI border background and a centroid of the excess."""
    n, w, h = rois.shape
    border = np.zeros((w, h), bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    bmask = mask & border
    b0 = (rois * bmask).sum(axis=(1, 2)) / np.maximum(bmask.sum(axis=(1, 2)), 1)
    b0 = np.maximum(b0, 0.01)
    excess = np.clip(rois - b0[:, None, None], 0, None) * mask
    n0 = np.maximum(excess.sum(axis=(1, 2)), 1.0)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # centroid over the central 5×5, which holds the candidate's peak
    core = excess[:, int(cx) - 2:int(cx) + 3, int(cy) - 2:int(cy) + 3]
    tot = np.maximum(core.sum(axis=(1, 2)), 1e-9)
    off = np.arange(-2, 3, dtype=np.float64)
    x0 = cx + (core.sum(axis=2) * off).sum(axis=1) / tot
    y0 = cy + (core.sum(axis=1) * off).sum(axis=1) / tot
    return np.stack([n0, x0, y0, np.full(n, sigma_px), b0], axis=1)


def _model_terms(theta: np.ndarray, shape: tuple[int, int]):
    """Model, Jacobian ``(n, 5, W·H)`` and the per-axis second-derivative vectors."""
    n_ph, x, y, s, b = theta.T
    ax = _axis_terms(x, s, shape[0], second=True)
    ay = _axis_terms(y, s, shape[1], second=True)
    ex, dex, dsx = ax[:3]
    ey, dey, dsy = ay[:3]
    psf = ex[:, :, None] * ey[:, None, :]
    nn = n_ph[:, None, None]
    mu = nn * psf + b[:, None, None]
    jac = np.empty((theta.shape[0], N_PARAMS, shape[0], shape[1]))
    jac[:, 0] = psf
    jac[:, 1] = nn * dex[:, :, None] * ey[:, None, :]
    jac[:, 2] = nn * ex[:, :, None] * dey[:, None, :]
    jac[:, 3] = nn * (dsx[:, :, None] * ey[:, None, :] + ex[:, :, None] * dsy[:, None, :])
    jac[:, 4] = 1.0
    return mu.reshape(theta.shape[0], -1), jac.reshape(theta.shape[0], N_PARAMS, -1), ax, ay


def _curvature_correction(resid_ratio: np.ndarray, theta: np.ndarray, ax, ay,
                          shape: tuple[int, int]) -> np.ndarray:
    """``Σ_pixels r · ∂²μ/∂θ∂θ`` ``(n, 5, 5)`` for ``r`` ``(n, W·H)``, using that every second
    derivative of the separable model is a sum of outer products of per-axis vectors."""
    n = theta.shape[0]
    rr = resid_ratio.reshape(n, shape[0], shape[1])
    x0, x1, xs, x11, x1s, xss = ax
    # M[:, i, k] = Σ_j r_ij · Y_k[j]  for Y = (E, dE/dc, dE/ds, d²E/dc², d²E/dcds, d²E/ds²)
    m = np.matmul(rr, np.stack(ay, axis=2))

    def q(xv, k):
        return np.einsum("ni,ni->n", xv, m[:, :, k])

    n_ph = theta[:, 0]
    c = np.zeros((n, N_PARAMS, N_PARAMS))
    c[:, 0, 1] = q(x1, 0)
    c[:, 0, 2] = q(x0, 1)
    c[:, 0, 3] = q(xs, 0) + q(x0, 2)
    c[:, 1, 1] = n_ph * q(x11, 0)
    c[:, 1, 2] = n_ph * q(x1, 1)
    c[:, 1, 3] = n_ph * (q(x1s, 0) + q(x1, 2))
    c[:, 2, 2] = n_ph * q(x0, 3)
    c[:, 2, 3] = n_ph * (q(xs, 1) + q(x0, 4))
    c[:, 3, 3] = n_ph * (q(xss, 0) + 2.0 * q(xs, 2) + q(x0, 5))
    upper = np.triu_indices(N_PARAMS, 1)
    c[:, upper[1], upper[0]] = c[:, upper[0], upper[1]]
    return c


def _model_only(theta: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    n_ph, x, y, s, b = theta.T
    ex = _axis_terms(x, s, shape[0])[0]
    ey = _axis_terms(y, s, shape[1])[0]
    return (n_ph[:, None, None] * ex[:, :, None] * ey[:, None, :]
            + b[:, None, None]).reshape(theta.shape[0], -1)


def fit_rois(rois: np.ndarray, mask: np.ndarray, gamma, sigma_px: float, *,
             max_iter: int = 25, tol: float = 1e-3, scoring_iter: int = 2,
             sigma_prior: float | None = SIGMA_PRIOR_REL, theta0: np.ndarray | None = None):
    """Fit every ROI of ``rois`` ``(n, W, H)`` (pixels with ``mask`` False are ignored).

    ``gamma`` is the read-noise variance: one value, or one per ROI pixel ``(n, W, H)``.
    ``theta0`` ``(n, 5)`` starts the fit (default: :func:`initial_guess`).

    Newton's method on the exact log-likelihood (the observed information, computed separably),
    after ``scoring_iter`` Fisher-scoring steps from the initial guess; a step that does not
    raise the likelihood is retried as a damped Fisher-scoring (Levenberg–Marquardt) step.
    With ``sigma_prior`` (relative width), a Gaussian prior ``s ~ N(sigma_px, (sigma_prior ·
    sigma_px)²)`` is added to the log-likelihood (a MAP fit): it tames the σ runaways of faint
    spots that otherwise dominate the position error, and costs nothing in position precision
    (x and y are Fisher-orthogonal to σ, so their Cramér–Rao bound is the same with σ known).
    Returns ``(theta, cov, converged, nchi2)``: parameters ``(n, 5)``, their covariance from the
    inverse Fisher information ``(n, 5, 5)`` (NaN where singular), a converged flag (position
    step below ``tol`` px) and the reduced χ² (Pearson, on the Poisson variance).
    """
    rois = np.asarray(rois, np.float64)
    n, w, h = rois.shape
    shape = (w, h)
    maskb = np.broadcast_to(mask, rois.shape)
    maskf = maskb.reshape(n, -1).astype(np.float64)
    per_pixel = np.ndim(gamma) > 0
    gam_all: Any
    gam_floor: Any
    if per_pixel:
        gam_all = np.asarray(gamma, np.float64).reshape(n, -1)
        gam_floor = gam_all.min(axis=1)

        def gam(idx):
            return gam_all[idx]
    else:
        gam_all = gam_floor = float(gamma)

        def gam(idx):
            return gam_all
    data = rois.reshape(n, -1) + gam_all                  # shifted to Poisson-like counts
    data = np.maximum(data, 0.0) * maskf
    theta = (initial_guess(rois, maskb, sigma_px) if theta0 is None
             else np.array(theta0, np.float64))
    lam = np.full(n, 1e-3)
    newton_ok = np.zeros(n, bool)
    converged = np.zeros(n, bool)
    lo_s, hi_s = 0.3, max(w, h) / 2.0
    eye = np.eye(N_PARAMS)

    prior_info = 0.0 if not sigma_prior else 1.0 / (sigma_prior * sigma_px) ** 2

    def loglik(mu_shifted, idx, s):
        ll = ((data[idx] * np.log(mu_shifted) - mu_shifted) * maskf[idx]).sum(axis=1)
        return ll - 0.5 * prior_info * (s - sigma_px) ** 2

    active = np.arange(n)
    mu, jac, ax, ay = _model_terms(theta, shape)
    mu = np.maximum(mu + gam_all, 1e-6)
    ll = loglik(mu, active, theta[:, 3])
    for it in range(max_iter):
        if active.size == 0:
            break
        mf = maskf[active]
        ratio = data[active] / mu
        wts = mf / mu
        grad = np.matmul(jac, ((ratio - 1.0) * mf)[:, :, None])[:, :, 0]
        grad[:, 3] -= prior_info * (theta[active, 3] - sigma_px)
        fisher = np.matmul(jac * wts[:, None, :], jac.transpose(0, 2, 1))
        fisher[:, 3, 3] += prior_info
        use_newton = newton_ok[active] & (it >= scoring_iter)
        if use_newton.any():
            observed = np.matmul(jac * (ratio * wts)[:, None, :], jac.transpose(0, 2, 1))
            hess = observed - _curvature_correction((ratio - 1.0) * mf, theta[active],
                                                    ax, ay, shape)
            hess[:, 3, 3] += prior_info
            matrix = np.where(use_newton[:, None, None], hess, fisher)
        else:
            matrix = fisher
        diag = np.einsum("npp->np", fisher)
        damp = np.where(use_newton, 0.0, lam[active])
        matrix = matrix + (damp[:, None] * diag)[:, :, None] * eye
        try:
            step = np.linalg.solve(matrix, grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(m, g, rcond=None)[0] for m, g in zip(matrix, grad)])
        # a Newton step must go uphill; otherwise take the damped scoring step
        bad = ~np.isfinite(step).all(axis=1) | (use_newton & ((step * grad).sum(axis=1) <= 0))
        if bad.any():
            fm = fisher[bad] + (lam[active[bad]][:, None] * diag[bad])[:, :, None] * eye
            try:
                step[bad] = np.linalg.solve(fm, grad[bad][:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                step[bad] = np.stack([np.linalg.lstsq(m, g, rcond=None)[0]
                                      for m, g in zip(fm, grad[bad])])
        step = np.nan_to_num(step)
        th_old = theta[active]
        step[:, 1:3] = np.clip(step[:, 1:3], -1.0, 1.0)
        trial = th_old + step
        trial[:, 0] = np.maximum(trial[:, 0], 0.1 * th_old[:, 0])
        trial[:, 3] = np.clip(trial[:, 3], np.maximum(0.7 * th_old[:, 3], lo_s),
                              np.minimum(1.4 * th_old[:, 3], hi_s))
        g_floor = gam_floor[active] if per_pixel else gam_floor
        trial[:, 4] = np.maximum(trial[:, 4], 0.1 * th_old[:, 4] - 0.5 * g_floor - 1e-3)
        trial[:, 1] = np.clip(trial[:, 1], -1.0, w)
        trial[:, 2] = np.clip(trial[:, 2], -1.0, h)
        mu_trial = np.maximum(_model_only(trial, shape) + gam(active), 1e-6)
        ll_trial = loglik(mu_trial, active, trial[:, 3])
        better = ll_trial >= ll[active] - 1e-9 * np.abs(ll[active])
        idx_b = active[better]
        theta[idx_b] = trial[better]
        ll[idx_b] = ll_trial[better]
        lam[active] = np.where(better, np.maximum(lam[active] * 0.3, 1e-7),
                               np.minimum(lam[active] * 10.0, 1e7))
        newton_ok[active] = better
        done = better & (np.abs(trial - th_old)[:, 1:3].max(axis=1) < tol) \
            & (np.abs(trial - th_old)[:, 3] < tol)
        stuck = ~better & (lam[active] >= 1e7)
        converged[active[done]] = True
        keep = ~(done | stuck)
        active = active[keep]
        if active.size:
            mu, jac, ax, ay = _model_terms(theta[active], shape)
            mu = np.maximum(mu + gam(active), 1e-6)

    # covariance from the Fisher information at the estimate
    mu_all, jac_all, _, _ = _model_terms(theta, shape)
    mu_all = np.maximum(mu_all + gam_all, 1e-6)
    wts = maskf / mu_all
    fisher = np.matmul(jac_all * wts[:, None, :], jac_all.transpose(0, 2, 1))
    fisher[:, 3, 3] += prior_info
    cov = np.full((n, N_PARAMS, N_PARAMS), np.nan)
    ok = np.linalg.cond(fisher) < 1e12
    if ok.any():
        cov[ok] = np.linalg.inv(fisher[ok])
    resid = (data - mu_all) * maskf
    dof = np.maximum(maskf.sum(axis=1) - N_PARAMS, 1)
    nchi2 = (resid * resid * wts).sum(axis=1) / dof
    return theta, cov, converged, nchi2
