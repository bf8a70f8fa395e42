r"""The true reverse conditional q(x_{t-1} | x_t) of Gaussian-mixture data; the terms of Eq. (16).

Paper: Ho, Jain, Abbeel (2020). §2: Gaussian reverse steps p_theta(x_{t-1} | x_t) are expressive
"because both processes have the same functional form when beta_t are small" (Sohl-Dickstein et al.
2015). §4.3, Eq. (16) (derived in Appendix A): the bound rewritten as

    L = KL(q(x_T) || p(x_T))
      + E_q[ sum_{t>=1} KL(q(x_{t-1} | x_t) || p_theta(x_{t-1} | x_t)) ] + H(x_0),

with the *true* reverse conditionals q(x_{t-1} | x_t) (not the posteriors q(x_{t-1} | x_t, x_0) of
Eq. 5). Since E_q[-log q(x_0)] = H(x_0), the gap between the bound and the exact NLL lives in the
first two terms.

For data x_0 ~ sum_k pi_k N(m_k, S_k), q(x_{t-1}) = sum_k pi_k N(a m_k, Sig_k) with
a = sqrt(abar_{t-1}), Sig_k = abar_{t-1} S_k + (1 - abar_{t-1}) I (Eq. 4), and
x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps
(Eq. 2). Conditioning each component on x_t (Bishop 2006, Eqs. 2.113-2.117):

    q(x_{t-1} | x_t) = sum_k r_k(x_t) N(a m_k + G_k (x_t - sqrt(abar_t) m_k),
                                        Sig_k - sqrt(alpha_t) G_k Sig_k),
    G_k = sqrt(alpha_t) Sig_k (alpha_t Sig_k + beta_t I)^{-1},

with r_k(x_t) the responsibilities of x_t under q(x_t) (:func:`ddpm_ref.analytic.responsibilities`).
A mixture again: Gaussian only when one component dominates, i.e. when beta_t is small.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref._checks import check_choice, check_rng
from ddpm_ref.analytic import GaussianMixture, log_q_xt, q_xt, responsibilities
from ddpm_ref.diffusion import VARIANCES, p_mean_var, q_sample, q_step

_LOG_2PI = float(np.log(2.0 * np.pi))


def _check_gmm(gmm) -> None:
    if not isinstance(gmm, GaussianMixture):
        raise ValueError(f"gmm: expected a GaussianMixture, got {type(gmm).__name__}")


def _check_points(name: str, x, D: int) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or x.ndim != 2 or x.shape[1] != D:
        raise ValueError(f"{name}: expected a float array of shape (B, {D}), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values")
    return x.astype(np.float64, copy=False)


def _check_step(sched, t) -> int:
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= sched.T:
        raise ValueError(f"t: expected an integer in 1..{sched.T}, got {t!r}")
    return int(t)


def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"{name}: expected an integer >= 2, got {n!r}")
    return int(n)


def reverse_conditional(sched, gmm: GaussianMixture, xt, t: int):
    r"""The exact q(x_{t-1} | x_t) for each row of xt, as a mixture (see the module docstring).

    Args: xt (B, D); t int in 1..T (t = 1 gives q(x_0 | x_1)).
    Returns:
        (weights (B, K), means (B, K, D), covs (K, D, D)): component k of row b is
        N(means[b, k], covs[k]) with weight weights[b, k] (the covariances do not depend on x_t).
    """
    _check_gmm(gmm)
    t = _check_step(sched, t)
    xt = _check_points("xt", xt, gmm.D)
    prev = q_xt(sched, gmm, t - 1)  # q(x_{t-1}): means a m_k, covs Sig_k
    alpha, beta = sched.alpha[t], sched.beta[t]
    eye = np.eye(gmm.D)
    # Kalman gain G_k = sqrt(alpha) Sig_k (alpha Sig_k + beta I)^{-1}   (Sig_k symmetric)
    gain = np.stack([np.linalg.solve(alpha * S + beta * eye, np.sqrt(alpha) * S).T
                     for S in prev.covs])  # (K, D, D)
    covs = prev.covs - np.sqrt(alpha) * gain @ prev.covs  # (K, D, D)
    covs = 0.5 * (covs + np.swapaxes(covs, 1, 2))  # symmetric to rounding
    resid = xt[:, None, :] - np.sqrt(alpha) * prev.means[None]  # (B, K, D), x_t - sqrt(abar_t) m_k
    means = prev.means[None] + np.einsum("kde,bke->bkd", gain, resid)  # (B, K, D)
    weights = responsibilities(q_xt(sched, gmm, t), xt)  # (B, K)
    return weights, means, covs


def _mixture_logpdf(x, weights, means, covs):
    """log sum_k w_bk N(x_b; means_bk, covs_k) for x (B, D)."""
    L = np.linalg.cholesky(covs)  # (K, D, D)
    diff = x[:, None, :] - means  # (B, K, D)
    z = np.stack([np.linalg.solve(L[k], diff[:, k].T).T for k in range(covs.shape[0])], axis=1)
    logdet = 2.0 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)  # (K,)
    with np.errstate(divide="ignore"):  # a weight can underflow to 0
        logw = np.log(weights)
    a = logw - 0.5 * (np.sum(z * z, axis=2) + logdet[None] + x.shape[1] * _LOG_2PI)  # (B, K)
    m = a.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=1, keepdims=True)))[:, 0]


def log_reverse_conditional(sched, gmm: GaussianMixture, x_prev, xt, t: int):
    r"""log q(x_{t-1} | x_t) in nats, (B,), at pairs (x_prev[b], xt[b]) (closed-form mixture)."""
    _check_gmm(gmm)
    x_prev = _check_points("x_prev", x_prev, gmm.D)
    xt = _check_points("xt", xt, gmm.D)
    if x_prev.shape != xt.shape:
        raise ValueError(f"x_prev: expected the shape of xt {xt.shape}, got {x_prev.shape}")
    return _mixture_logpdf(x_prev, *reverse_conditional(sched, gmm, xt, t))


def reverse_by_bayes(sched, gmm: GaussianMixture, x_prev, xt, t: int):
    r"""log q(x_t | x_{t-1}) + log q(x_{t-1}) - log q(x_t): Bayes' rule with the exact densities.

    The unnormalised route (Eq. 2 times the marginal of Eq. 4, over the evidence q(x_t)), for
    x_prev (B, D) against one xt (1, D) or (B, D); it shares no code with
    :func:`reverse_conditional`, so the two check each other.
    """
    _check_gmm(gmm)
    t = _check_step(sched, t)
    x_prev = _check_points("x_prev", x_prev, gmm.D)
    xt = np.broadcast_to(_check_points("xt", xt, gmm.D), x_prev.shape)
    beta = sched.beta[t]
    # Eq. (2): log N(x_t; sqrt(1 - beta_t) x_{t-1}, beta_t I)
    r2 = np.sum((xt - np.sqrt(1.0 - beta) * x_prev) ** 2, axis=1)
    log_fwd = -0.5 * (r2 / beta + gmm.D * (_LOG_2PI + np.log(beta)))
    return log_fwd + log_q_xt(sched, gmm, x_prev, t - 1) - log_q_xt(sched, gmm, xt, t)


def _gauss_logpdf(x, mean, cov):
    """log N(x_b; mean_b, cov_b) for x, mean (B, D), cov (B, D, D)."""
    L = np.linalg.cholesky(cov)  # (B, D, D)
    z = np.linalg.solve(L, (x - mean)[:, :, None])[:, :, 0]  # (B, D)
    logdet = 2.0 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)
    return -0.5 * (np.sum(z * z, axis=1) + logdet + x.shape[1] * _LOG_2PI)


def reverse_moments(sched, gmm: GaussianMixture, xt, t: int):
    r"""Mean (B, D) and covariance (B, D, D) of q(x_{t-1} | x_t): its best Gaussian fit.

    argmin over Gaussians g of KL(q || g) is the g with q's mean and covariance, and then
    KL(q || g) = H(g) - H(q) (E_q of g's quadratic form is D). The mean is E[x_{t-1} | x_t] =
    mu_tilde(x_t, E[x_0 | x_t]) = mu_theta of Eq. (11) at eps*.
    """
    w, m, C = reverse_conditional(sched, gmm, xt, t)
    mean = np.einsum("bk,bkd->bd", w, m)  # (B, D)
    second = np.einsum("bk,kde->bde", w, C) + np.einsum("bk,bkd,bke->bde", w, m, m)
    return mean, second - np.einsum("bd,be->bde", mean, mean)


def sample_reverse_conditional(sched, gmm: GaussianMixture, xt, t: int, rng):
    r"""One draw x_{t-1} ~ q(x_{t-1} | x_t) per row of xt, (B, D)."""
    check_rng(rng)
    w, m, C = reverse_conditional(sched, gmm, xt, t)
    B, K, D = m.shape
    u = rng.random((B, 1))
    k = np.minimum((np.cumsum(w, axis=1) < u).sum(axis=1), K - 1)  # (B,) component per row
    L = np.linalg.cholesky(C)  # (K, D, D)
    z = rng.standard_normal((B, D))
    return m[np.arange(B), k] + np.einsum("bde,be->bd", L[k], z)


def gaussian_fit_kl(sched, gmm: GaussianMixture, xt, t: int, rng, *, n):
    r"""KL(q(x_{t-1} | x_t) || its best Gaussian fit) for each row of xt, by Monte Carlo.

    n draws x_{t-1} ~ q(x_{t-1} | x_t) per row; the integrand log q - log g (g the moment-matched
    Gaussian of :func:`reverse_moments`). Returns (kl (B,), standard error (B,)), nats.
    """
    n = _check_count("n", n)
    xt = _check_points("xt", xt, gmm.D)
    mean, cov = reverse_moments(sched, gmm, xt, t)
    w, m, C = reverse_conditional(sched, gmm, xt, t)
    kl, se = np.empty(xt.shape[0]), np.empty(xt.shape[0])
    for b in range(xt.shape[0]):
        xb = np.repeat(xt[b:b + 1], n, axis=0)  # (n, D)
        x = sample_reverse_conditional(sched, gmm, xb, t, rng)
        log_q = _mixture_logpdf(x, np.repeat(w[b:b + 1], n, 0), np.repeat(m[b:b + 1], n, 0), C)
        log_g = _gauss_logpdf(x, np.broadcast_to(mean[b], (n, gmm.D)),
                              np.broadcast_to(cov[b], (n, gmm.D, gmm.D)))
        d = log_q - log_g
        kl[b], se[b] = d.mean(), d.std(ddof=1) / np.sqrt(n)
    return kl, se


def kl_to_gaussian_fit_on_grid(log_q, points, cell_area):
    r"""KL(q || g) by quadrature, g the Gaussian with q's mean and covariance (both from the grid).

    Args: log_q (N,) log-density at the grid points (N, D) (normalised or not: it is normalised
    here by the midpoint rule), cell_area the volume of one grid cell.
    Returns: (kl, mean (D,), cov (D, D), mass) with mass = sum q dA before normalising (1 when
    log_q was a density and the grid covers it).
    """
    log_q, points = np.asarray(log_q, np.float64), np.asarray(points, np.float64)
    if log_q.ndim != 1 or points.ndim != 2 or points.shape[0] != log_q.shape[0]:
        raise ValueError(f"points: expected shape ({log_q.shape[0]}, D), got {points.shape}")
    q = np.exp(log_q)
    mass = float(q.sum() * cell_area)
    w = q * cell_area / mass  # (N,), quadrature weights of the normalised q
    mean = w @ points
    d = points - mean
    cov = (w[:, None] * d).T @ d
    log_g = _gauss_logpdf(points, np.broadcast_to(mean, points.shape),
                          np.broadcast_to(cov, (points.shape[0],) + cov.shape))
    with np.errstate(invalid="ignore"):  # q = 0 cells contribute 0
        kl = float(np.sum(np.where(w > 0, w * (log_q - np.log(mass) - log_g), 0.0)))
    return kl, mean, cov, mass


def differential_entropy(gmm: GaussianMixture, rng, *, n):
    r"""H(x_0) = -E log q(x_0) of the mixture in nats, by Monte Carlo: (estimate, standard error).

    For continuous data H(x_0) is a differential entropy (it can be negative, it changes by
    log|det A| under x -> A x); for 8-bit images Eq. (16)'s H(x_0) is a discrete entropy >= 0.
    """
    from ddpm_ref.analytic import log_density

    _check_gmm(gmm)
    v = -log_density(gmm, gmm.sample(_check_count("n", n), rng))
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def gaussian_kl(mean1, cov1, mean2, log_sigma2):
    r"""KL(N(mean1, cov1) || N(mean2, sigma^2 I)) per row, nats.

    mean1, mean2 (B, D), cov1 (B, D, D), log_sigma2 (B,). KL = 0.5 [tr(cov1) / sigma^2 - D
    + ||mean2 - mean1||^2 / sigma^2 + D log sigma^2 - log det cov1]."""
    D = mean1.shape[1]
    inv_s2 = np.exp(-log_sigma2)  # (B,)
    tr = np.trace(cov1, axis1=1, axis2=2)
    logdet = np.linalg.slogdet(cov1)[1]
    d2 = np.sum((mean2 - mean1) ** 2, axis=1)
    return 0.5 * ((tr + d2) * inv_s2 - D + D * log_sigma2 - logdet)


def eq16_terms(sched, gmm: GaussianMixture, model_fn, rng, *, n, variance="fixedlarge"):
    r"""The first two terms of Eq. (16) for a model with fixed reverse variances, by Monte Carlo.

    KL(q(x_T) || N(0, I)) from n draws x_T ~ q(x_T). For each t = 1..T,
    E_{q(x_t)} KL(q(x_{t-1} | x_t) || p_theta(x_{t-1} | x_t)) from n fresh triples x_0 ~ q,
    x_{t-1} ~ q(x_{t-1} | x_0) (Eq. 4), x_t ~ q(x_t | x_{t-1}) (Eq. 2), split in two with g the
    best Gaussian fit of q(x_{t-1} | x_t) (:func:`reverse_moments`):

        KL(q || p_theta) = KL(q || g) + KL(g || p_theta),

    exact because log g - log p_theta is quadratic and q, g share their first two moments.
    KL(q || g) (non-Gaussianity: no Gaussian step can remove it) is estimated by
    log q(x_{t-1} | x_t) - log g(x_{t-1}); KL(g || p_theta) (mean and variance mismatch) is closed
    form. p_theta = N(mu_theta, sigma_t^2 I) from :func:`ddpm_ref.diffusion.p_mean_var` (t = 1:
    the Gaussian decoder of ``vlb_term``, with sigma_1^2 of ``fixed_variance``).
    The sum of all terms is the gap L - H(x_0) between the bound (Eq. 5, averaged over the data)
    and the exact NLL; Eq. (16) adds H(x_0) (:func:`differential_entropy`).

    Returns:
        dict: "prior_kl", "prior_kl_se" (floats); arrays (T+1,), index t (0 is NaN): "kl",
        "kl_se", "kl_nongauss", "kl_nongauss_se", "kl_gauss"; "gap" = prior_kl + sum_t kl[t] and
        "gap_se"
        (independent draws per term, so the variances add).
    """
    _check_gmm(gmm)
    check_rng(rng)
    check_choice("variance", variance, VARIANCES[:2])
    n = _check_count("n", n)
    T, D = sched.T, gmm.D
    xT = q_xt(sched, gmm, T).sample(n, rng)  # (n, D)
    log_prior = -0.5 * (np.sum(xT**2, axis=1) + D * _LOG_2PI)  # log N(x_T; 0, I)
    d = log_q_xt(sched, gmm, xT, T) - log_prior
    out = {"prior_kl": float(d.mean()), "prior_kl_se": float(d.std(ddof=1) / np.sqrt(n))}
    for key in ("kl", "kl_se", "kl_nongauss", "kl_nongauss_se", "kl_gauss"):
        out[key] = np.full(T + 1, np.nan)
    for t in range(1, T + 1):
        x0 = gmm.sample(n, rng)
        tt = np.full(n, t, dtype=np.int64)
        x_prev = x0 if t == 1 else q_sample(sched, x0, tt - 1, rng.standard_normal(x0.shape))
        xt = q_step(sched, x_prev, tt, rng.standard_normal(x0.shape))  # (x_{t-1}, x_t) ~ q
        eps = np.asarray(model_fn(xt, sched.timesteps[tt]), dtype=np.float64)
        mu, _, log_sigma2 = p_mean_var(sched, xt, tt, eps, variance=variance)  # (n, D), (n, 1)
        mean, cov = reverse_moments(sched, gmm, xt, t)  # g = N(mean, cov)
        log_g = _gauss_logpdf(x_prev, mean, cov)
        nongauss = log_reverse_conditional(sched, gmm, x_prev, xt, t) - log_g  # (n,)
        gauss = gaussian_kl(mean, cov, mu, log_sigma2[:, 0])  # (n,)
        d = nongauss + gauss
        out["kl"][t], out["kl_se"][t] = d.mean(), d.std(ddof=1) / np.sqrt(n)
        out["kl_nongauss"][t], out["kl_gauss"][t] = nongauss.mean(), gauss.mean()
        out["kl_nongauss_se"][t] = nongauss.std(ddof=1) / np.sqrt(n)
    out["gap"] = out["prior_kl"] + float(np.sum(out["kl"][1:]))
    out["gap_se"] = float(np.sqrt(out["prior_kl_se"] ** 2 + np.sum(out["kl_se"][1:] ** 2)))
    return out
