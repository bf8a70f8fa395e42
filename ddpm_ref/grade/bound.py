r"""Assignment "bound": one term of the bound, Eqs. (8)-(12), and the decoder, Eq. (13).

Paper: Ho, Jain, Abbeel (2020), §3.2-3.3: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} |
x_t)) (Eq. 5), which for sigma_t^2 fixed is mean matching (Eq. 8) and, with mu_theta of Eq. (11),
lambda_t ||eps - eps_theta||^2 + const (Eq. 12); L_0 is the discretized Gaussian of Eq. (13).
"""

from __future__ import annotations

import numpy as np

from ddpm_ref import elbo
from ddpm_ref.grade._common import paper_schedule, rng, timesteps
from ddpm_ref.grade._core import Assignment, Check, close, student_fn


def _normal_kl(m):
    g = rng(7)
    m1, m2 = g.standard_normal(200), g.standard_normal(200)
    lv1, lv2 = g.uniform(-4, 1, 200), g.uniform(-4, 1, 200)
    kl = student_fn(m, "normal_kl")
    close("KL(N(m1, v1) || N(m2, v2))", kl(m1, lv1, m2, lv2), elbo.normal_kl(m1, lv1, m2, lv2),
          rtol=1e-9)  # the direct formula cancels when v1 ~ v2: ~1e-12 absolute
    close("KL of a Gaussian with itself", kl(m1, lv1, m1, lv1), np.zeros(200))


def _inputs(seed):
    sched, g = paper_schedule(), rng(seed)
    x0, eps, eps_theta = (g.standard_normal((32, 2, 3)) for _ in range(3))
    t = timesteps(sched.T, 32, g, t_min=2)
    from ddpm_ref.diffusion import q_sample

    return sched, x0, q_sample(sched, x0, t, eps), t, eps, eps_theta


def _vlb_term(m):
    sched, x0, xt, t, _, eps_theta = _inputs(8)
    got = student_fn(m, "vlb_term")(sched, x0, xt, t, eps_theta)
    want = elbo.vlb_term(sched, x0, xt, t, eps_theta, variance="fixedlarge")
    close("L_{t-1} in nats per example, sigma_t^2 = beta_t", got, want, rtol=1e-8)


def _eq12(m):
    """The student's L_{t-1} equals lambda_t ||eps - eps_theta||^2 + D C_t (Eq. 12)."""
    sched, x0, xt, t, eps, eps_theta = _inputs(9)
    got = student_fn(m, "vlb_term")(sched, x0, xt, t, eps_theta)
    lam, C = elbo.vlb_weight(sched, t, variance="fixedlarge")
    D = x0[0].size
    want = lam * ((eps - eps_theta) ** 2).reshape(32, -1).sum(axis=1) + D * C
    # the KL of Eq. (5) and Eq. (12)'s form differ in rounding by ~1e-12 relative at large t
    close("L_{t-1} vs lambda_t ||eps - eps_theta||^2 + D C_t", got, want, rtol=1e-8)


def _grid():
    return np.arange(256) / 127.5 - 1.0  # the 256 data values k / 127.5 - 1


def _decoder_interior(m):
    g = rng(10)
    x = g.choice(_grid()[1:-1], size=300)  # interior bins: [x - 1/255, x + 1/255]
    log_scale = g.uniform(np.log(0.02), np.log(0.5), 300)
    mean = x + np.exp(log_scale) * g.uniform(-2, 2, 300)  # within 2 sigma: bin mass >= 1e-3
    got = student_fn(m, "discretized_gaussian_log_likelihood")(x, mean, log_scale)
    # log(Phi(b) - Phi(a)) in any form: rounding / bin mass <= 1e-13 relative
    close("log p(x_0 | x_1) on interior bins", got, elbo.discretized_gaussian_log_likelihood(
        x, mean, log_scale), rtol=1e-8)


def _decoder_sums_to_one(m):
    x = _grid()
    ll = student_fn(m, "discretized_gaussian_log_likelihood")
    for mean, log_scale in ((0.0, np.log(0.3)), (0.9, np.log(0.2)), (-0.95, np.log(0.05))):
        p = np.exp(np.asarray(ll(x, np.full(256, mean), np.full(256, log_scale)), dtype=float))
        close(f"sum of the 256 bin probabilities (mean {mean}, sigma "
              f"{np.exp(log_scale):.2g}; the edge bins are open)", p.sum(), 1.0, rtol=1e-9)


ASSIGNMENT = Assignment(
    name="bound",
    title="one term of the bound, Eqs. (8)-(12), and the decoder, Eq. (13) (lectures 3-5)",
    skeleton="bound.py",
    checks=(
        Check("normal_kl: the KL between two diagonal Gaussians", 2, _normal_kl),
        Check("vlb_term: L_{t-1} = KL(posterior || p_theta), Eqs. (5)-(8), (11)", 3, _vlb_term),
        Check("Eq. (12): L_{t-1} = lambda_t ||eps - eps_theta||^2 + D C_t", 2, _eq12),
        Check("Eq. (13) on interior bins", 2, _decoder_interior),
        Check("Eq. (13): the 256 probabilities sum to 1", 1, _decoder_sums_to_one),
    ),
)
