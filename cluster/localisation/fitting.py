"""Maximum-likelihood fit of a pixel-integrated 2-D Gaussian with flat background, one ROI at a
time in numba-compiled loops (cached on disk: a new worker process loads them, it does not
compile them).

Model per ROI pixel ``(i, j)`` (ROI coordinates, pixel centres at integers):
``μ = N · Ex(i) · Ey(j) + b`` with ``Ex(i) = Φ((i+½−x)/s) − Φ((i−½−x)/s)``.  Parameters
``θ = (N, x, y, s, b)``: photon count, centre (px), PSF σ (px), background per pixel.  The data
``d`` (effective photon units, see :mod:`.camera`) plus the read-noise variance ``gamma`` (one
value, or one per pixel for an sCMOS camera: Huang et al., Nat. Methods 2013) are treated as
Poisson with mean ``μ + gamma``; the log-likelihood is maximised by Fisher scoring, then Newton's
method on the exact Hessian, with Levenberg damping when a step does not go uphill
(:func:`fit_rois`).

The model is separable, so every derivative is a product of per-axis vectors
(:func:`_axis_terms`); :func:`_evaluate` accumulates the likelihood, the gradient, the Fisher
information and the observed information of one ROI in a single pass over its pixels.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

N_PARAMS = 5
#: Width of the prior on the PSF σ, relative to the guess (see :func:`fit_rois`).
SIGMA_PRIOR_REL = 0.25
_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
#: Smallest expected count (keeps the logarithm and the weights finite).
_MU_MIN = 1e-6
#: Fits whose Fisher information is worse conditioned than this (1-norm condition number) get no
#: covariance (NaN).
_MAX_CONDITION = 1e12
#: Floating-point licence of the pixel sums: reassociation (vectorised sums), fused multiply-add,
#: reciprocals; not "no NaN/inf" (a diverging trial must still compare as NaN).
_FAST = {"reassoc", "contract", "arcp", "nsz"}


@njit(cache=True, nogil=True)
def _axis_terms(centre, s, size, out, second):
    """Per-axis integrated PSF and its derivatives along one axis, into ``out`` ``(6, size)``:
    ``E, dE/dc, dE/ds`` and, when ``second``, ``d²E/dc², d²E/dc ds, d²E/ds²``.

    With ``u = (edge − c)/s`` at the pixel edges and φ the normal density:
    ``dE/dc = −Δφ/s``, ``dE/ds = −Δ(uφ)/s``, ``d²E/dc² = −Δ(uφ)/s²``,
    ``d²E/dc ds = −Δ((u²−1)φ)/s²``, ``d²E/ds² = −Δ((u³−2u)φ)/s²`` (Δ: upper minus lower edge).
    """
    inv_s = 1.0 / s
    inv_s2 = inv_s * inv_s
    cdf0 = pdf0 = upd0 = tcs0 = tss0 = 0.0
    for k in range(size + 1):
        u = (k - 0.5 - centre) * inv_s
        cdf = 0.5 * math.erf(u / _SQRT2)
        pdf = _INV_SQRT2PI * math.exp(-0.5 * u * u)
        upd = u * pdf
        if k > 0:
            out[0, k - 1] = cdf - cdf0
            out[1, k - 1] = (pdf0 - pdf) * inv_s
            out[2, k - 1] = (upd0 - upd) * inv_s
        if second:
            tcs = (u * u - 1.0) * pdf
            tss = (u * u - 2.0) * upd
            if k > 0:
                out[3, k - 1] = out[2, k - 1] * inv_s
                out[4, k - 1] = (tcs0 - tcs) * inv_s2
                out[5, k - 1] = (tss0 - tss) * inv_s2
            tcs0, tss0 = tcs, tss
        cdf0, pdf0, upd0 = cdf, pdf, upd


@njit(cache=True, nogil=True)
def _model_rows(theta, w, h, with_jacobian):
    """Expected counts ``(n, W·H)`` and (when asked) the Jacobian ``(n, 5, W·H)``."""
    n = theta.shape[0]
    mu = np.empty((n, w * h))
    jac = np.empty((n, N_PARAMS, w * h) if with_jacobian else (0, N_PARAMS, 0))
    ax = np.empty((6, w))
    ay = np.empty((6, h))
    for r in range(n):
        nph, x, y, s, b = theta[r, 0], theta[r, 1], theta[r, 2], theta[r, 3], theta[r, 4]
        _axis_terms(x, s, w, ax, False)
        _axis_terms(y, s, h, ay, False)
        for i in range(w):
            for j in range(h):
                p = i * h + j
                psf = ax[0, i] * ay[0, j]
                mu[r, p] = nph * psf + b
                if with_jacobian:
                    jac[r, 0, p] = psf
                    jac[r, 1, p] = nph * ax[1, i] * ay[0, j]
                    jac[r, 2, p] = nph * ax[0, i] * ay[1, j]
                    jac[r, 3, p] = nph * (ax[2, i] * ay[0, j] + ax[0, i] * ay[2, j])
                    jac[r, 4, p] = 1.0
    return mu, jac


def model_and_jacobian(theta: np.ndarray, shape: tuple[int, int]):
    """Expected counts ``(n, W, H)`` and Jacobian ``(n, 5, W·H)`` for parameters ``(n, 5)``."""
    theta = np.ascontiguousarray(np.atleast_2d(theta), np.float64)
    mu, jac = _model_rows(theta, int(shape[0]), int(shape[1]), True)
    return mu.reshape(theta.shape[0], shape[0], shape[1]), jac


def _model_only(theta: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Expected counts ``(n, W·H)`` for parameters ``(n, 5)``."""
    theta = np.ascontiguousarray(np.atleast_2d(theta), np.float64)
    return _model_rows(theta, int(shape[0]), int(shape[1]), False)[0]


def fisher_information(theta: np.ndarray, shape: tuple[int, int], gamma,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """Fisher information ``(n, 5, 5)`` of the model at ``theta`` (Poisson + read noise;
    ``gamma`` one value or per pixel, ``(n, W·H)``)."""
    mu, jac = model_and_jacobian(np.atleast_2d(theta), shape)
    w = 1.0 / np.maximum(mu.reshape(mu.shape[0], -1) + gamma, _MU_MIN)
    if weights is not None:
        w = w * weights.reshape(w.shape)
    return np.matmul(jac * w[:, None, :], jac.transpose(0, 2, 1))


@njit(cache=True, nogil=True, fastmath=_FAST)
def _evaluate(theta, data, mask, gam, w, h, ax, ay, newton, grad, fisher, hess):
    """One ROI's log-likelihood ``Σ mask · (d log μ − μ)`` at ``theta`` (no prior) and its
    Pearson χ² ``Σ mask · (d − μ)²/μ``, returned; its gradient ``grad`` (5), Fisher information
    ``fisher`` and, when ``newton``, observed information ``hess`` (5×5, the negative Hessian),
    filled in.  ``data`` already includes ``gam``.

    Per pixel, with ``J = ∂μ/∂θ`` and ``r = d/μ − 1``: ``grad += r J``, ``fisher += J Jᵀ/μ``,
    ``hess += (d/μ²) J Jᵀ − r ∂²μ/∂θ∂θ``; the sums are kept in scalars (registers)."""
    nph, b = theta[0], theta[4]
    _axis_terms(theta[1], theta[3], w, ax, newton)
    _axis_terms(theta[2], theta[3], h, ay, newton)
    ll = chi2 = 0.0
    g0 = g1 = g2 = g3 = g4 = 0.0
    f00 = f01 = f02 = f03 = f04 = f11 = f12 = f13 = f14 = 0.0
    f22 = f23 = f24 = f33 = f34 = f44 = 0.0
    o00 = o01 = o02 = o03 = o04 = o11 = o12 = o13 = o14 = 0.0
    o22 = o23 = o24 = o33 = o34 = o44 = 0.0
    for i in range(w):
        ex, dx, sx = ax[0, i], ax[1, i], ax[2, i]
        xx, xs, xss = ax[3, i], ax[4, i], ax[5, i]
        for j in range(h):
            p = i * h + j
            if mask[p] == 0.0:
                continue
            ey, dy, sy = ay[0, j], ay[1, j], ay[2, j]
            j0 = ex * ey
            mu = max(nph * j0 + b + gam[p], _MU_MIN)
            j1 = nph * dx * ey
            j2 = nph * ex * dy
            j3 = nph * (sx * ey + ex * sy)
            d = data[p]
            ll += d * math.log(mu) - mu
            chi2 += (d - mu) * (d - mu) / mu
            wt = 1.0 / mu
            r = d * wt - 1.0
            g0 += r * j0
            g1 += r * j1
            g2 += r * j2
            g3 += r * j3
            g4 += r
            w0, w1, w2, w3 = wt * j0, wt * j1, wt * j2, wt * j3
            f00 += w0 * j0
            f01 += w0 * j1
            f02 += w0 * j2
            f03 += w0 * j3
            f04 += w0
            f11 += w1 * j1
            f12 += w1 * j2
            f13 += w1 * j3
            f14 += w1
            f22 += w2 * j2
            f23 += w2 * j3
            f24 += w2
            f33 += w3 * j3
            f34 += w3
            f44 += wt
            if newton:
                ow = (r + 1.0) * wt           # d/μ²
                v0, v1, v2, v3 = ow * j0, ow * j1, ow * j2, ow * j3
                yy, ys, yss = ay[3, j], ay[4, j], ay[5, j]
                rn = r * nph
                # (d/μ²) J Jᵀ minus r ∂²μ/∂θ∂θ (separable: products of per-axis vectors)
                o00 += v0 * j0
                o01 += v0 * j1 - r * dx * ey
                o02 += v0 * j2 - r * ex * dy
                o03 += v0 * j3 - r * (sx * ey + ex * sy)
                o04 += v0
                o11 += v1 * j1 - rn * xx * ey
                o12 += v1 * j2 - rn * dx * dy
                o13 += v1 * j3 - rn * (xs * ey + dx * sy)
                o14 += v1
                o22 += v2 * j2 - rn * ex * yy
                o23 += v2 * j3 - rn * (sx * dy + ex * ys)
                o24 += v2
                o33 += v3 * j3 - rn * (xss * ey + 2.0 * sx * sy + ex * yss)
                o34 += v3
                o44 += ow
    grad[0], grad[1], grad[2], grad[3], grad[4] = g0, g1, g2, g3, g4
    _symmetric(fisher, f00, f01, f02, f03, f04, f11, f12, f13, f14, f22, f23, f24, f33, f34, f44)
    if newton:
        _symmetric(hess, o00, o01, o02, o03, o04, o11, o12, o13, o14, o22, o23, o24, o33, o34,
                   o44)
    return ll, chi2


@njit(cache=True, nogil=True)
def _symmetric(m, a00, a01, a02, a03, a04, a11, a12, a13, a14, a22, a23, a24, a33, a34, a44):
    """Fill the symmetric 5×5 ``m`` from its upper triangle."""
    m[0, 0], m[0, 1], m[0, 2], m[0, 3], m[0, 4] = a00, a01, a02, a03, a04
    m[1, 1], m[1, 2], m[1, 3], m[1, 4] = a11, a12, a13, a14
    m[2, 2], m[2, 3], m[2, 4] = a22, a23, a24
    m[3, 3], m[3, 4] = a33, a34
    m[4, 4] = a44
    for a in range(N_PARAMS):
        for c in range(a + 1, N_PARAMS):
            m[c, a] = m[a, c]


@njit(cache=True, nogil=True)
def _solve(matrix, rhs, out):
    """``out = matrix⁻¹ rhs`` (5×5, Gaussian elimination with partial pivoting); False when the
    matrix is singular or not finite."""
    a = matrix.copy()
    b = rhs.copy()
    n = a.shape[0]
    for k in range(n):
        piv = k
        for i in range(k + 1, n):
            if abs(a[i, k]) > abs(a[piv, k]):
                piv = i
        if not a[piv, k] != 0.0 or not math.isfinite(a[piv, k]):
            return False
        if piv != k:
            for c in range(n):
                a[k, c], a[piv, c] = a[piv, c], a[k, c]
            b[k], b[piv] = b[piv], b[k]
        for i in range(k + 1, n):
            f = a[i, k] / a[k, k]
            for c in range(k, n):
                a[i, c] -= f * a[k, c]
            b[i] -= f * b[k]
    for k in range(n - 1, -1, -1):
        acc = b[k]
        for c in range(k + 1, n):
            acc -= a[k, c] * out[c]
        out[k] = acc / a[k, k]
    return True


@njit(cache=True, nogil=True)
def _copy(src, dst):
    """``dst[...] = src`` for small contiguous arrays (plain loops compile faster than numba's
    general slice assignment)."""
    a, b = src.ravel(), dst.ravel()
    for i in range(a.shape[0]):
        b[i] = a[i]


@njit(cache=True, nogil=True)
def _inverse(matrix, out):
    """``out = matrix⁻¹`` (5×5); False when the matrix is singular, not finite or its condition
    number (1-norm: ``‖A‖₁ ‖A⁻¹‖₁``) is above :data:`_MAX_CONDITION`."""
    n = matrix.shape[0]
    unit = np.zeros(n)
    col = np.empty(n)
    for c in range(n):
        for i in range(n):
            unit[i] = 1.0 if i == c else 0.0
        if not _solve(matrix, unit, col):
            return False
        for i in range(n):
            out[i, c] = col[i]
    norm = norm_inv = 0.0
    for c in range(n):
        a = b = 0.0
        for i in range(n):
            a += abs(matrix[i, c])
            b += abs(out[i, c])
        norm = max(norm, a)
        norm_inv = max(norm_inv, b)
    return norm * norm_inv < _MAX_CONDITION     # False for NaN too


@njit(cache=True, nogil=True)
def _initial_guess(roi, mask, w, h, sigma_px, out):
    """Starting parameters: background from the ROI border, photons from the excess over it,
    centre from the centroid of the excess in the central 5×5 (which holds the peak)."""
    bsum = 0.0
    bcount = 0.0
    for i in range(w):
        for j in range(h):
            p = i * h + j
            if (i == 0 or i == w - 1 or j == 0 or j == h - 1) and mask[p] != 0.0:
                bsum += roi[p]
                bcount += 1.0
    b0 = max(bsum / max(bcount, 1.0), 0.01)
    total = 0.0
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ci, cj = int(cx), int(cy)
    core = sx = sy = 0.0
    for i in range(w):
        for j in range(h):
            p = i * h + j
            ex = max(roi[p] - b0, 0.0) * mask[p]
            total += ex
            if ci - 2 <= i <= ci + 2 and cj - 2 <= j <= cj + 2:
                core += ex
                sx += ex * (i - ci)
                sy += ex * (j - cj)
    core = max(core, 1e-9)
    out[0] = max(total, 1.0)
    out[1] = cx + sx / core
    out[2] = cy + sy / core
    out[3] = sigma_px
    out[4] = b0


@njit(cache=True, nogil=True)
def _fit_all(rois, masks, gams, per_pixel, sigma_px, prior_info, theta, start, max_iter, tol,
             scoring_iter, w, h, cov, converged, nchi2):
    """Fit every ROI (rows of ``rois`` ``(n, W·H)``), see :func:`fit_rois`; ``theta`` holds the
    starting points when ``start`` is False and receives the estimates.

    Each trial point is evaluated once (likelihood and derivatives together): when it is
    accepted its derivatives serve the next step, and at the end the covariance and χ²."""
    n = rois.shape[0]
    npix = w * h
    ax = np.empty((6, w))
    ay = np.empty((6, h))
    data = np.empty(npix)
    grad, t_grad, g = np.empty(N_PARAMS), np.empty(N_PARAMS), np.empty(N_PARAMS)
    fisher, t_fisher = np.empty((N_PARAMS, N_PARAMS)), np.empty((N_PARAMS, N_PARAMS))
    hess, t_hess = np.zeros((N_PARAMS, N_PARAMS)), np.zeros((N_PARAMS, N_PARAMS))
    matrix = np.empty((N_PARAMS, N_PARAMS))
    step = np.empty(N_PARAMS)
    trial = np.empty(N_PARAMS)
    inv = np.empty((N_PARAMS, N_PARAMS))
    lo_s, hi_s = 0.3, max(w, h) / 2.0
    for r in range(n):
        roi = rois[r]
        mask = masks[r if masks.shape[0] > 1 else 0]
        gam = gams[r if per_pixel else 0]
        gam_floor = gam[0]
        count = 0.0
        for p in range(npix):
            gam_floor = min(gam_floor, gam[p])
            data[p] = max(roi[p] + gam[p], 0.0) * mask[p]    # shifted to Poisson-like counts
            count += mask[p]
        th = theta[r]
        if start:
            _initial_guess(roi, mask, w, h, sigma_px, th)
        lam = 1e-3
        newton_ok = False
        ll, chi2 = _evaluate(th, data, mask, gam, w, h, ax, ay, scoring_iter <= 0, grad, fisher,
                             hess)
        ll -= 0.5 * prior_info * (th[3] - sigma_px) ** 2
        converged[r] = False
        for it in range(max_iter):
            use_newton = newton_ok and it >= scoring_iter
            _copy(grad, g)
            g[3] -= prior_info * (th[3] - sigma_px)
            fisher[3, 3] += prior_info
            if use_newton:
                _copy(hess, matrix)
                matrix[3, 3] += prior_info
            else:
                _copy(fisher, matrix)
                for a in range(N_PARAMS):
                    matrix[a, a] += lam * fisher[a, a]
            ok = _solve(matrix, g, step)
            uphill = 0.0
            for a in range(N_PARAMS):
                uphill += step[a] * g[a]
                ok = ok and math.isfinite(step[a])
            if not ok or (use_newton and uphill <= 0.0):
                # a Newton step must go uphill; otherwise take the damped scoring step
                _copy(fisher, matrix)
                for a in range(N_PARAMS):
                    matrix[a, a] += lam * fisher[a, a]
                if not _solve(matrix, g, step):
                    step.fill(0.0)
            fisher[3, 3] -= prior_info
            for a in range(N_PARAMS):
                v = step[a]
                if math.isnan(v):
                    v = 0.0
                elif math.isinf(v):
                    v = 1.7976931348623157e308 if v > 0 else -1.7976931348623157e308
                trial[a] = th[a] + (min(max(v, -1.0), 1.0) if a == 1 or a == 2 else v)
            trial[0] = max(trial[0], 0.1 * th[0])
            trial[3] = min(max(trial[3], max(0.7 * th[3], lo_s)), min(1.4 * th[3], hi_s))
            trial[4] = max(trial[4], 0.1 * th[4] - 0.5 * gam_floor - 1e-3)
            trial[1] = min(max(trial[1], -1.0), float(w))
            trial[2] = min(max(trial[2], -1.0), float(h))
            ll_trial, chi2_trial = _evaluate(trial, data, mask, gam, w, h, ax, ay,
                                             it + 1 >= scoring_iter, t_grad, t_fisher, t_hess)
            ll_trial -= 0.5 * prior_info * (trial[3] - sigma_px) ** 2
            better = ll_trial >= ll - 1e-9 * abs(ll)
            moved = max(abs(trial[1] - th[1]), abs(trial[2] - th[2]))
            moved_s = abs(trial[3] - th[3])
            if better:
                _copy(trial, th)
                ll, chi2 = ll_trial, chi2_trial
                _copy(t_grad, grad)
                _copy(t_fisher, fisher)
                _copy(t_hess, hess)
                lam = max(lam * 0.3, 1e-7)
            else:
                lam = min(lam * 10.0, 1e7)
            newton_ok = better
            if better and moved < tol and moved_s < tol:
                converged[r] = True
                break
            if not better and lam >= 1e7:
                break
        # covariance from the Fisher information at the estimate; reduced χ² (Pearson)
        fisher[3, 3] += prior_info
        if not _inverse(fisher, inv):
            inv.fill(np.nan)
        _copy(inv, cov[r])
        nchi2[r] = chi2 / max(count - N_PARAMS, 1.0)


def fit_rois(rois: np.ndarray, mask: np.ndarray, gamma, sigma_px: float, *,
             max_iter: int = 25, tol: float = 1e-3, scoring_iter: int = 2,
             sigma_prior: float | None = SIGMA_PRIOR_REL, theta0: np.ndarray | None = None):
    """Fit every ROI of ``rois`` ``(n, W, H)`` (pixels with ``mask`` False are ignored).

    ``gamma`` is the read-noise variance: one value, or one per ROI pixel ``(n, W, H)``.
    ``theta0`` ``(n, 5)`` starts the fit (default: background from the ROI border, centroid of
    the excess).

    Newton's method on the exact log-likelihood (the observed information), after
    ``scoring_iter`` Fisher-scoring steps from the start; a step that does not raise the
    likelihood is retried as a damped Fisher-scoring (Levenberg–Marquardt) step.  Steps are
    bounded (position ±1 px, σ by 0.7–1.4×, photons and background at most a tenfold fall).
    With ``sigma_prior`` (relative width), a Gaussian prior ``s ~ N(sigma_px, (sigma_prior ·
    sigma_px)²)`` is added to the log-likelihood (a MAP fit): it tames the σ runaways of faint
    spots that otherwise dominate the position error, and costs nothing in position precision
    (x and y are Fisher-orthogonal to σ, so their Cramér–Rao bound is the same with σ known).
    Returns ``(theta, cov, converged, nchi2)``: parameters ``(n, 5)``, their covariance from the
    inverse Fisher information ``(n, 5, 5)`` (NaN where singular), a converged flag (position
    and σ steps below ``tol`` px) and the reduced χ² (Pearson, on the Poisson variance).
    """
    rois = np.asarray(rois, np.float64)
    n, w, h = rois.shape
    flat = np.ascontiguousarray(rois.reshape(n, w * h))
    mask = np.asarray(mask)
    masks = np.ascontiguousarray(
        (mask.reshape(1, w * h) if mask.ndim == 2 else mask.reshape(n, w * h)), np.float64)
    per_pixel = np.ndim(gamma) > 0
    gams = (np.ascontiguousarray(np.asarray(gamma, np.float64).reshape(n, w * h)) if per_pixel
            else np.full((1, w * h), float(gamma)))
    prior_info = 0.0 if not sigma_prior else 1.0 / (sigma_prior * sigma_px) ** 2
    theta = (np.empty((n, N_PARAMS)) if theta0 is None
             else np.array(theta0, np.float64, order="C", copy=True))
    cov = np.empty((n, N_PARAMS, N_PARAMS))
    converged = np.zeros(n, bool)
    nchi2 = np.empty(n)
    if n:
        _fit_all(flat, masks, gams, per_pixel, float(sigma_px), prior_info, theta, theta0 is None,
                 int(max_iter), float(tol), int(scoring_iter), w, h, cov, converged, nchi2)
    return theta, cov, converged, nchi2
