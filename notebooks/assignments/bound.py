r"""Assignment "bound" (lectures 3-5): one term of the bound, Eqs. (8)-(12), and Eq. (13).

Fill in the bodies, then grade your file:

    python -m ddpm_ref.grade bound bound.py

Use NumPy and scipy.special (ndtr, log_ndtr); not ddpm_ref.elbo. Schedule arrays have length
T + 1, index t = the paper's t.
"""

import numpy as np  # noqa: F401 (you will need it)
from scipy import special  # noqa: F401 (ndtr, log_ndtr)


def normal_kl(mean1, logvar1, mean2, logvar2):
    r"""Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats; arguments broadcast.

    Hint: 0.5 (logvar2 - logvar1 + e^{logvar1 - logvar2} - 1 + (mean1 - mean2)^2 e^{-logvar2}).
    Derive it from the definition of the KL once (notebook 03 has the steps).
    """
    raise NotImplementedError


def vlb_term(sched, x0, xt, t, eps_theta):
    r"""L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) summed over dimensions, in
    nats, for t >= 2, with sigma_t^2 = beta_t (Eqs. 5, 8).

    p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I) with mu_theta from Eq. (11):
    mu_theta = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta).

    Args:
        x0, xt, eps_theta: (B, ...) float64. t: int array (B,), each in 2..T.
    Returns:
        (B,): one KL per example.

    Hints: the posterior's mean and variance are Eq. (7) (your q_posterior of the previous
    assignment). Log-variances: log beta_tilde_t and log beta_t. Sum over every axis but the first.
    """
    raise NotImplementedError


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    r"""Elementwise log p(x | mean, sigma = e^log_scale) on the 256-level grid (Eq. 13).

    The Gaussian's mass on the bin [x - 1/255, x + 1/255] for x = k / 127.5 - 1, k = 0..255,
    with the edge bins open: x = -1 takes (-inf, -1 + 1/255], x = 1 takes [1 - 1/255, +inf).

    Args:
        x: data on the grid. mean, log_scale: same shape as x.
    Returns:
        log-probabilities, shape of x.

    Hints: Phi(z) = special.ndtr(z); standardise the bin's edges with (edge - mean) / sigma.
    Test yourself: the 256 probabilities for one (mean, sigma) should sum to 1.
    """
    raise NotImplementedError
