r"""The variational bound on the negative log-likelihood, term by term, with exact gradients.

Paper: Ho, Jain, Abbeel (2020), §2 (Eqs. 3, 5), §3.2 (Eqs. 8, 12), §3.3 (Eq. 13, the discretized
decoder) and §3.4 (Eq. 14, L_simple); the hybrid objective of Nichol & Dhariwal (2021), §3.1.

  L = L_T + sum_{t>1} L_{t-1} + L_0                                           (Eq. 5)
  L_T = KL(q(x_T | x_0) || N(0, I))                    -> prior_kl
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))  -> vlb_term (t >= 2)
  L_0 = -log p(x_0 | x_1)                              -> decoder_nll, vlb_term (t = 1)

All values are nats per example (summed over data dimensions) unless stated; ``bits_per_dim``
converts. The exact sum over t and the one-t estimate live in ``ddpm_ref/bound.py`` and are
re-exported here (``bound_terms``, ``bound_estimate``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from ddpm_ref._checks import check_choice, check_param, check_t, check_x, extract
from ddpm_ref.diffusion import (
    LEARNED_VARIANCES,
    VARIANCES,
    _posterior_mean,
    _predict_x0,
    _split_output,
    _x0_gain,
    fixed_variance,
    p_mean_var,
)

DECODERS = ("discretized", "gaussian")
_HALF_BIN = 1.0 / 255.0  # the 256 levels k / 127.5 - 1 have bin edges x +- 1/255
_LOG_2PI = np.log(2.0 * np.pi)


def _expm1_minus(d):
    """e^d - 1 - d, accurate for small |d| (it is ~d^2 / 2; the direct form cancels)."""
    d = np.asarray(d, dtype=np.float64)
    p = np.full(d.shape, 1.0 / 39916800.0)  # Horner on sum_{k=2}^{11} d^(k-2) / k!
    for k in range(10, 1, -1):
        p = p * d + 1.0 / np.prod(np.arange(1.0, k + 1.0))
    return np.where(np.abs(d) < 1e-2, p * d * d, np.expm1(d) - d)


def normal_kl(mean1, logvar1, mean2, logvar2):
    r"""Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats (arguments broadcast).

    KL = 0.5 (logvar2 - logvar1 + e^{logvar1 - logvar2} - 1 + (mean1 - mean2)^2 e^{-logvar2}),
    with the variance part written e^d - 1 - d (d = logvar1 - logvar2) and evaluated without
    cancellation, so it stays >= 0 and accurate when the two variances nearly agree.
    """
    d = np.asarray(logvar1, dtype=np.float64) - logvar2
    return 0.5 * (_expm1_minus(d) + (mean1 - mean2) ** 2 * np.exp(-np.asarray(logvar2)))


def _check_on_grid(x):
    levels = x * 127.5 + 127.5  # 0..255 on the grid
    if np.any(np.abs(x) > 1.0 + 1e-9) or np.any(np.abs(levels - np.round(levels)) > 1e-3):
        raise ValueError("x: expected data on the 256-level grid k / 127.5 - 1 in [-1, 1]")


def _log_ndtr_diff(a, b):
    """log(Phi(b) - Phi(a)) for a < b (infinite ends allowed), without cancellation."""
    flip = a > 0  # both in the upper tail: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    a, b = np.where(flip, -b, a), np.where(flip, -a, b)
    la, lb = log_ndtr(a), log_ndtr(b)  # now b <= 0 or a <= 0 < b: no tail cancellation
    with np.errstate(divide="ignore"):
        return lb + np.log(-np.expm1(la - lb))


def _disc_loglik(x, mean, log_scale, want_grad=False):
    """Eq. (13) with the exact normal CDF: (log P, dlogP/dmean, dlogP/dlog_scale), all broadcast."""
    inv_s = np.exp(-log_scale)
    a = (x - mean - _HALF_BIN) * inv_s  # lower bin edge in standard units
    b = (x - mean + _HALF_BIN) * inv_s  # upper bin edge
    a = np.where(x < -0.999, -np.inf, a)  # edge bins are open: (-inf, -1 + 1/255]
    b = np.where(x > 0.999, np.inf, b)  #                      [1 - 1/255, inf)
    logp = _log_ndtr_diff(a, b)
    if not want_grad:
        return logp, None, None
    # d log P = (phi(a) da - phi(b) db) / P... written with r = phi(z) / P = exp(log phi(z) - log P)
    with np.errstate(over="ignore", invalid="ignore"):
        r_a = np.where(np.isfinite(a), np.exp(-0.5 * a**2 - 0.5 * _LOG_2PI - logp), 0.0)
        r_b = np.where(np.isfinite(b), np.exp(-0.5 * b**2 - 0.5 * _LOG_2PI - logp), 0.0)
        a_r_a = np.where(np.isfinite(a), a * r_a, 0.0)
        b_r_b = np.where(np.isfinite(b), b * r_b, 0.0)
    d_mean = (r_a - r_b) * inv_s  # da/dmean = db/dmean = -1/s
    d_log_scale = a_r_a - b_r_b  # da/dlog_scale = -a, db/dlog_scale = -b
    return logp, d_mean, d_log_scale


def _tanh_cdf(z):
    # Ho et al.'s approx_std_normal_cdf
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))


def discretized_gaussian_log_likelihood(x, mean, log_scale, cdf="exact"):
    r"""Elementwise log p(x | mean, e^log_scale) on the 256-level data grid, in nats.

    Paper: Eq. (13): the Gaussian N(mean, sigma^2) integrated over the bin [x - 1/255, x + 1/255],
    with the edge bins open (x = -1 takes (-inf, -1 + 1/255], x = 1 takes [1 - 1/255, inf)), so
    the 256 probabilities sum to 1. ``cdf="exact"`` uses scipy's log_ndtr and a log-difference
    that stays accurate for sigma = 1e-3 or means far outside [-1, 1]; ``cdf="tanh"`` reproduces
    Ho et al.'s tanh approximation of the CDF and their 1e-12 clamps, to compare numbers.

    Args:
        x: data on the grid k / 127.5 - 1, k = 0..255. mean, log_scale: broadcast against x.
    Returns:
        log-probabilities, shape of the broadcast of the three arguments.
    """
    x = check_x("x", x)
    _check_on_grid(x)
    mean, log_scale = check_param("mean", mean), check_param("log_scale", log_scale)
    check_choice("cdf", cdf, ("exact", "tanh"))
    try:
        np.broadcast_shapes(x.shape, mean.shape, log_scale.shape)
    except ValueError:
        raise ValueError(f"mean, log_scale: expected shapes that broadcast with x {x.shape}, got "
                         f"{mean.shape} and {log_scale.shape}") from None
    if cdf == "exact":
        return _disc_loglik(x, mean, log_scale)[0]
    inv_s = np.exp(-log_scale)
    cdf_plus = _tanh_cdf((x - mean + _HALF_BIN) * inv_s)
    cdf_min = _tanh_cdf((x - mean - _HALF_BIN) * inv_s)
    log_cdf_plus = np.log(np.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = np.log(np.maximum(1.0 - cdf_min, 1e-12))
    log_delta = np.log(np.maximum(cdf_plus - cdf_min, 1e-12))
    return np.where(x < -0.999, log_cdf_plus,
                    np.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _gauss_nll(x, mean, log_scale):
    """Elementwise continuous Gaussian NLL and its gradients w.r.t. mean and log_scale."""
    z2 = (x - mean) ** 2 * np.exp(-2.0 * log_scale)
    nll = 0.5 * _LOG_2PI + log_scale + 0.5 * z2
    return nll, (mean - x) * np.exp(-2.0 * log_scale), 1.0 - z2


def decoder_nll(x0, mean, log_scale, decoder="discretized", cdf="exact"):
    r"""L_0 = -log p_theta(x_0 | x_1) summed over dimensions, in nats per example, shape (B,).

    Paper: Eq. (13) for ``decoder="discretized"`` (image data on the 256-level grid);
    ``decoder="gaussian"`` is the continuous N(mean, e^{2 log_scale}) density, for real-valued
    data such as 2-D points (its "NLL" is then a differential entropy, not a code length).
    """
    x0 = check_x("x0", x0)
    mean = check_param("mean", mean, "x0", x0.shape)
    log_scale = check_param("log_scale", log_scale, "x0", x0.shape)
    check_choice("decoder", decoder, DECODERS)
    if decoder == "gaussian":
        nll = _gauss_nll(x0, mean, log_scale)[0]
    else:
        nll = -discretized_gaussian_log_likelihood(x0, mean, log_scale, cdf=cdf)
    return np.broadcast_to(nll, x0.shape).reshape(x0.shape[0], -1).sum(axis=1)


def prior_kl(sched, x0):
    r"""L_T = KL(q(x_T | x_0) || N(0, I)) summed over dimensions, nats, shape (B,).

    Paper: Eq. (5), with q(x_T | x_0) from Eq. (4). It has no parameters; for the paper's
    schedule it is ~1e-5 bits/dim (§4).
    """
    x0 = check_x("x0", x0)
    T = sched.T
    mean = np.sqrt(sched.alpha_bar[T]) * x0
    kl = normal_kl(mean, np.log(sched.one_minus_alpha_bar[T]), 0.0, 0.0)
    return kl.reshape(x0.shape[0], -1).sum(axis=1)


def _sum_dims(a, shape):
    return np.broadcast_to(a, shape).reshape(shape[0], -1).sum(axis=1)


def _vlb(sched, x0, xt, t, model_output, mean_type, variance, clip_x0, decoder, cdf, want_grad,
         stop_grad_mean=False):
    """vlb_term and (optionally) its gradient w.r.t. model_output; see vlb_term."""
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    x0 = check_x("x0", x0, shape=xt.shape)
    check_choice("decoder", decoder, DECODERS)
    mu, _, log_var = p_mean_var(sched, xt, t, model_output, mean_type, variance, clip_x0)
    learned = variance in LEARNED_VARIANCES  # log_var (B, ...) if learned, else (B, 1, ..., 1)
    nats = np.empty(xt.shape[0])
    g_mu = np.zeros(xt.shape)  # d nats / d mu_theta
    g_lv = np.zeros(xt.shape) if learned else None  # d nats / d log sigma^2

    kl = t >= 2  # L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)), Eqs. (5)-(7)
    if kl.any():
        mu_tilde = _posterior_mean(sched, x0[kl], xt[kl], t[kl])
        log_bt = extract(sched.log_beta_tilde_clipped, t[kl], xt.ndim)  # (b, 1, ..., 1)
        mu_k, lv_k = mu[kl], log_var[kl]
        nats[kl] = _sum_dims(normal_kl(mu_tilde, log_bt, mu_k, lv_k), mu_k.shape)
        if want_grad:
            inv_var = np.exp(-lv_k)
            g_mu[kl] = (mu_k - mu_tilde) * inv_var
            if learned:
                g_lv[kl] = 0.5 * (1.0 - np.exp(log_bt - lv_k) - (mu_tilde - mu_k) ** 2 * inv_var)

    dec = ~kl  # L_0 = -log p(x_0 | x_1), Eq. (13), with log_scale = 0.5 log sigma_1^2
    if dec.any():
        x, m, log_scale = x0[dec], mu[dec], 0.5 * log_var[dec]
        if decoder == "gaussian":
            nll, d_m, d_ls = _gauss_nll(x, m, log_scale)
        elif want_grad:
            _check_on_grid(x)
            logp, d_m, d_ls = _disc_loglik(x, m, log_scale, want_grad=True)
            nll, d_m, d_ls = -logp, -d_m, -d_ls
        else:
            nll = -discretized_gaussian_log_likelihood(x, m, log_scale, cdf=cdf)
        nats[dec] = _sum_dims(nll, x.shape)
        if want_grad:
            g_mu[dec] = d_m
            if learned:
                g_lv[dec] = 0.5 * d_ls
    if not want_grad:
        return nats, None

    # chain rule to the network output: mu_theta = coef1 x0_hat(out) + coef2 xt for every
    # mean type (Eq. 11 is this with x0_hat(eps)), x0_hat linear in out (clipping gates it)
    gain = extract(sched.posterior_mean_coef1, t, xt.ndim) * _x0_gain(sched, t, xt.ndim, mean_type)
    out_mean, v = _split_output(sched, xt, model_output, variance)
    if clip_x0:
        x0_hat = _predict_x0(sched, xt, t, out_mean, mean_type)
        gain = gain * (np.abs(x0_hat) <= 1.0)
    d_mean = np.zeros(xt.shape) if stop_grad_mean else g_mu * gain  # (B, C, ...)
    if not learned:
        return nats, d_mean
    if variance == "learned":  # log sigma^2 = v: d log sigma^2 / dv = 1
        return nats, np.concatenate([d_mean, g_lv], axis=1)  # (B, 2C, ...)
    # Nichol & Dhariwal: log sigma^2 = frac log beta + (1 - frac) log beta_tilde, frac = (v + 1) / 2
    half_range = 0.5 * (extract(np.log(sched.beta), t, xt.ndim)
                        - extract(sched.log_beta_tilde_clipped, t, xt.ndim))
    return nats, np.concatenate([d_mean, g_lv * half_range], axis=1)  # (B, 2C, ...)


def vlb_term(sched, x0, xt, t, eps_theta, variance="fixedlarge", clip_x0=False,
             decoder="discretized", mean_type="eps", cdf="exact"):
    r"""The bound's term at each example's t, nats per example, shape (B,).

    Paper: Eq. (5). For t >= 2, L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))
    summed over dimensions (posterior from Eqs. 6-7, reverse step from :func:`p_mean_var`);
    for t = 1, L_0 = -log p_theta(x_0 | x_1) (:func:`decoder_nll` with mean mu_theta and
    log_scale = 0.5 log sigma_1^2).

    Args:
        x0: (B, ...) data. xt: (B, ...) a draw of q(x_t | x_0). t: int (B,) in 1..T.
        eps_theta: the network output (B, ...) or (B, 2C, ...) for a learned variance; with
            mean_type "x0"/"mu" it is that prediction instead of eps.
    """
    return _vlb(sched, x0, xt, t, eps_theta, mean_type, variance, clip_x0, decoder, cdf, False)[0]


def vlb_term_and_grad(sched, x0, xt, t, eps_theta, variance="fixedlarge", clip_x0=False,
                      decoder="discretized", mean_type="eps", stop_grad_mean=False):
    r"""vlb_term and its exact gradient w.r.t. the network output: (nats (B,), d_eps_theta).

    d_eps_theta is d(sum_b nats_b) / d(eps_theta), same shape as eps_theta. stop_grad_mean=True
    zeroes the mean part (the L_vlb half of Nichol & Dhariwal's hybrid loss trains only the
    variance). The decoder gradient uses the exact CDF.
    """
    return _vlb(sched, x0, xt, t, eps_theta, mean_type, variance, clip_x0, decoder, "exact",
                True, stop_grad_mean)


def _u_minus_log1p(u):
    """u - log(1 + u), accurate for small |u| (it is ~u^2 / 2; the direct form cancels)."""
    u = np.asarray(u, dtype=np.float64)
    p = np.full(u.shape, -1.0 / 13.0)  # Horner on sum_{k=2}^{13} (-1)^k u^(k-2) / k
    for k in range(12, 1, -1):
        p = p * u + (-1.0) ** k / k
    return np.where(np.abs(u) < 1e-2, p * u * u, u - np.log1p(u))


def vlb_weight(sched, t, variance="fixedlarge"):
    r"""Eq. (12)'s weight lambda_t and the per-dimension constant C_t, each shape (B,), t >= 2.

    L_{t-1} = lambda_t ||eps - eps_theta||^2 + D C_t with
    lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) and
    C_t = 0.5 (log(sigma_t^2 / beta_tilde_t) + beta_tilde_t / sigma_t^2 - 1), the KL between the
    two variances (0 for fixedsmall). C_t is computed as 0.5 (u - log(1 + u)),
    u = beta_tilde_t / sigma_t^2 - 1 (= -alpha_bar_{t-1} beta_t / (1 - alpha_bar_t) for
    fixedlarge), which keeps full relative accuracy when beta_tilde_t ~ beta_t (large t).
    """
    t = check_t(sched, t, t_min=2)
    check_choice("variance", variance, VARIANCES[:2])
    sigma2 = fixed_variance(sched, variance)[0][t]  # (B,)
    omab = sched.one_minus_alpha_bar[t]
    lam = sched.beta[t] ** 2 / (2.0 * sigma2 * sched.alpha[t] * omab)
    if variance == "fixedlarge":
        u = -sched.alpha_bar[t - 1] * sched.beta[t] / omab
    else:
        u = np.zeros(t.shape)
    return lam, 0.5 * _u_minus_log1p(u)


def bits_per_dim(nats, D):
    """nats / (D ln 2): a code length per data dimension in bits."""
    return np.asarray(nats) / (D * np.log(2.0))


def l_simple(eps, eps_theta):
    r"""Eq. (14): L_simple = mean over all elements of (eps - eps_theta)^2, and d/d eps_theta.

    Returns:
        (loss: float, d_eps_theta: same shape as eps_theta).
    """
    eps = check_x("eps", eps)
    eps_theta = check_x("eps_theta", eps_theta, shape=eps.shape)
    diff = eps_theta - eps
    return float(np.mean(diff**2)), 2.0 * diff / diff.size


def l_simple_per_example(eps, eps_theta):
    """Per-example (eps - eps_theta)^2 averaged over dimensions, shape (B,) (for logging per t)."""
    eps = check_x("eps", eps)
    eps_theta = check_x("eps_theta", eps_theta, shape=eps.shape)
    return ((eps - eps_theta) ** 2).reshape(eps.shape[0], -1).mean(axis=1)


def __getattr__(name):
    # bound_terms / bound_estimate live in ddpm_ref/bound.py (which imports this module); they
    # are re-exported lazily so that `from ddpm_ref.elbo import bound_terms` works either way.
    if name in ("bound_terms", "bound_estimate"):
        from ddpm_ref import bound

        return getattr(bound, name)
    raise AttributeError(f"module 'ddpm_ref.elbo' has no attribute {name!r}")
