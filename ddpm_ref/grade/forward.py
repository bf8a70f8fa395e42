r"""Assignment "forward": the forward process, Eq. (2) and Eq. (4), and alpha_bar.

Paper: Ho, Jain, Abbeel (2020), §2: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
(Eq. 2) and q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Eq. 4), with
alpha_bar_t = prod_{s <= t} (1 - beta_s).
"""

from __future__ import annotations

import numpy as np

from ddpm_ref import diffusion
from ddpm_ref.grade._common import paper_schedule, rng, timesteps
from ddpm_ref.grade._core import Assignment, Check, close, student_fn


def _alpha_bar(m):
    for kind in ("linear", "cosine"):
        sched = paper_schedule(kind)
        got = student_fn(m, "alpha_bar")(sched.beta.copy())
        close(f"alpha_bar ({kind} schedule)", got, sched.alpha_bar)


def _q_step(m):
    sched, g = paper_schedule(), rng(1)
    x_prev, eps = g.standard_normal((64, 3)), g.standard_normal((64, 3))
    t = timesteps(sched.T, 64, g)
    got = student_fn(m, "q_step")(sched, x_prev, t, eps)
    close("q_step", got, diffusion.q_step(sched, x_prev, t, eps))


def _q_sample(m):
    sched, g = paper_schedule(), rng(2)
    for shape in ((64, 3), (16, 1, 4, 4)):  # points and images: alpha_bar_t per example
        x0, eps = g.standard_normal(shape), g.standard_normal(shape)
        t = timesteps(sched.T, shape[0], g)
        got = student_fn(m, "q_sample")(sched, x0, t, eps)
        close(f"q_sample on shape {shape}", got, diffusion.q_sample(sched, x0, t, eps))


def _composed(m):
    """Eq. (2) applied t times has the mean and variance of Eq. (4): both from the student."""
    sched = paper_schedule()
    q_step, q_sample = student_fn(m, "q_step"), student_fn(m, "q_sample")
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    mean, var = 1.0, 0.0  # of x_t given x_0 = 1, after t steps of Eq. (2)
    for t in range(1, sched.T + 1):
        tt = np.array([t])
        # Eq. (2) is linear in (x_{t-1}, eps): mean -> q_step(mean, 0), var -> a^2 var + b^2
        a = float(q_step(sched, one, tt, zero)[0, 0])
        b = float(q_step(sched, zero, tt, one)[0, 0])
        mean, var = a * mean, a * a * var + b * b
        if t in (1, 2, 10, 100, 500, sched.T):
            m4 = float(q_sample(sched, one, tt, zero)[0, 0])  # sqrt(alpha_bar_t)
            s4 = float(q_sample(sched, zero, tt, one)[0, 0])  # sqrt(1 - alpha_bar_t)
            close(f"mean of x_{t} | x_0: Eq. (2) composed vs Eq. (4)", mean, m4)
            close(f"variance of x_{t} | x_0: Eq. (2) composed vs Eq. (4)", var, s4 * s4)


ASSIGNMENT = Assignment(
    name="forward",
    title="the forward process: alpha_bar, Eq. (2), Eq. (4) (lecture 1)",
    skeleton="forward.py",
    checks=(
        Check("alpha_bar: alpha_bar[0] = 1, alpha_bar[t] = prod_{s<=t} (1 - beta_s)", 2,
              _alpha_bar),
        Check("q_step: one step of Eq. (2), per-example t", 2, _q_step),
        Check("q_sample: Eq. (4) at every t, points and images", 3, _q_sample),
        Check("Eq. (2) composed t times has Eq. (4)'s mean and variance", 3, _composed),
    ),
)
