r"""Assignment "posterior": q(x_{t-1} | x_t, x_0), Eqs. (6)-(7).

Paper: Ho, Jain, Abbeel (2020), §2, Eqs. (6)-(7): mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t /
(1 - alpha_bar_t) x_0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t and
beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref import diffusion
from ddpm_ref.grade._common import paper_schedule, rng, timesteps
from ddpm_ref.grade._core import Assignment, Check, close, student_fn


def _inputs(seed, shape=(64, 3), t_min=1):
    sched, g = paper_schedule(), rng(seed)
    x0, xt = g.standard_normal(shape), g.standard_normal(shape)
    return sched, x0, xt, timesteps(sched.T, shape[0], g, t_min)


def _call(m, sched, x0, xt, t):
    out = student_fn(m, "q_posterior")(sched, x0, xt, t)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise AssertionError("q_posterior: expected a pair (mu_tilde, beta_tilde)")
    return out


def _variance(m):
    sched, x0, xt, t = _inputs(3)
    _, var = _call(m, sched, x0, xt, t)
    close("beta_tilde_t (Eq. 7)", var, sched.beta_tilde[t][:, None])


def _mean(m):
    for shape in ((64, 3), (16, 1, 4, 4)):
        sched, x0, xt, t = _inputs(4, shape)
        mu, _ = _call(m, sched, x0, xt, t)
        want = diffusion.q_posterior(sched, x0, xt, t)[0]
        close(f"mu_tilde_t (Eq. 7) on shape {shape}", mu, want)


def _t1(m):
    sched, x0, xt, _ = _inputs(5, (8, 3))
    mu, var = _call(m, sched, x0, xt, np.ones(8, dtype=np.int64))
    close("mu_tilde_1 (= x_0: alpha_bar_0 = 1)", mu, x0)
    close("beta_tilde_1 (= 0)", var, np.zeros((8, 1)))


def _bayes(m):
    """Eq. (6) from Bayes' rule: q(x_{t-1} | x_0) q(x_t | x_{t-1}), a product of Gaussians in
    x_{t-1}: precisions add, precision-weighted means add."""
    sched, x0, xt, t = _inputs(6, t_min=2)
    ab_prev = sched.alpha_bar[t - 1][:, None]  # (B, 1)
    v_prev = sched.one_minus_alpha_bar[t - 1][:, None]  # prior: N(sqrt(ab_prev) x0, v_prev)
    a, b = sched.alpha[t][:, None], sched.beta[t][:, None]  # likelihood: x_t ~ N(sqrt(a) x, b)
    prec = 1.0 / v_prev + a / b
    mean = (np.sqrt(ab_prev) * x0 / v_prev + np.sqrt(a) * xt / b) / prec
    mu, var = _call(m, sched, x0, xt, t)
    # a different order of operations than Eq. (7): rounding of ~1e-13 relative, not 1e-10
    close("posterior mean vs Bayes' rule", mu, mean, rtol=1e-9)
    close("posterior variance vs Bayes' rule", var, 1.0 / prec, rtol=1e-9)


ASSIGNMENT = Assignment(
    name="posterior",
    title="the forward-process posterior q(x_{t-1} | x_t, x_0), Eqs. (6)-(7) (lecture 2)",
    skeleton="posterior.py",
    checks=(
        Check("beta_tilde_t: the variance of Eq. (7)", 3, _variance),
        Check("mu_tilde_t: the mean of Eq. (7), points and images", 3, _mean),
        Check("t = 1: mu_tilde_1 = x_0 and beta_tilde_1 = 0", 1, _t1),
        Check("Eq. (6) equals Bayes' rule (a product of two Gaussians in x_{t-1})", 3, _bayes),
    ),
)
