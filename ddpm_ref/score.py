r"""The score view of DDPM (§3.2): scores, Langevin, the reverse SDE, the probability-flow ODE.

Paper: Ho, Jain, Abbeel (2020), §3.2: Algorithm 2 "resembles Langevin dynamics with eps_theta as a
learned gradient of the data density", and Eq. (12) "resembles denoising score matching over
multiple noise scales indexed by t". The pieces this module names:

  score_from_eps     s = -eps / sqrt(1 - abar_t)  (eps* = E[eps | x_t] gives s = grad log q(x_t))
  mixture_score      grad log q(x_t) of Gaussian-mixture data, from its components (no eps*)
  langevin_step      x + delta s(x) + sqrt(2 delta) z     (unadjusted Langevin, one step)
  annealed_langevin_sample   Song & Ermon (2019), Algorithm 1, at DDPM's noise levels q(x_t)
  reverse_sde_mean_var       one Euler-Maruyama step of the reverse-time VP SDE
                             (Song et al. 2021, Eqs. 6 and 11): mean
                             (1 + beta_t / 2) x_t + beta_t s,
                             variance beta_t -- Algorithm 2 to first order in beta_t
  predictor_corrector_sample Algorithm 2's step (predictor) + Langevin steps (corrector),
                             Song et al. (2021), §4.2
  probability_flow_ode_sample  the ODE dx = -beta(t) / 2 (x + grad log q_t(x)) dt (Song et al. 2021,
                             Eq. 13), solved with RK4 in DDIM's variables (Song, Meng, Ermon 2021,
                             §4.3): y = x / sqrt(abar), sigma_bar = sqrt((1 - abar) / abar),
                             dy / d sigma_bar = eps(x). DDIM with eta = 0 is its Euler method.

``model_fn(xt, t) -> eps_theta`` follows docs/architecture.md (called with sched.timesteps[t]).
A "score_fn(x) -> grad log p(x)" is any function of the points alone. Everything is float64.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref._checks import check_choice, check_like, check_rng, check_t, check_x, extract
from ddpm_ref.analytic import GaussianMixture, eps_star, q_xt, responsibilities
from ddpm_ref.diffusion import VARIANCES, p_mean_var
from ddpm_ref.schedule import Schedule


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not np.isscalar(value) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def _check_count(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, got {value!r}")
    return int(value)


def _check_shape(shape) -> tuple:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError("shape: expected a tuple of integers >= 1 like (B, 2)")
    return shape


def _check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise ValueError(f"{name}: expected a callable, got {fn!r}")


# --- scores and noise predictions -----------------------------------------------------------

def score_from_eps(sched, xt, t, eps):
    r"""The score a noise prediction implies: s = -eps / sqrt(1 - abar_t), shape of xt.

    §3.2: with eps = eps*(x_t, t) = E[eps | x_t] this is grad log q(x_t) exactly (Tweedie), since
    grad log q(x_t | x_0) = -(x_t - sqrt(abar_t) x_0) / (1 - abar_t) = -eps / sqrt(1 - abar_t).
    Args: xt (B, ...), t int (B,) in 1..T, eps (B, ...) like xt.
    """
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    eps = check_like("eps", eps, "xt", xt.shape)
    return -eps / np.sqrt(extract(sched.one_minus_alpha_bar, t, xt.ndim))


def eps_from_score(sched, xt, t, score):
    r"""The inverse of :func:`score_from_eps`: eps = -sqrt(1 - abar_t) s."""
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    score = check_like("score", score, "xt", xt.shape)
    return -np.sqrt(extract(sched.one_minus_alpha_bar, t, xt.ndim)) * score


def mixture_score(sched, gmm: GaussianMixture, xt, t: int):
    r"""grad log q(x_t) of Gaussian-mixture data at one step t in 0..T (t = 0: the data), (B, D).

    q(x_t) = sum_k pi_k N(sqrt(abar_t) m_k, C_k), C_k = abar_t S_k + (1 - abar_t) I (Eq. 4), so
    grad log q(x_t) = -sum_k r_k(x_t) C_k^{-1} (x_t - sqrt(abar_t) m_k), r_k the responsibilities.
    Computed from the components of :func:`ddpm_ref.analytic.q_xt` with a linear solve, not from
    eps*: the identity eps* = -sqrt(1 - abar_t) grad log q(x_t) is then a check, not a definition.
    """
    if not isinstance(gmm, GaussianMixture):
        raise ValueError(f"gmm: expected a GaussianMixture, got {type(gmm).__name__}")
    xt = check_x("xt", xt, None)
    if xt.ndim != 2 or xt.shape[1] != gmm.D:
        raise ValueError(f"xt: expected shape (B, {gmm.D}), got {xt.shape}")
    qt = q_xt(sched, gmm, t)  # the mixture q(x_t), validates t
    r = responsibilities(qt, xt)  # (B, K)
    diff = xt[:, None, :] - qt.means[None]  # (B, K, D)
    # C_k^{-1} (x - mean_k) for every k: solve with each (D, D) covariance
    w = np.stack([np.linalg.solve(qt.covs[k], diff[:, k].T).T for k in range(qt.K)], axis=1)
    return -np.sum(r[:, :, None] * w, axis=1)  # (B, D)


def eps_star_fn(gmm: GaussianMixture):
    r"""eps_fn(x, one_minus_alpha_bar) -> eps*(x) for a *continuous* noise level 1 - abar in (0, 1).

    The probability-flow ODE needs eps* between the schedule's steps; a one-step schedule with
    beta_1 = 1 - abar has exactly that marginal, so :func:`ddpm_ref.analytic.eps_star` serves.
    """
    if not isinstance(gmm, GaussianMixture):
        raise ValueError(f"gmm: expected a GaussianMixture, got {type(gmm).__name__}")

    def eps_fn(x, one_minus_alpha_bar):
        one = Schedule.from_betas(np.array([float(one_minus_alpha_bar)]))  # abar_1 = 1 - beta_1
        return eps_star(one, gmm, x, 1)

    return eps_fn


def _score_at(sched, model_fn, x, t: int):
    """-eps_theta(x, t) / sqrt(1 - abar_t) for the whole batch at step t of sched."""
    t_orig = np.full(x.shape[0], sched.timesteps[t], dtype=np.int64)  # (B,)
    eps = np.asarray(model_fn(x, t_orig), dtype=np.float64)
    return -eps / np.sqrt(sched.one_minus_alpha_bar[t])


# --- Langevin dynamics ----------------------------------------------------------------------

def langevin_step(x, score, step_size, z):
    r"""One step of (unadjusted) Langevin dynamics: x + delta grad log p(x) + sqrt(2 delta) z.

    For small delta its stationary law is p; for a Gaussian target N(m, v) the chain is
    x' - m = (1 - delta / v)(x - m) + sqrt(2 delta) z, stationary variance v / (1 - delta / (2 v)).
    (Song & Ermon 2019 write alpha_i / 2 for delta.) Args: x, score, z (B, ...); step_size > 0.
    """
    x = check_x("x", x)
    score = check_like("score", score, "x", x.shape)
    z = check_like("z", z, "x", x.shape)
    delta = _check_positive("step_size", step_size)
    return x + delta * score + np.sqrt(2.0 * delta) * z


def langevin_sample(score_fn, x, rng, *, step_size, n_steps):
    r"""n_steps of :func:`langevin_step` at a fixed target from the starting points x (B, ...)."""
    _check_callable("score_fn", score_fn)
    check_rng(rng)
    x = check_x("x", x).copy()
    delta = _check_positive("step_size", step_size)
    for _ in range(_check_count("n_steps", n_steps)):
        x = x + delta * np.asarray(score_fn(x), dtype=np.float64) \
            + np.sqrt(2.0 * delta) * rng.standard_normal(x.shape)
    return x


def annealed_langevin_sample(sched, model_fn, shape, rng, *, levels, n_steps, step_size):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) at DDPM's noise levels.

    Start from x ~ N(0, I) (= q(x_T) to ~1e-5); for each level t in ``levels`` (descending steps of
    sched), run n_steps Langevin steps at the target q(x_t) with the score of
    :func:`score_from_eps` and step delta_t = step_size (1 - abar_t) / (1 - abar_{t_min}) (NCSN's
    alpha_i = eps sigma_i^2 / sigma_L^2, with sigma_t^2 = 1 - abar_t the noise variance of x_t).
    Returns x (shape) float64, a draw near q(x_{t_min}).
    """
    _check_callable("model_fn", model_fn)
    check_rng(rng)
    levels = np.asarray(levels)
    if levels.ndim != 1 or levels.size < 1 or not np.issubdtype(levels.dtype, np.integer) \
            or levels.min() < 1 or levels.max() > sched.T or np.any(np.diff(levels) >= 0):
        raise ValueError(f"levels: expected strictly decreasing steps in 1..{sched.T}")
    n_steps = _check_count("n_steps", n_steps)
    base = _check_positive("step_size", step_size) / sched.one_minus_alpha_bar[levels[-1]]
    x = rng.standard_normal(_check_shape(shape))  # (B, ...)
    for t in levels:
        delta = base * sched.one_minus_alpha_bar[t]  # delta_t proportional to sigma_t^2
        for _ in range(n_steps):
            s = _score_at(sched, model_fn, x, int(t))
            x = x + delta * s + np.sqrt(2.0 * delta) * rng.standard_normal(x.shape)
    return x


# --- the reverse-time SDE and predictor-corrector ---------------------------------------------

def reverse_sde_mean_var(sched, xt, t, score):
    r"""Mean and variance of one Euler-Maruyama step of the reverse-time VP SDE, x_t -> x_{t-1}.

    The VP SDE dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw (Song et al. 2021, Eq. 11) has the
    reverse dx = [-beta(t) x / 2 - beta(t) grad log q_t(x)] dt + sqrt(beta(t)) dw_bar (their
    Eq. 6). One step back with beta(t) dt -> beta_t:
        x_{t-1} = (1 + beta_t / 2) x_t + beta_t s(x_t) + sqrt(beta_t) z.
    Algorithm 2 (line 4, Eq. 11 with eps = -sqrt(1 - abar_t) s, sigma_t^2 = beta_t) has mean
    (x_t + beta_t s) / sqrt(alpha_t): the same to O(beta_t^2), the same variance. Langevin at
    step delta = beta_t would add noise sqrt(2 beta_t): the reverse SDE is half a Langevin step
    (delta = beta_t / 2) plus the probability-flow drift -beta_t (x + s) / 2.
    Returns (mean (B, ...), variance (B, 1, ..., 1)).
    """
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    score = check_like("score", score, "xt", xt.shape)
    beta = extract(sched.beta, t, xt.ndim)  # (B, 1, ..., 1)
    return (1.0 + 0.5 * beta) * xt + beta * score, beta


def _mean_norm(a):
    """Mean over the batch of the per-example Euclidean norm."""
    return float(np.mean(np.sqrt(np.sum(a.reshape(a.shape[0], -1) ** 2, axis=1))))


def predictor_corrector_sample(sched, model_fn, shape, rng, *, n_corrector=1, snr=0.1,
                               variance="fixedlarge"):
    r"""Predictor-corrector sampling (Song et al. 2021, §4.2) with Algorithm 2 as the predictor.

    For t = T..1: the predictor is line 4 of Algorithm 2 (x_{t-1} ~ p_theta(x_{t-1} | x_t)); then,
    for t - 1 >= 1, the corrector takes n_corrector Langevin steps at the target q(x_{t-1}) with
    the score s of :func:`score_from_eps` and Song et al.'s signal-to-noise step
    delta = 2 alpha_{t-1} (snr ||z|| / ||s||)^2, the norms per example averaged over the batch
    (so the step follows the score's scale at every noise level; the batch shares one delta).
    n_corrector = 0 is Algorithm 2. Returns x0 (shape) float64.
    """
    _check_callable("model_fn", model_fn)
    check_rng(rng)
    n_corrector = _check_count("n_corrector", n_corrector, lo=0)
    snr = _check_positive("snr", snr)
    check_choice("variance", variance, VARIANCES[:2])
    x = rng.standard_normal(_check_shape(shape))  # Algorithm 2, line 1
    B = x.shape[0]
    for t in range(sched.T, 0, -1):
        tt = np.full(B, t, dtype=np.int64)
        out = np.asarray(model_fn(x, np.full(B, sched.timesteps[t])), dtype=np.float64)
        mu, _, log_sigma2 = p_mean_var(sched, x, tt, out, variance=variance)
        # predictor: Algorithm 2, lines 3-4 (no noise at t = 1)
        x = mu + (np.exp(0.5 * log_sigma2) * rng.standard_normal(x.shape) if t > 1 else 0.0)
        if t > 1:  # corrector at the level t - 1 (there is no score model at t = 0)
            for _ in range(n_corrector):
                s = _score_at(sched, model_fn, x, t - 1)
                z = rng.standard_normal(x.shape)
                ratio = _mean_norm(z) / _mean_norm(s)  # ||z|| / ||s||, batch means
                delta = 2.0 * sched.alpha[t - 1] * (snr * ratio) ** 2
                x = x + delta * s + np.sqrt(2.0 * delta) * z
    return x


# --- the probability-flow ODE -----------------------------------------------------------------

def sigma_bar_grid(sigma_bar_max, n_steps, *, rho=7.0):
    r"""n_steps + 1 noise levels from sigma_bar_max down to 0 (Karras et al. 2022, Eq. 5, with
    sigma_min = 0).

    sigma_i = (sigma_max^{1/rho} (1 - i / n))^rho: steps crowd near 0, where eps* changes fastest.
    """
    smax = _check_positive("sigma_bar_max", sigma_bar_max)
    n = _check_count("n_steps", n_steps)
    rho = _check_positive("rho", rho)
    return (smax ** (1.0 / rho) * (1.0 - np.arange(n + 1) / n)) ** rho  # (n+1,), ends at 0


def probability_flow_ode_sample(eps_fn, x_T, *, alpha_bar_T, n_steps, rho=7.0):
    r"""Solve the probability-flow ODE from x_T at abar_T down to the data (abar = 1), RK4.

    Song et al. (2021), Eq. 13, for the VP SDE: dx = -beta(t) / 2 [x + grad log q_t(x)] dt. In
    DDIM's variables (Song, Meng, Ermon 2021, §4.3), y = x / sqrt(abar) and
    sigma_bar = sqrt((1 - abar) / abar), it reads dy / d sigma_bar = eps(x, 1 - abar) with
    x = y / sqrt(1 + sigma_bar^2), which does not depend on how beta(t) is spread over time: one
    ODE for every schedule with the same abar_T. Classical RK4 on :func:`sigma_bar_grid`.

    Args:
        eps_fn: eps_fn(x (B, D), one_minus_alpha_bar: float) -> (B, D), e.g. :func:`eps_star_fn`.
        x_T: (B, D) starting points. alpha_bar_T: in (0, 1). n_steps: RK4 steps.
    Returns:
        x_0 (B, D) float64 (at sigma_bar = 0, x = y).
    """
    _check_callable("eps_fn", eps_fn)
    x_T = check_x("x_T", x_T)
    ab = _check_positive("alpha_bar_T", alpha_bar_T)
    if ab >= 1.0:
        raise ValueError(f"alpha_bar_T: expected a number in (0, 1), got {alpha_bar_T!r}")
    sig = sigma_bar_grid(np.sqrt((1.0 - ab) / ab), n_steps, rho=rho)  # (n+1,)

    def f(y, s):  # dy / d sigma_bar at noise level s
        return np.asarray(eps_fn(y / np.sqrt(1.0 + s * s), s * s / (1.0 + s * s)), np.float64)

    y = x_T / np.sqrt(ab)  # (B, D)
    for s0, s1 in zip(sig[:-1], sig[1:], strict=True):
        h, sm = s1 - s0, 0.5 * (s0 + s1)  # h < 0: sigma_bar decreases
        k1 = f(y, s0)
        k2 = f(y + 0.5 * h * k1, sm)
        k3 = f(y + 0.5 * h * k2, sm)
        k4 = f(y + h * k3, s1) if s1 > 0 else np.zeros_like(y)  # eps = 0 at sigma_bar = 0
        y = y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return y
