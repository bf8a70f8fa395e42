"""Solutions to the exercises of notebooks/05_decoder_L0.ipynb. Run: python 05_decoder_L0.py"""

import numpy as np
from scipy import stats

from ddpm_ref import make_schedule
from ddpm_ref.data.mnist import load_digits, to_model
from ddpm_ref.diffusion import fixed_variance, mu_from_eps, q_sample
from ddpm_ref.elbo import (
    bits_per_dim,
    decoder_nll,
    discretized_gaussian_log_likelihood,
    vlb_term_and_grad,
)

rng = np.random.default_rng(0)
sched = make_schedule("linear", 1000)
x0 = to_model(load_digits("test")[0][:200]).astype(np.float64)
D = x0[0].size
t1 = np.ones(len(x0), dtype=np.int64)
eps = rng.standard_normal(x0.shape)
x1 = q_sample(sched, x0, t1, eps)

# 5.1 With a perfect mean (mu = x0) L_0 falls monotonically as sigma_1 -> 0 (every bin's
# probability -> 1).
# With an imperfect mean, mu - x0 = sqrt(beta_1 / alpha_1)(eps - eps_theta), and too small a sigma_1
# makes that error cost ~ error^2 / (2 sigma_1^2): the best sigma_1 is of the order of the error.
sigmas = np.geomspace(1e-3, 1e-1, 41)
perfect = [bits_per_dim(decoder_nll(x0, x0, np.log(s)), D).mean() for s in sigmas]
assert np.all(np.diff(perfect) > 0)
eps_theta = eps + 0.5 * rng.standard_normal(x0.shape)
mu = mu_from_eps(sched, x1, t1, eps_theta)
noisy = [bits_per_dim(decoder_nll(x0, mu, np.log(s)), D).mean() for s in sigmas]
best = sigmas[int(np.argmin(noisy))]
err_sd = np.sqrt(sched.beta[1] / sched.alpha[1]) * 0.5
assert 0.2 * err_sd < best < 5 * err_sd
print(
    f"5.1: perfect mean: {perfect[0]:.3f} bits/dim "
    f"at sigma = 1e-3; with an error of sd {err_sd:.4f} the best "
    f"sigma_1 is {best:.4f} ({min(noisy):.3f} bits/dim)"
)

# 5.2 tanh approximation of the CDF (Ho et al.) vs the exact one. The approximation
# Phi_tanh(x) = (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2 is within eps_max ~ 1.8e-4 of Phi
# everywhere. A bin's probability is a difference of two CDF values, so |P_tanh - P| <= 2 eps_max,
# and by the mean value theorem |log P_tanh - log P| <= 2 eps_max / min(P, P_tanh): small for the
# bins that carry the probability, large (over a nat) for bins with P ~ 1e-4 or less.
zz = np.linspace(-10, 10, 200_001)
phi_tanh = 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (zz + 0.044715 * zz**3)))
eps_max = np.max(np.abs(phi_tanh - stats.norm.cdf(zz)))
assert 1e-4 < eps_max < 2e-4  # the accuracy of this approximation (the max is at |z| ~ 2.6)
levels = (np.arange(256) / 127.5 - 1.0)[:, None]
sigma_1 = np.sqrt(fixed_variance(sched, variance="fixedlarge")[0][1])
worst = (0.0, None)
for m in np.linspace(-1.2, 1.2, 241):
    lp_tanh = discretized_gaussian_log_likelihood(levels, m, np.log(sigma_1), cdf="tanh")
    lp = discretized_gaussian_log_likelihood(levels, m, np.log(sigma_1))
    d = np.abs(lp_tanh - lp)
    p = np.exp(lp)
    # the bound above, for every bin (a little slack for rounding in the exact log-probabilities)
    p_min = np.maximum(np.minimum(p, np.exp(lp_tanh)), 1e-300)  # (P = 0 far out: no bound there)
    assert np.all(d <= 2 * eps_max / p_min * (1 + 1e-6) + 1e-12), m
    # where the bin carries real probability (P > 0.01) the error is below 2 eps_max / 0.01 = 0.04
    # nats
    assert np.all(d[p > 0.01] < 0.04), m
    d = np.where(p > 1e-6, d, 0.0)  # where the bin carries probability
    if d.max() > worst[0]:
        worst = (d.max(), (m, float(levels[np.argmax(d), 0])))
print(
    f"5.2: max |Phi_tanh - Phi| = {eps_max:.2e}; largest |log P_tanh - log P_exact| "
    f"over bins with P > 1e-6: {worst[0]:.2e} nats (mean {worst[1][0]:.3f}, "
    f"bin {worst[1][1]:.3f}), within 2 eps_max / P"
)

# 5.3 The gradient at t = 1: interior pixels follow 2 lambda_1 (eps_theta - eps) up to the
# midpoint-rule
# error; edge pixels do not (their open bin saturates: the gradient vanishes when mu is beyond the
# edge).
_, g = vlb_term_and_grad(sched, x0, x1, t1, eps_theta)
lam_1 = sched.beta[1] / (2 * sigma_1**2 * sched.alpha[1])
approx = 2 * lam_1 * (eps_theta - eps)
edge = np.abs(x0) == 1
rel_int = np.abs(g - approx)[~edge].mean() / np.abs(approx)[~edge].mean()
rel_edge = np.abs(g - approx)[edge].mean() / np.abs(approx)[edge].mean()
assert rel_int < rel_edge
print(
    f"5.3: mean |dL0/deps_theta - 2 lambda_1 (eps_theta "
    f"- eps)| relative: interior {rel_int:.2f}, edge {rel_edge:.2f}"
)
