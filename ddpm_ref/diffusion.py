r"""The forward process, its posterior, and the reverse-process mean and variance.

Paper: Ho, Jain, Abbeel (2020), §2 (Eqs. 2, 4, 6-7) and §3.2 (Eq. 11, choice of sigma_t^2);
learned variances from Nichol & Dhariwal (2021), §3.1.

All maths in float64. ``t`` is always an int array of shape (B,) holding paper timesteps 1..T
(one per example); per-timestep coefficients are gathered with ``extract`` to (B, 1, ..., 1).

Parametrisations of the reverse mean mu_theta(x_t, t), one row each in ``PARAMETRISATIONS``
(the paper's Table 2 ablation has the first three): ``mean_type="eps"`` (predict eps, Eq. 11),
``"x0"`` (predict x_0 and plug it into Eq. 7), ``"mu"`` (predict mu_tilde directly) and ``"v"``
(Salimans & Ho 2022, v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0). Reverse variances, one
row each in ``VARIANCE_TABLE``: ``"fixedlarge"`` (sigma_t^2 =
beta_t), ``"fixedsmall"`` (sigma_t^2 = beta_tilde_t), ``"learned"`` (the paper's "learned diagonal
Sigma" of Table 2: the network outputs v = log sigma_t^2 per dimension) and ``"learned_range"``
(Nichol & Dhariwal: v interpolates between log beta_tilde_t and log beta_t). A learned variance
doubles the network's output along axis 1: (B, 2C, ...) = [mean output | v].
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ddpm_ref._checks import check_choice, check_like, check_t, check_x, extract


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
    return _q_sample(sched, x0, t, eps)


def _q_sample(sched, x0, t, eps):
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


def _eps_from_x0(sched, xt, t, x0):
    ab = extract(sched.alpha_bar, t, xt.ndim)  # (B, 1, ..., 1)
    omab = extract(sched.one_minus_alpha_bar, t, xt.ndim)
    return (xt - np.sqrt(ab) * x0) / np.sqrt(omab)


def eps_from_x0(sched, xt, t, x0):
    r"""eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t): Eq. (4) solved for eps."""
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    x0 = check_like("x0", x0, "xt", xt.shape)
    return _eps_from_x0(sched, xt, t, x0)


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


# ---- the parametrisation table: how each mean_type's output relates to x_0, eps and mu ----
# x0_hat is linear in the output for every row, so d x0_hat / d out is a per-t gain (B, 1, ..., 1).
# ``mu`` and ``eps`` may be None: mu_theta is then Eq. (7) at x0_hat, eps_hat Eq. (4) at x0_hat.

class Parametrisation(NamedTuple):
    target: Callable  # (sched, x0, xt, t, eps) -> what the output regresses on under L_simple
    x0: Callable  # (sched, xt, t, out) -> x0_hat
    x0_gain: Callable  # (sched, t, ndim) -> d x0_hat / d out, (B, 1, ..., 1)
    mu: Callable | None  # (sched, xt, t, out) -> mu_theta, when not Eq. (7) at x0_hat
    eps: Callable | None  # (sched, xt, t, out) -> eps_hat, when not Eq. (4) at x0_hat


def _coef(sched, name, t, ndim):
    return extract(getattr(sched, name), t, ndim)  # (B, 1, ..., 1)


def _x0_from_mu(sched, xt, t, mu):
    # Eq. (7) solved for x0 given mu_tilde = mu
    c1 = _coef(sched, "posterior_mean_coef1", t, xt.ndim)  # (B, 1, ..., 1)
    c2 = _coef(sched, "posterior_mean_coef2", t, xt.ndim)
    return (mu - c2 * xt) / c1


def _sqrt_ab(sched, t, ndim):
    """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)), each (B, 1, ..., 1)."""
    return (np.sqrt(_coef(sched, "alpha_bar", t, ndim)),
            np.sqrt(_coef(sched, "one_minus_alpha_bar", t, ndim)))


def _v_target(sched, x0, xt, t, eps):
    # Salimans & Ho (2022): v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0
    sa, so = _sqrt_ab(sched, t, x0.ndim)
    return sa * eps - so * x0


def _x0_from_v(sched, xt, t, v):
    # x0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v (Eq. 4 and the definition of v)
    sa, so = _sqrt_ab(sched, t, xt.ndim)
    return sa * xt - so * v


def _eps_from_v(sched, xt, t, v):
    # eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v
    sa, so = _sqrt_ab(sched, t, xt.ndim)
    return so * xt + sa * v


PARAMETRISATIONS = {
    "eps": Parametrisation(  # Eq. (11)
        target=lambda sched, x0, xt, t, eps: eps,
        x0=_x0_from_eps,
        x0_gain=lambda sched, t, nd: (-np.sqrt(_coef(sched, "one_minus_alpha_bar", t, nd))
                                      / np.sqrt(_coef(sched, "alpha_bar", t, nd))),
        mu=_mu_from_eps,
        eps=lambda sched, xt, t, out: out),
    "x0": Parametrisation(  # x0_hat = out, then Eq. (7)
        target=lambda sched, x0, xt, t, eps: x0,
        x0=lambda sched, xt, t, out: out,
        x0_gain=lambda sched, t, nd: np.ones((t.shape[0],) + (1,) * (nd - 1)),
        mu=None, eps=None),
    "mu": Parametrisation(  # mu_theta = out; Eq. (7) inverted for x0_hat
        target=lambda sched, x0, xt, t, eps: _posterior_mean(sched, x0, xt, t),
        x0=_x0_from_mu,
        x0_gain=lambda sched, t, nd: 1.0 / _coef(sched, "posterior_mean_coef1", t, nd),
        mu=lambda sched, xt, t, out: out, eps=None),
    "v": Parametrisation(  # Salimans & Ho (2022)
        target=_v_target,
        x0=_x0_from_v,
        x0_gain=lambda sched, t, nd: -_sqrt_ab(sched, t, nd)[1],
        mu=None, eps=_eps_from_v),
}
MEAN_TYPES = tuple(PARAMETRISATIONS)


def parametrisation(mean_type) -> Parametrisation:
    """The PARAMETRISATIONS row of ``mean_type`` (a ValueError naming mean_type if unknown)."""
    return PARAMETRISATIONS[check_choice("mean_type", mean_type, MEAN_TYPES)]


def _predict_x0(sched, xt, t, out, mean_type):
    return PARAMETRISATIONS[mean_type].x0(sched, xt, t, out)


def _x0_gain(sched, t, ndim, mean_type):
    """d x0_hat / d model_output (x0_hat is linear in the output for every mean type)."""
    return PARAMETRISATIONS[mean_type].x0_gain(sched, t, ndim)


def _mean_from_out(sched, xt, t, out, mean_type):
    """mu_theta from the (unclipped) mean output."""
    p = PARAMETRISATIONS[mean_type]
    return p.mu(sched, xt, t, out) if p.mu is not None else _posterior_mean(
        sched, p.x0(sched, xt, t, out), xt, t)


def _eps_hat(sched, xt, t, out, mean_type, x0_hat=None):
    """The noise the output implies: the row's own formula, or Eq. (4) at x0_hat (given or not)."""
    p = PARAMETRISATIONS[mean_type]
    if p.eps is not None and x0_hat is None:
        return p.eps(sched, xt, t, out)
    return _eps_from_x0(sched, xt, t, p.x0(sched, xt, t, out) if x0_hat is None else x0_hat)


def regression_target(sched, x0, xt, t, eps, mean_type):
    """What the output regresses on under L_simple (Eq. 14 for eps): eps, x0, mu_tilde, v."""
    return parametrisation(mean_type).target(sched, x0, xt, t, eps)


# ---- the variance table: sigma_t^2 of p_theta(x_{t-1} | x_t); if learned, d log sigma^2 / dv ----

class Variance(NamedTuple):
    learned: bool  # the network outputs v in the second half of axis 1
    log_sigma2: Callable  # (sched, t, ndim, v) -> (sigma2, log_sigma2), broadcasting against xt
    dlog_dv: Callable | None  # (sched, t, ndim) -> d log sigma^2 / d v (learned only)
    fixed: Callable | None = None  # (sched) -> (sigma2, log_sigma2), each (T+1,) (fixed only)


def _beta_large(sched):
    sigma2 = np.array(sched.beta)  # (T+1,)
    if sched.T >= 2:
        sigma2[1] = sched.beta_tilde[2]  # Ho et al.: the decoder's scale is not beta_1
    return sigma2, np.log(sigma2)


def _beta_tilde(sched):
    return sched.beta_tilde, sched.log_beta_tilde_clipped


def _gather(fixed):
    def log_sigma2(sched, t, ndim, v):
        s2, log_s2 = fixed(sched)
        return extract(s2, t, ndim), extract(log_s2, t, ndim)  # (B, 1, ..., 1) each
    return log_sigma2


def _learned_range(sched, t, ndim, v):
    # Nichol & Dhariwal Eq. (15): log sigma^2 = frac log beta_t + (1 - frac) log beta_tilde_t
    frac = (v + 1.0) / 2.0  # (B, C, ...)
    log_max = extract(np.log(sched.beta), t, ndim)  # (B, 1, ..., 1)
    log_min = extract(sched.log_beta_tilde_clipped, t, ndim)
    log_sigma2 = frac * log_max + (1.0 - frac) * log_min  # (B, C, ...)
    return np.exp(log_sigma2), log_sigma2


def _learned_range_gain(sched, t, ndim):
    return 0.5 * (extract(np.log(sched.beta), t, ndim)
                  - extract(sched.log_beta_tilde_clipped, t, ndim))


VARIANCE_TABLE = {
    "fixedlarge": Variance(False, _gather(_beta_large), None, _beta_large),  # sigma^2 = beta_t
    "fixedsmall": Variance(False, _gather(_beta_tilde), None, _beta_tilde),  # = beta_tilde_t
    "learned_range": Variance(True, _learned_range, _learned_range_gain),
    # Table 2's "learned diagonal Sigma": the output is log sigma_t^2 itself
    "learned": Variance(True, lambda sched, t, ndim, v: (np.exp(v), v), None),
}
VARIANCES = tuple(VARIANCE_TABLE)
LEARNED_VARIANCES = tuple(k for k, row in VARIANCE_TABLE.items() if row.learned)
FIXED_VARIANCES = tuple(k for k, row in VARIANCE_TABLE.items() if not row.learned)


def output_mult(variance):
    """How many times the data channels the network outputs: 2 for a learned variance, else 1."""
    return 2 if VARIANCE_TABLE[check_choice("variance", variance, VARIANCES)].learned else 1


def _split_output(sched, xt, model_output, variance):
    """(mean part (B, ...), v or None): checks the shape of the network output."""
    out = check_x("model_output", model_output)
    if VARIANCE_TABLE[variance].learned:
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


def predict_x0(sched, xt, t, model_output, mean_type="eps", clip_x0=False):
    r"""The network's estimate of x_0 from its (mean) output under each parametrisation.

    eps: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_bar_t) (Eq. 4 inverted);
    x0: the output itself; mu: Eq. (7) solved for x_0; v: sqrt(alpha_bar_t) x_t
    - sqrt(1 - alpha_bar_t) v. ``clip_x0`` clips x0_hat to [-1, 1].

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
    check_choice("variance", variance, FIXED_VARIANCES)
    return VARIANCE_TABLE[variance].fixed(sched)


def p_mean_var(sched, xt, t, model_output, *, mean_type="eps", variance="fixedlarge",
               clip_x0=False):
    r"""Mean and variance of the reverse step p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I).

    Paper: Eq. (1) and §3.2. mean_type "eps" uses Eq. (11); "x0" and "v" plug x0_hat into Eq. (7);
    "mu" takes the output as mu_theta (see ``PARAMETRISATIONS``). variance: see
    :func:`fixed_variance`; the learned ones read v from the second half of axis 1 of the output:
    ``learned`` (Table 2's "learned diagonal Sigma") sets log sigma^2 = v, and ``learned_range``
    (Nichol & Dhariwal 2021, Eq. 15) sets log sigma^2 = frac log beta_t
    + (1 - frac) log beta_tilde_t (clipped), frac = (v + 1) / 2.

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
    return _p_mean_var(sched, xt, t, model_output, mean_type, variance, clip_x0)


def _p_mean_var(sched, xt, t, model_output, mean_type, variance, clip_x0):
    out, v = _split_output(sched, xt, model_output, variance)
    sigma2, log_sigma2 = VARIANCE_TABLE[variance].log_sigma2(sched, t, xt.ndim, v)
    if clip_x0:
        x0_hat = np.clip(_predict_x0(sched, xt, t, out, mean_type), -1.0, 1.0)
        mu = _posterior_mean(sched, x0_hat, xt, t)
    else:
        mu = _mean_from_out(sched, xt, t, out, mean_type)  # Eq. (11) for eps, Eq. (7) at x0_hat
    return mu, sigma2, log_sigma2
