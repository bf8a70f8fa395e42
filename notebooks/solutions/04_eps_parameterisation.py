"""Solutions to the exercises of notebooks/04_eps_parameterisation.ipynb.

Run: python 04_eps_parameterisation.py"""

import numpy as np

from ddpm_ref import make_schedule
from ddpm_ref.diffusion import fixed_variance, q_sample
from ddpm_ref.elbo import vlb_term, vlb_weight

rng = np.random.default_rng(0)
sched = make_schedule("linear", 1000)
B, D = 64, 3
x0 = rng.uniform(-1, 1, size=(B, D))
t = rng.integers(2, sched.T + 1, size=B)
xt = q_sample(sched, x0, t, rng.standard_normal((B, D)))

# 4.1 mu_theta = mu_tilde(x_t, x0_hat) differs from mu_tilde(x_t, x0) by coef1 (x0 - x0_hat), with
# coef1 = sqrt(abar_{t-1}) beta_t / (1 - abar_t); Eq. (8) then gives the weight coef1^2 / (2
# sigma_t^2).
x0_hat = x0 + 0.1 * rng.standard_normal((B, D))
for variance in ("fixedlarge", "fixedsmall"):
    s2 = fixed_variance(sched, variance=variance)[0][t]
    w = sched.alpha_bar[t - 1] * sched.beta[t] ** 2 / (2 * s2 * sched.one_minus_alpha_bar[t] ** 2)
    C_t = vlb_weight(sched, t, variance=variance)[1]
    lhs = vlb_term(sched, x0, xt, t, x0_hat, variance=variance, mean_type="x0")
    assert np.allclose(lhs, w * np.sum((x0 - x0_hat) ** 2, axis=1) + D * C_t, rtol=1e-10)
print("4.1: L_{t-1} - C = abar_{t-1} beta_t^2 / (2 sigma_t^2 (1 - abar_t)^2) ||x0 - x0_hat||^2")

# 4.2 SNR(t-1) / SNR(t) - 1 = [abar_{t-1} (1 - abar_t) - abar_t (1 - abar_{t-1})] / [abar_t (1 -
# abar_{t-1})]
# = (abar_{t-1} - abar_t) / (abar_t (1 - abar_{t-1})) = beta_t / (alpha_t (1 - abar_{t-1})),
# which is 2 lambda_t for sigma_t^2 = beta_tilde_t.
ts = np.arange(2, sched.T + 1)
with np.errstate(divide="ignore"):  # SNR(0) = inf
    snr = sched.alpha_bar / sched.one_minus_alpha_bar
assert np.allclose(
    vlb_weight(sched, ts, variance="fixedsmall")[0], 0.5 * (snr[ts - 1] / snr[ts] - 1), rtol=1e-10
)
print("4.2: lambda_t = (SNR(t-1) / SNR(t) - 1) / 2 for sigma_t^2 = beta_tilde_t")

# 4.3 With a per-dimension error e_t at every t: true bound sum_t lambda_t D e_t; L_simple-style
# sum_t c D e_t with c chosen to give the same total at e_t = 0.1. Raising e_t tenfold for t < 50:
lam = vlb_weight(sched, ts, variance="fixedlarge")[0]
c = lam.mean()
e = np.full(ts.size, 0.1)
e_bad = np.where(ts < 50, 1.0, 0.1)
true_ratio = np.sum(lam * e_bad) / np.sum(lam * e)
simple_ratio = np.sum(c * e_bad) / np.sum(c * e)
assert true_ratio > simple_ratio
print(
    f"4.3: errors at t < 50 raise the true bound by x{true_ratio:.2f}, "
    f"the uniformly weighted loss by x{simple_ratio:.2f}"
)
