"""Solutions to the exercises of notebooks/01_forward_process.ipynb.

Run: python 01_forward_process.py"""

import numpy as np

from ddpm_ref import make_schedule
from ddpm_ref.data import toy2d
from ddpm_ref.diffusion import q_sample, q_step

rng = np.random.default_rng(0)
sched = make_schedule("linear", 1000)

# 1.1 Variance preservation. By Eq. (4), x_t = sqrt(abar) x0 + sqrt(1 - abar) eps with eps
# independent
# of x0, so E[x_t] = sqrt(abar) E[x0] = 0 and Var[x_t] = abar Var[x0] + (1 - abar) = 1 per
# coordinate.
n = 100_000
x0 = toy2d.sample("moons", n, rng)  # standardised: mean 0, variance 1 per coordinate
for t in (1, 100, 1000):
    xt = q_sample(sched, x0, np.full(n, t), rng.standard_normal(x0.shape))
    assert np.all(np.abs(xt.mean(0)) < 5 * np.sqrt(1 / n))  # 5 standard errors
    # the SE of a sample variance is sqrt((m4 - 1) / n); moons has m4 < 3, so sqrt(2 / n) bounds it
    assert np.all(np.abs(xt.var(0) - 1) < 5 * np.sqrt(2 / n)), (t, xt.var(0))
print("1.1: mean 0 and variance 1 at t = 1, 100, 1000")

# 1.2 Constant schedule: alpha_bar_t = (1 - beta)^t; alpha_bar_T < 1e-4 iff T > log(1e-4) / log(1
# - beta).
beta = 0.02
T_min = int(np.floor(np.log(1e-4) / np.log1p(-beta))) + 1
s = make_schedule("constant", T_min, beta=beta)
assert np.allclose(s.alpha_bar, (1 - beta) ** np.arange(T_min + 1), rtol=1e-12)
assert s.alpha_bar[T_min] < 1e-4 <= s.alpha_bar[T_min - 1]
print(f"1.2: alpha_bar_t = 0.98^t; the smallest T with alpha_bar_T < 1e-4 is {T_min}")

# 1.3 Running Eq. (2) from s to t composes like Eq. (4) with alpha_bar_t / alpha_bar_s in place of
# alpha_bar_t: q(x_t | x_s) = N(sqrt(abar_t / abar_s) x_s, (1 - abar_t / abar_s) I).
s_, t_ = 200, 600
m = 50_000
x = np.full((m, 1), 0.8)  # x_s
for k in range(s_ + 1, t_ + 1):
    x = q_step(sched, x, np.full(m, k), rng.standard_normal(x.shape))
ratio = sched.alpha_bar[t_] / sched.alpha_bar[s_]
v = 1 - ratio
assert abs(x.mean() - np.sqrt(ratio) * 0.8) < 5 * np.sqrt(v / m)
assert abs(x.var() - v) < 5 * v * np.sqrt(2 / m)
print(
    f"1.3: q(x_600 | x_200) = N({np.sqrt(ratio):.4f} x_200, {v:.4f}) confirmed by a chain of q_step"
)
