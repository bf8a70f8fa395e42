r"""The forward process, its posterior, and the reverse-process mean and variance.

Paper: Ho, Jain, Abbeel (2020), §2 (Eqs. 2, 4, 6-7) and §3.2 (Eq. 11, choice of sigma_t^2);
learned variances from Nichol & Dhariwal (2021), §3.1.

All maths in float64. ``t`` is always an int array of shape (B,) holding paper timesteps 1..T
(one per example); per-timestep coefficients are gathered with ``extract`` to (B, 1, ..., 1).

Three parametrisations of the reverse mean mu_theta(x_t, t) (the paper's Table 2 ablation):
``mean_type="eps"`` (predict eps, Eq. 11), ``"x0"`` (predict x_0 and plug it into Eq. 7) and
``"mu"`` (predict mu_tilde directly). Four reverse variances: ``"fixedlarge"`` (sigma_t^2 =
beta_t), ``"fixedsmall"`` (sigma_t^2 = beta_tilde_t), ``"learned"`` (the paper's "learned diagonal
Sigma" of Table 2: the network outputs v = log sigma_t^2 per dimension) and ``"learned_range"``
(Nichol & Dhariwal: v interpolates between log beta_tilde_t and log beta_t). A learned variance
doubles the network's output along axis 1: (B, 2C, ...) = [mean output | v].
"""

from __future__ import annotations

import numpy as np

from ddpm_ref._checks import check_choice, check_like, check_t, check_x, extract

MEAN_TYPES = ("eps", "x0", "mu")
VARIANCES = ("fixedlarge", "fixedsmall", "learned_range", "learned")
LEARNED_VARIANCES = ("learned_range", "learned")  # the network outputs (B, 2C, ...): mean | v


def output_mult(variance):
    """How many times the data channels the network outputs: 2 for a learned variance, else 1."""
    check_choice("variance", variance, VARIANCES)
    return 2 if variance in LEARNED_VARIANCES else 1


def q_step(sched, x_prev, t, eps):
    r"""One forward step: a draw of x_t ~ q(x_t | x_{t-1}) given the noise eps.

    Paper: Eq. (2), x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps.

    Args:
        x_prev: (B, ...) float, x_{t-1}. t: int (B,) in 1..T. eps: (B, ...) standard normal noise.
    Returns:
        x_t: (B, ...) float64.
    """
    x_prev = check_x("x_prev", x_prev)
    t = check_t(sched, t, x_prev.shape[0])
    eps = check_like("eps", eps, "x_prev", x_prev.shape)
    beta = extract(sched.beta, t, x_prev.ndim)  # (B, 1, ..., 1)
    return np.sqrt(1.0 - beta) * x_prev + np.sqrt(beta) * eps


def q_sample(sched, x0, t, eps):
    r"""A draw of x_t ~ q(x_t | x_0) given the noise eps.

    Paper: Eq. (4), q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), so
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

    Args:
        x0: (B, ...) float data. t: int (B,) in 1..T. eps: (B, ...) standard normal noise.
    Returns:
        x_t: (B, ...) float64.
    """
    x0 = check_x("x0", x0)
    t = check_t(sched, t, x0.shape[0])
    eps = check_like("eps", eps, "x0", x0.shape)
    alpha_bar = extract(sched.alpha_bar, t, x0.ndim)  # (B, 1, ..., 1)
    one_minus = extract(sched.one_minus_alpha_bar, t, x0.ndim)
    return np.sqrt(alpha_bar) * x0 + np.sqrt(one_minus) * eps


def q_posterior(sched, x0, xt, t):
    r"""Mean and variance of the forward-process posterior q(x_{t-1} | x_t, x_0).

    Paper: Eqs. (6)-(7): mu_tilde = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
    + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t, and
    beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (0 at t = 1).

    Returns:
        (mu_tilde (B, ...), beta_tilde (B, 1, ..., 1)).
    """
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    x0 = check_like("x0", x0, "xt", xt.shape)
    return _posterior_mean(sched, x0, xt, t), extract(sched.beta_tilde, t, xt.ndim)


def _posterior_mean(sched, x0, xt, t):
    # Eq. (7): mu_tilde = coef1 x0 + coef2 xt (inputs already checked)
    c1 = extract(sched.posterior_mean_coef1, t, xt.ndim)  # (B, 1, ..., 1)
    c2 = extract(sched.posterior_mean_coef2, t, xt.ndim)
    return c1 * x0 + c2 * xt


def _x0_from_eps(sched, xt, t, eps):
    ab = extract(sched.alpha_bar, t, xt.ndim)  # (B, 1, ..., 1)
    omab = extract(sched.one_minus_alpha_bar, t, xt.ndim)
    return (xt - np.sqrt(omab) * eps) / np.sqrt(ab)


def _mu_from_eps(sched, xt, t, eps):
    beta = extract(sched.beta, t, xt.ndim)  # (B, 1, ..., 1)
    omab = extract(sched.one_minus_alpha_bar, t, xt.ndim)
    return (xt - beta / np.sqrt(omab) * eps) / np.sqrt(1.0 - beta)


def x0_from_eps(sched, xt, t, eps):
    r"""x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): Eq. (4) solved for x_0."""
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    return _x0_from_eps(sched, xt, t, check_like("eps", eps, "xt", xt.shape))


def eps_from_x0(sched, xt, t, x0):
    r"""eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t): Eq. (4) solved for eps."""
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    x0 = check_like("x0", x0, "xt", xt.shape)
    ab = extract(sched.alpha_bar, t, xt.ndim)  # (B, 1, ..., 1)
    omab = extract(sched.one_minus_alpha_bar, t, xt.ndim)
    return (xt - np.sqrt(ab) * x0) / np.sqrt(omab)


def mu_from_eps(sched, xt, t, eps):
    r"""The reverse mean of the eps-parametrisation.

    Paper: Eq. (11), mu_theta = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta);
    it equals mu_tilde(x0_from_eps(x_t, eps), x_t) of Eq. (7).
    """
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    return _mu_from_eps(sched, xt, t, check_like("eps", eps, "xt", xt.shape))


def eps_from_mu(sched, xt, t, mu):
    r"""The inverse of Eq. (11): eps = (x_t - sqrt(alpha_t) mu) sqrt(1 - alpha_bar_t) / beta_t."""
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    mu = check_like("mu", mu, "xt", xt.shape)
    beta = extract(sched.beta, t, xt.ndim)  # (B, 1, ..., 1)
    omab = extract(sched.one_minus_alpha_bar, t, xt.ndim)
    return (xt - np.sqrt(1.0 - beta) * mu) * np.sqrt(omab) / beta


def _split_output(sched, xt, model_output, variance):
    """(mean part (B, ...), v or None): checks the shape of the network output."""
    out = check_x("model_output", model_output)
    if variance in LEARNED_VARIANCES:
        want = (xt.shape[0], 2 * xt.shape[1]) + xt.shape[2:] if xt.ndim >= 2 else None
        if want is None or out.shape != want:
            raise ValueError(
                f"model_output: expected shape {want} (twice the channels of xt along axis 1 for "
                f"variance={variance!r}), got {out.shape}"
            )
        C = xt.shape[1]
        return out[:, :C], out[:, C:]  # (B, C, ...) each
    if out.shape != xt.shape:
        raise ValueError(f"model_output: expected shape {xt.shape} (that of xt), got {out.shape}")
    return out, None


def _x0_gain(sched, t, ndim, mean_type):
    """d x0_hat / d model_output (x0_hat is linear in the output for every mean type)."""
    if mean_type == "eps":
        ab = extract(sched.alpha_bar, t, ndim)  # (B, 1, ..., 1)
        return -np.sqrt(extract(sched.one_minus_alpha_bar, t, ndim)) / np.sqrt(ab)
    if mean_type == "x0":
        return np.ones((t.shape[0],) + (1,) * (ndim - 1))
    return 1.0 / extract(sched.posterior_mean_coef1, t, ndim)  # "mu": invert Eq. (7)


def _predict_x0(sched, xt, t, out, mean_type):
    if mean_type == "eps":
        return _x0_from_eps(sched, xt, t, out)
    if mean_type == "x0":
        return out
    # "mu": solve Eq. (7) for x0 given mu_tilde = out
    c1 = extract(sched.posterior_mean_coef1, t, xt.ndim)  # (B, 1, ..., 1)
    c2 = extract(sched.posterior_mean_coef2, t, xt.ndim)
    return (out - c2 * xt) / c1


def predict_x0(sched, xt, t, model_output, mean_type="eps", clip_x0=False):
    r"""The network's estimate of x_0 from its (mean) output under each parametrisation.

    eps: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_bar_t) (Eq. 4 inverted);
    x0: the output itself; mu: Eq. (7) solved for x_0. ``clip_x0`` clips x0_hat to [-1, 1].

    Args:
        xt: (B, ...). t: int (B,). model_output: (B, ...) same shape as xt (the mean part only).
    Returns:
        x0_hat: (B, ...) float64.
    """
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    check_choice("mean_type", mean_type, MEAN_TYPES)
    out, _ = _split_output(sched, xt, model_output, "fixedlarge")
    x0_hat = _predict_x0(sched, xt, t, out, mean_type)
    return np.clip(x0_hat, -1.0, 1.0) if clip_x0 else x0_hat


def fixed_variance(sched, variance):
    r"""Per-timestep (sigma2, log_sigma2), each (T+1,), of a fixed reverse variance (§3.2).

    ``fixedlarge``: sigma_t^2 = beta_t, except sigma_1^2 = beta_tilde_2 as in Ho et al.'s code
    (``np.append(posterior_variance[1], betas[1:])``), so the decoder's scale is not beta_1.
    ``fixedsmall``: sigma_t^2 = beta_tilde_t (0 at t = 1), log = ``log_beta_tilde_clipped``.
    """
    check_choice("variance", variance, ("fixedlarge", "fixedsmall"))
    if variance == "fixedsmall":
        return sched.beta_tilde, sched.log_beta_tilde_clipped
    sigma2 = np.array(sched.beta)  # (T+1,)
    if sched.T >= 2:
        sigma2[1] = sched.beta_tilde[2]
    return sigma2, np.log(sigma2)


def p_mean_var(sched, xt, t, model_output, mean_type="eps", variance="fixedlarge",
               clip_x0=False):
    r"""Mean and variance of the reverse step p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I).

    Paper: Eq. (1) and §3.2. mean_type "eps" uses Eq. (11); "x0" plugs x0_hat into Eq. (7);
    "mu" takes the output as mu_theta. variance: see :func:`fixed_variance`; the learned ones read
    v from the second half of axis 1 of model_output: ``learned`` (Table 2's "learned diagonal
    Sigma") sets log sigma^2 = v, and ``learned_range`` (Nichol & Dhariwal 2021, Eq. 15) sets
    log sigma^2 = frac log beta_t + (1 - frac) log beta_tilde_t (clipped), frac = (v + 1) / 2.

    clip_x0 (off by default): a departure from Eq. (11) that Ho et al.'s sampler and evaluation
    make: x0_hat is clipped to [-1, 1] and mu_theta = mu_tilde(x0_hat_clipped, x_t) by Eq. (7),
    for every mean_type (Ho et al.'s code leaves a "mu" output unclipped).

    Args:
        xt: (B, ...). t: int (B,) in 1..T. model_output: (B, ...) like xt, or (B, 2C, ...) for
            a learned variance.
    Returns:
        (mu_theta (B, ...), sigma2, log_sigma2), the last two (B, 1, ..., 1) for fixed variances
        and (B, ...) for learned ones.
    """
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    check_choice("mean_type", mean_type, MEAN_TYPES)
    check_choice("variance", variance, VARIANCES)
    out, v = _split_output(sched, xt, model_output, variance)

    if variance == "learned_range":
        frac = (v + 1.0) / 2.0  # (B, C, ...)
        log_max = extract(np.log(sched.beta), t, xt.ndim)  # (B, 1, ..., 1)
        log_min = extract(sched.log_beta_tilde_clipped, t, xt.ndim)
        log_sigma2 = frac * log_max + (1.0 - frac) * log_min  # (B, C, ...)
        sigma2 = np.exp(log_sigma2)
    elif variance == "learned":
        log_sigma2 = v  # (B, C, ...): the output is log sigma_t^2 itself
        sigma2 = np.exp(log_sigma2)
    else:
        s2, log_s2 = fixed_variance(sched, variance)
        sigma2, log_sigma2 = extract(s2, t, xt.ndim), extract(log_s2, t, xt.ndim)

    if clip_x0:
        x0_hat = np.clip(_predict_x0(sched, xt, t, out, mean_type), -1.0, 1.0)
        mu = _posterior_mean(sched, x0_hat, xt, t)
    elif mean_type == "eps":
        mu = _mu_from_eps(sched, xt, t, out)  # Eq. (11)
    elif mean_type == "x0":
        mu = _posterior_mean(sched, out, xt, t)  # Eq. (7) at x0_hat
    else:
        mu = out
    return mu, sigma2, log_sigma2
