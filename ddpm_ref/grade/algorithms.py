r"""Assignment "algorithms": training (Algorithm 1) and sampling (Algorithm 2).

Paper: Ho, Jain, Abbeel (2020), Algorithm 1 (t ~ Uniform({1, ..., T}), eps ~ N(0, I), a
gradient step on ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2,
Eq. 14) and Algorithm 2 (x_T ~ N(0, I); x_{t-1} = 1 / sqrt(alpha_t) (x_t - beta_t /
sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) + sigma_t z, z = 0 at t = 1), with sigma_t^2 = beta_t.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref import diffusion, elbo, sampling
from ddpm_ref.grade._common import paper_schedule, rng, timesteps, toy_eps_theta
from ddpm_ref.grade._core import Assignment, Check, close, student_fn


def _draw_t(m):
    T, B = 5, 20000
    t = np.asarray(student_fn(m, "draw_t")(rng(11), T, B))
    if t.shape != (B,) or not np.issubdtype(t.dtype, np.integer):
        raise AssertionError(f"draw_t: expected {B} integers, got shape {t.shape} dtype {t.dtype}")
    seen = sorted(set(t.tolist()))
    if seen != list(range(1, T + 1)):
        raise AssertionError(f"draw_t with T = {T}: values {seen}, expected every t in 1..{T}")
    # each t has probability 1/5: standard error of a count sqrt(B 0.2 0.8) = 57, allow 5 of them
    counts = np.bincount(t, minlength=T + 1)[1:]
    if np.any(np.abs(counts - B / T) > 5 * np.sqrt(B * 0.2 * 0.8)):
        raise AssertionError(f"draw_t: counts {counts.tolist()} are not uniform over 1..{T}")


def _loss(m):
    sched, g = paper_schedule(), rng(12)
    x0, eps = g.standard_normal((64, 2)), g.standard_normal((64, 2))
    t = timesteps(sched.T, 64, g)
    got = student_fn(m, "l_simple_loss")(sched, toy_eps_theta, x0, t, eps)
    xt = diffusion.q_sample(sched, x0, t, eps)
    close("L_simple (Algorithm 1, line 5)", got, elbo.l_simple(eps, toy_eps_theta(xt, t))[0])


def _step_mean(m):
    sched, g = paper_schedule(), rng(13)
    xt = g.standard_normal((64, 2))
    step = student_fn(m, "reverse_step")
    for t in (2, 10, 500, sched.T):
        tt = np.full(64, t)
        want = diffusion.p_mean_var(sched, xt, tt, toy_eps_theta(xt, tt), mean_type="eps",
                                    variance="fixedlarge")[0]
        close(f"mu_theta(x_t, {t}) (Eq. 11; z = 0)", step(sched, toy_eps_theta, xt, t,
                                                         np.zeros_like(xt)), want)


def _step_noise(m):
    sched, g = paper_schedule(), rng(14)
    xt, z = g.standard_normal((64, 2)), g.standard_normal((64, 2))
    step = student_fn(m, "reverse_step")
    for t in (2, 10, sched.T):
        noise = step(sched, toy_eps_theta, xt, t, z) - step(sched, toy_eps_theta, xt, t, 0 * z)
        close(f"sigma_t z at t = {t} (sigma_t^2 = beta_t)", noise, np.sqrt(sched.beta[t]) * z)
    close("x_0 at t = 1 ignores z (Algorithm 2, line 3)", step(sched, toy_eps_theta, xt, 1, z),
          step(sched, toy_eps_theta, xt, 1, 0 * z))


def _sample(m):
    sched = paper_schedule(T=50)  # a short chain: the same lines as T = 1000
    xT = rng(15).standard_normal((32, 2))
    got = student_fn(m, "sample")(sched, toy_eps_theta, xT.copy(), rng(16))
    want = sampling.sample_from(sched, toy_eps_theta, xT, sched.T, rng(16))
    close("x_0 from Algorithm 2 (same seed: one z ~ N(0, I) per step t > 1)", got, want,
          rtol=1e-9)  # 50 steps of rounding, each ~1e-16


ASSIGNMENT = Assignment(
    name="algorithms",
    title="training and sampling, Algorithms 1-2 (lectures 6-7)",
    skeleton="algorithms.py",
    checks=(
        Check("draw_t: t ~ Uniform({1, ..., T}) (Algorithm 1, line 3)", 2, _draw_t),
        Check("l_simple_loss: Algorithm 1, lines 4-5 (Eq. 14)", 2, _loss),
        Check("reverse_step: the mean mu_theta of Eq. (11) (Algorithm 2, line 4)", 2, _step_mean),
        Check("reverse_step: sigma_t z, and no noise at t = 1 (Algorithm 2, lines 3-4)", 2,
              _step_noise),
        Check("sample: the whole of Algorithm 2 equals the library's, seed for seed", 2, _sample),
    ),
)
