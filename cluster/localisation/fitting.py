"""Vectorised maximum-likelihood fit of a pixel-integrated 2-D Gaussian with flat background.

Model per ROI pixel ``(i, j)`` (ROI coordinates, pixel centres at integers):
``μ = N · Ex(i) · Ey(j) + b`` with ``Ex(i) = Φ((i+½−x)/s) − Φ((i−½−x)/s)``.  Parameters
``θ = (N, x, y, s, b)``: photon count, centre (px), PSF σ (px), background per pixel.  The data
``d`` (effective photon units, see :mod:`.camera`) plus the read-noise variance ``gamma`` are
treated as Poisson with mean ``μ + gamma``; the log-likelihood is maximised by Fisher scoring
(iteratively re-weighted Gauss–Newton with Levenberg damping), for all ROIs at once.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

N_PARAMS = 5
_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _axis_terms(centre: np.ndarray, s: np.ndarray, size: int):
    """Per-axis integrated PSF and its derivatives: three ``(n, size)`` arrays."""
    edges = np.arange(size + 1, dtype=np.float64) - 0.5            # pixel edges
    u = (edges[None, :] - centre[:, None]) / s[:, None]             # (n, size+1)
    cdf = 0.5 * erf(u / _SQRT2)
    pdf = _INV_SQRT2PI * np.exp(-0.5 * u * u)
    e = cdf[:, 1:] - cdf[:, :-1]
    de_dc = (pdf[:, :-1] - pdf[:, 1:]) / s[:, None]
    upd = u * pdf
    de_ds = (upd[:, :-1] - upd[:, 1:]) / s[:, None]
    return e, de_dc, de_ds


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


def fisher_information(theta: np.ndarray, shape: tuple[int, int], gamma: float,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """Fisher information ``(n, 5, 5)`` of the model at ``theta`` (Poisson + read noise)."""
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


def fit_rois(rois: np.ndarray, mask: np.ndarray, gamma: float, sigma_px: float, *,
             max_iter: int = 30, tol: float = 1e-4):
    """Fit every ROI of ``rois`` ``(n, W, H)`` (pixels with ``mask`` False are ignored).

    Returns ``(theta, cov, converged, nchi2)``: parameters ``(n, 5)``, their covariance from the
    inverse Fisher information ``(n, 5, 5)`` (NaN where singular), a converged flag and the
    reduced χ² (Pearson, on the Poisson variance).
    """
    rois = np.asarray(rois, np.float64)
    n, w, h = rois.shape
    maskf = np.broadcast_to(mask, rois.shape).reshape(n, -1).astype(np.float64)
    data = rois.reshape(n, -1)
    theta = initial_guess(rois, np.broadcast_to(mask, rois.shape), sigma_px)
    lam = np.full(n, 1e-3)
    converged = np.zeros(n, bool)
    active = np.arange(n)
    lo_s, hi_s = 0.3, max(w, h) / 2.0

    def loglik(th, idx):
        mu, jac = model_and_jacobian(th, (w, h))
        mu = np.maximum(mu.reshape(len(idx), -1) + gamma, 1e-6)
        d = np.maximum(data[idx] + gamma, 0)
        ll = ((d * np.log(mu) - mu) * maskf[idx]).sum(axis=1)
        return ll, mu, jac

    ll, mu, jac = loglik(theta, active)
    for _ in range(max_iter):
        if active.size == 0:
            break
        wts = maskf[active] / mu
        resid = (data[active] + gamma) - mu
        grad = np.einsum("npk,nk->np", jac, resid * wts)
        fisher = np.matmul(jac * wts[:, None, :], jac.transpose(0, 2, 1))
        diag = np.einsum("npp->np", fisher)
        damped = fisher + (lam[active][:, None] * diag)[:, :, None] * np.eye(N_PARAMS)
        try:
            step = np.linalg.solve(damped, grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(m, g, rcond=None)[0]
                             for m, g in zip(damped, grad)])
        step[:, 1:3] = np.clip(step[:, 1:3], -1.0, 1.0)
        th_old = theta[active]
        trial = th_old + step
        trial[:, 0] = np.maximum(trial[:, 0], 0.1 * th_old[:, 0])
        trial[:, 3] = np.clip(trial[:, 3], np.maximum(0.5 * th_old[:, 3], lo_s),
                              np.minimum(1.5 * th_old[:, 3], hi_s))
        trial[:, 4] = np.maximum(trial[:, 4], 0.1 * th_old[:, 4] - 0.5 * gamma - 1e-3)
        trial[:, 1] = np.clip(trial[:, 1], -1.0, w)
        trial[:, 2] = np.clip(trial[:, 2], -1.0, h)
        ll_new, mu_new, jac_new = loglik(trial, active)
        better = ll_new >= ll[active] - 1e-9
        # accept improving steps, raise damping on the others
        theta[active[better]] = trial[better]
        ll[active[better]] = ll_new[better]
        lam[active] = np.where(better, np.maximum(lam[active] * 0.3, 1e-6),
                               np.minimum(lam[active] * 10.0, 1e6))
        mu = np.where(better[:, None], mu_new, mu)
        jac = np.where(better[:, None, None], jac_new, jac)
        done = better & (np.abs(step[:, 1:3]).max(axis=1) < tol) \
            & (np.abs(step[:, 3]) < 10 * tol) \
            & (np.abs(step[:, 0]) < 1e-3 * np.abs(th_old[:, 0]) + 1e-3)
        stuck = ~better & (lam[active] >= 1e6)
        converged[active[done]] = True
        keep = ~(done | stuck)
        active, mu, jac = active[keep], mu[keep], jac[keep]

    # covariance from the Fisher information at the estimate
    mu_all, jac_all = model_and_jacobian(theta, (w, h))
    mu_all = np.maximum(mu_all.reshape(n, -1) + gamma, 1e-6)
    wts = maskf / mu_all
    fisher = np.matmul(jac_all * wts[:, None, :], jac_all.transpose(0, 2, 1))
    cov = np.full((n, N_PARAMS, N_PARAMS), np.nan)
    ok = np.linalg.cond(fisher) < 1e12
    if ok.any():
        cov[ok] = np.linalg.inv(fisher[ok])
    resid = (data + gamma) - mu_all
    dof = np.maximum(maskf.sum(axis=1) - N_PARAMS, 1)
    nchi2 = (resid * resid * wts).sum(axis=1) / dof
    return theta, cov, converged, nchi2
