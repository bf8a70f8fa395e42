"""Solutions to the exercises of notebooks/02_posterior.ipynb. Run: python 02_posterior.py"""

import numpy as np
from scipy import stats

from ddpm_ref import make_schedule
from ddpm_ref.diffusion import q_posterior

rng = np.random.default_rng(0)
sched = make_schedule("linear", 1000)

# 2.1 With x_t = sqrt(abar_t) x0: mu_tilde = (coef1 + coef2 sqrt(abar_t)) x0, and
# coef1 + coef2 sqrt(abar_t) = sqrt(abar_{t-1}) (beta_t + alpha_t (1 - abar_{t-1})) / (1 - abar_t)
# = sqrt(abar_{t-1})   since beta_t + alpha_t - alpha_t abar_{t-1} = 1 - abar_t.
t = np.arange(1, sched.T + 1)
x0 = rng.uniform(-1, 1, size=(sched.T, 3))
mu, _ = q_posterior(sched, x0, np.sqrt(sched.alpha_bar[t])[:, None] * x0, t)
assert np.allclose(mu, np.sqrt(sched.alpha_bar[t - 1])[:, None] * x0, rtol=0, atol=1e-12)
print("2.1: mu_tilde(sqrt(abar_t) x0, x0) = sqrt(abar_{t-1}) x0 for every t")

# 2.2 Skipping from t to s < t: the same completion of the square with a_ts = abar_t / abar_s gives
# variance (1 - abar_s)(1 - a_ts) / (1 - abar_t) and mean
# sqrt(abar_s)(1 - a_ts) / (1 - abar_t) x0 + sqrt(a_ts)(1 - abar_s) / (1 - abar_t) x_t.
s_, t_ = 300, 700
r = sched.respace(np.array([s_, t_]))  # 2 steps: step 1 = original 300, step 2 = original 700
a_ts = sched.alpha_bar[t_] / sched.alpha_bar[s_]
var = (1 - sched.alpha_bar[s_]) * (1 - a_ts) / (1 - sched.alpha_bar[t_])
x0 = rng.uniform(-1, 1, size=(5, 2))
xt = rng.standard_normal((5, 2))
mean = (
    np.sqrt(sched.alpha_bar[s_]) * (1 - a_ts) * x0 + np.sqrt(a_ts) * (1 - sched.alpha_bar[s_]) * xt
) / (1 - sched.alpha_bar[t_])
mu_r, var_r = q_posterior(r, x0, xt, np.full(5, 2))
assert np.allclose(mu_r, mean, rtol=1e-12) and np.allclose(var_r, var, rtol=1e-12)
print(f"2.2: q(x_300 | x_700, x0) has variance {var:.5f}; respace + q_posterior agree")

# 2.3 x0 ~ N(0, s^2): q(x_{t-1}) = N(0, v), v = abar_{t-1} s^2 + 1 - abar_{t-1}; the posterior
# precision
# is alpha_t / beta_t + 1 / v, so Var = beta_t v / (alpha_t v + beta_t), increasing in v.
# s -> 0: v = 1 - abar_{t-1}, Var = beta_tilde_t; s = 1: v = 1, Var = beta_t; s > 1: Var > beta_t.
for t_val in (2, 10, 100, 1000):
    for s in (0.0, 0.5, 1.0, 2.0):
        v = sched.alpha_bar[t_val - 1] * s**2 + sched.one_minus_alpha_bar[t_val - 1]
        formula = sched.beta[t_val] * v / (sched.alpha[t_val] * v + sched.beta[t_val])
        x = np.linspace(
            -12 * np.sqrt(v), 12 * np.sqrt(v), 40_001
        )  # x_t = 0: the posterior sits inside
        post = stats.norm.pdf(
            0.0, np.sqrt(sched.alpha[t_val]) * x, np.sqrt(sched.beta[t_val])
        ) * stats.norm.pdf(x, 0, np.sqrt(v))
        post /= np.trapezoid(post, x)
        m = np.trapezoid(x * post, x)
        assert np.isclose(np.trapezoid((x - m) ** 2 * post, x), formula, rtol=1e-7)
        if s == 0.0:
            assert np.isclose(formula, sched.beta_tilde[t_val], rtol=1e-12)
        elif s == 1.0:
            assert np.isclose(formula, sched.beta[t_val], rtol=1e-12)
        elif s > 1:
            assert formula > sched.beta[t_val]
        else:
            assert sched.beta_tilde[t_val] < formula < sched.beta[t_val]
print("2.3: beta_tilde_t <= Var <= beta_t for s <= 1, and Var > beta_t for s > 1")
