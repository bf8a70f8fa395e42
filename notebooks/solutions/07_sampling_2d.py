"""Solutions to the exercises of notebooks/07_sampling_2d.ipynb. Run: python 07_sampling_2d.py"""

import numpy as np

from ddpm_ref import Schedule, make_schedule
from ddpm_ref.analytic import GaussianMixture, oracle_model_fn
from ddpm_ref.data import toy2d
from ddpm_ref.diffusion import predict_x0
from ddpm_ref.evaluate import mmd, mmd_floor
from ddpm_ref.sampling import ddim_sample, sample

rng = np.random.default_rng(0)
sched = make_schedule("linear", 1000)
gmm = toy2d.GMM


# 7.1 DDIM inversion: run the eta = 0 update from x0 up to x_T (re-noise x0_hat with eps_hat at the
# next, larger t), then decode with ddim_sample from that x_T. The step k -> k+1 uses eps_hat at k,
# not k+1 (it does not know x_{k+1} yet), so the round trip is only approximate; the mismatch is one
# step's change of eps_hat, so the error shrinks as the steps get smaller (K grows).
def ddim_round_trip(K, x0):
    s = sched.respace(K)
    orc = oracle_model_fn(s, gmm)
    x = x0.copy()
    for k in range(
        0, s.T
    ):  # x_k -> x_{k+1}; at k = 0 use the model at step 1 (the first noisy step)
        tt = np.full(len(x), max(k, 1))
        eps_hat = orc(x, s.timesteps[tt])
        x0_hat = x if k == 0 else predict_x0(s, x, tt, eps_hat)
        x = np.sqrt(s.alpha_bar[k + 1]) * x0_hat + np.sqrt(1 - s.alpha_bar[k + 1]) * eps_hat
    back = ddim_sample(s, orc, x0.shape, rng, x_T=x)
    return np.sqrt(np.mean(np.sum((back - x0) ** 2, axis=1)))


x0 = gmm.sample(500, rng)
errs = {K: ddim_round_trip(K, x0) for K in (20, 100)}
print(
    "7.1: encode and decode with K DDIM steps, RMS error (data scale ~1): "
    + ", ".join(f"K = {K}: {e:.3f}" for K, e in errs.items())
)
# a tenth of the data scale at K = 100, and smaller steps give a closer round trip
assert errs[100] < 0.1 and errs[100] < 0.5 * errs[20]

# 7.2 eta sweep at K = 20: eta = 0 is the DDIM curve, eta = 1 the ancestral beta_tilde curve. Not
# just in distribution: with eta = 1 the DDIM step is Algorithm 2's step with sigma_t^2 =
# beta_tilde_t
# (notebook 07, identity (a)), so from the same generator the two samplers give the same points.
n = 2000
ref = toy2d.sample("gmm", n, rng)
floor = mmd_floor(lambda k, r: toy2d.sample("gmm", k, r), n, n, rng)
s20 = sched.respace(20)
orc20 = oracle_model_fn(s20, gmm)
for eta in (0.0, 0.5, 1.0):
    xs = ddim_sample(s20, orc20, (n, 2), np.random.default_rng(7), eta=eta)
    print(f"7.2: K = 20, eta = {eta}: MMD^2 / floor {mmd(xs, ref) / floor:.2f}")
anc = sample(s20, orc20, (n, 2), np.random.default_rng(7), variance="fixedsmall")
assert np.allclose(xs, anc, rtol=0, atol=1e-10)  # eta = 1 (the last xs) is ancestral beta_tilde
assert not np.allclose(
    xs, ddim_sample(s20, orc20, (n, 2), np.random.default_rng(7), eta=0.0), atol=1e-3
)

# 7.3 prod cos(dtheta_k) >= 1 - sum dtheta_k^2 / 2 (cos u >= 1 - u^2 / 2, and prod (1 - a_k) >= 1
# - sum a_k
# for a_k in [0, 1]); for a fixed total theta_T, sum dtheta^2 is smallest with equal steps
# (Cauchy-Schwarz).
gauss = GaussianMixture(np.array([1.0]), np.zeros((1, 2)), np.eye(2)[None])
K = 10
r10 = sched.respace(K)
theta_T = np.arccos(np.sqrt(r10.alpha_bar[-1]))
theta = np.arange(K + 1) * theta_T / K
abar = np.cos(theta) ** 2
equal = Schedule.from_betas(1 - abar[1:] / abar[:-1])
for name, sch in (("respaced linear", r10), ("equal angle steps", equal)):
    xT = rng.standard_normal((4, 2))
    shrink = (ddim_sample(sch, oracle_model_fn(sch, gauss), (4, 2), rng, x_T=xT) / xT).mean()
    dth = np.diff(np.arccos(np.sqrt(sch.alpha_bar)))
    assert np.prod(np.cos(dth)) >= 1 - np.sum(dth**2) / 2
    print(
        f"7.3: {name:18s}: x0 / x_T = {shrink:.4f} (bound "
        f"1 - sum dtheta^2 / 2 = {1 - np.sum(dth**2) / 2:.4f})"
    )
assert np.isclose(np.prod(np.cos(np.diff(theta))), np.cos(theta_T / K) ** K)
