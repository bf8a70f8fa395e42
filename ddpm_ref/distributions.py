r"""The bound's distributions: the Gaussian KL, the discretized decoder of Eq. (13), a Gaussian NLL.

Paper: Ho, Jain, Abbeel (2020), Eq. (5) (every L_{t-1} is a KL between two Gaussians) and §3.3,
Eq. (13) (the discretized decoder p_theta(x_0 | x_1)). ``ddpm_ref/elbo.py`` builds the bound's
terms from these elementwise functions; nothing here knows about schedules or timesteps.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from ddpm_ref._checks import check_choice, check_param, check_x

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


def _u_minus_log1p(u):
    """u - log(1 + u), accurate for small |u| (it is ~u^2 / 2; the direct form cancels)."""
    u = np.asarray(u, dtype=np.float64)
    p = np.full(u.shape, -1.0 / 13.0)  # Horner on sum_{k=2}^{13} (-1)^k u^(k-2) / k
    for k in range(12, 1, -1):
        p = p * u + (-1.0) ** k / k
    return np.where(np.abs(u) < 1e-2, p * u * u, u - np.log1p(u))


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
