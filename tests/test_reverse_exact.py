"""ddpm_ref.reverse_exact: the true reverse q(x_{t-1} | x_t) and the terms of Eq. (16)."""

import numpy as np
import pytest

from ddpm_ref.analytic import (
    GaussianMixture,
    eps_star,
    log_density,
    oracle_bound,
    oracle_model_fn,
    q_xt,
)
from ddpm_ref.data.toy2d import GMM
from ddpm_ref.demo import scaled_schedule
from ddpm_ref.diffusion import p_mean_var, q_posterior
from ddpm_ref.elbo import normal_kl
from ddpm_ref.reverse_exact import (
    differential_entropy,
    eq16_terms,
    gaussian_fit_kl,
    gaussian_kl,
    kl_to_gaussian_fit_on_grid,
    log_reverse_conditional,
    reverse_by_bayes,
    reverse_conditional,
    reverse_moments,
    sample_reverse_conditional,
)
from ddpm_ref.schedule import Schedule, make_schedule

SCHED = make_schedule("linear", 1000)


def _grid(center, half, n):
    g = np.linspace(-half, half, n)
    X, Y = np.meshgrid(center[0] + g, center[1] + g, indexing="ij")
    return np.stack([X.ravel(), Y.ravel()], axis=1), (g[1] - g[0]) ** 2


def test_reverse_conditional_equals_bayes_rule():
    rng = np.random.default_rng(0)
    for t in (1, 2, 50, 999):
        xt, x_prev = rng.standard_normal((6, 2)), 0.8 * rng.standard_normal((6, 2))
        a = log_reverse_conditional(SCHED, GMM, x_prev, xt, t)
        b = reverse_by_bayes(SCHED, GMM, x_prev, xt, t)
        # two routes through log-densities of size up to ~1e5 (narrow beta_1): 1e-13 relative
        assert np.allclose(a, b, rtol=1e-12, atol=1e-13 * np.abs(b).max())


def test_fig2_forward_and_reverse_factorisations_agree():
    # q(x_0) prod_t q(x_t | x_{t-1}) = q(x_T) prod_t q(x_{t-1} | x_t) along forward trajectories
    sched = scaled_schedule("linear", 4)[0]
    rng = np.random.default_rng(7)
    xs = [GMM.sample(50, rng)]
    fwd = log_density(GMM, xs[0])
    for t in range(1, sched.T + 1):
        z = rng.standard_normal((50, 2))
        xs.append(np.sqrt(sched.alpha[t]) * xs[-1] + np.sqrt(sched.beta[t]) * z)  # Eq. (2)
        fwd += -0.5 * (np.sum((xs[t] - np.sqrt(sched.alpha[t]) * xs[t - 1]) ** 2, 1) / sched.beta[t]
                       + 2 * np.log(2 * np.pi * sched.beta[t]))
    bwd = log_density(q_xt(sched, GMM, sched.T), xs[-1])
    bwd += sum(log_reverse_conditional(sched, GMM, xs[t - 1], xs[t], t) for t in range(1, 5))
    assert np.allclose(fwd, bwd, rtol=1e-11, atol=1e-11)  # five exact terms of size ~10: rounding


def test_reverse_conditional_integrates_to_one():
    sched = Schedule.from_betas(np.array([0.3]))  # a wide, four-mode reverse conditional
    xt = np.array([[0.2, 0.1]])
    pts, dA = _grid(np.zeros(2), 3.6, 301)
    log_q = log_reverse_conditional(sched, GMM, pts, np.repeat(xt, len(pts), 0), 1)
    kl, mean, cov, mass = kl_to_gaussian_fit_on_grid(log_q, pts, dA)
    m_exact, c_exact = reverse_moments(sched, GMM, xt, 1)
    # midpoint rule on smooth densities with std >= 0.1 and spacing 0.024: ~1e-9
    assert abs(mass - 1) < 1e-8 and np.allclose(mean, m_exact[0], atol=1e-8)
    assert np.allclose(cov, c_exact[0], atol=1e-8) and kl > 0.1


def test_eq11_mean_at_eps_star_is_the_true_reverse_mean():
    xt = np.random.default_rng(1).standard_normal((16, 2))
    for t in (2, 100, 1000):
        tt = np.full(16, t)
        mu, _, _ = p_mean_var(SCHED, xt, tt, eps_star(SCHED, GMM, xt, t))
        assert np.allclose(reverse_moments(SCHED, GMM, xt, t)[0], mu, rtol=1e-12, atol=1e-12)


def test_eqs6_7_averaged_over_q_x0_given_xt_give_the_true_reverse():
    # q(x_{t-1} | x_t) = E_{x_0 ~ q(x_0 | x_t)} q(x_{t-1} | x_t, x_0), at a few points x_{t-1}
    sched, t = scaled_schedule("linear", 10)[0], 5
    rng = np.random.default_rng(2)
    xt = np.array([[0.3, -0.2]])
    one = Schedule.from_betas(np.array([sched.one_minus_alpha_bar[t]]))  # q(x_0 | x_t) = one's t=1
    n = 100_000
    x0 = sample_reverse_conditional(one, GMM, np.repeat(xt, n, 0), 1, rng)  # (n, 2)
    mu, var = q_posterior(sched, x0, np.repeat(xt, n, 0), np.full(n, t))  # Eqs. (6)-(7)
    pts = rng.standard_normal((5, 2)) * 0.5 + reverse_moments(sched, GMM, xt, t)[0]
    for p in pts:
        dens = np.exp(-0.5 * np.sum((p - mu) ** 2, 1) / var[:, 0]) / (2 * np.pi * var[:, 0])
        exact = np.exp(log_reverse_conditional(sched, GMM, p[None], xt, t))[0]
        assert abs(dens.mean() - exact) < 5 * dens.std() / np.sqrt(n)  # 5 SE


def test_kl_to_the_best_gaussian_is_small_for_small_beta_and_large_for_large_beta():
    rng = np.random.default_rng(3)
    xt = np.array([[0.0, 0.0], [1.0, -0.5]])
    small = gaussian_fit_kl(Schedule.from_betas(np.array([1e-3])), GMM, xt, 1, rng, n=4000)[0]
    large = gaussian_fit_kl(Schedule.from_betas(np.array([0.5])), GMM, xt, 1, rng, n=4000)[0]
    assert np.all(small < 1e-3) and np.all(large > 0.5)


def test_gaussian_kl_matches_normal_kl_for_diagonal_covariances():
    rng = np.random.default_rng(4)
    m1, m2 = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    v1, lv2 = rng.uniform(0.1, 2, (3, 2)), rng.standard_normal(3)
    cov = np.stack([np.diag(v) for v in v1])
    want = normal_kl(m1, np.log(v1), m2, lv2[:, None]).sum(1)
    assert np.allclose(gaussian_kl(m1, cov, m2, lv2), want, rtol=1e-12)


def test_differential_entropy_of_a_gaussian():
    S = np.array([[0.3, 0.1], [0.1, 0.2]])
    g = GaussianMixture(np.array([1.0]), np.zeros((1, 2)), S[None])
    h, se = differential_entropy(g, np.random.default_rng(5), n=100_000)
    assert abs(h - 0.5 * np.linalg.slogdet(2 * np.pi * np.e * S)[1]) < 5 * se


def test_eq16_first_two_terms_equal_the_gap_of_eq5():
    # E[bound (Eq. 5)] - H(x_0) = KL(q(x_T) || p(x_T)) + sum_t E KL(q(x_{t-1}|x_t) || p_theta)
    sched = scaled_schedule("linear", 5)[0]
    rng = np.random.default_rng(6)
    fn = oracle_model_fn(sched, GMM)
    e16 = eq16_terms(sched, GMM, fn, rng, n=40_000)
    ob = oracle_bound(sched, GMM, GMM.sample(40_000, rng), rng)
    gap5 = ob["total"] - ob["nll"]
    se = np.hypot(gap5.std() / np.sqrt(gap5.size), e16["gap_se"])
    assert abs(gap5.mean() - e16["gap"]) < 5 * se, (gap5.mean(), e16["gap"], se)
    # the split KL(q || p) = KL(q || g) + KL(g || p) adds up, and both parts are >= 0 (2 SE)
    assert np.allclose(e16["kl_nongauss"][1:] + e16["kl_gauss"][1:], e16["kl"][1:], rtol=1e-12)
    assert np.all(e16["kl_nongauss"][1:] > -2 * e16["kl_nongauss_se"][1:])


@pytest.mark.parametrize("call, name", [
    (lambda: reverse_conditional(SCHED, GMM, np.zeros((2, 2)), 0), "t"),
    (lambda: reverse_conditional(SCHED, GMM, np.zeros((2, 3)), 1), "xt"),
    (lambda: eq16_terms(SCHED, GMM, oracle_model_fn(SCHED, GMM), np.random.default_rng(0), n=1),
     "n"),
    (lambda: eq16_terms(SCHED, GMM, oracle_model_fn(SCHED, GMM), np.random.default_rng(0), n=9,
                        variance="learned_range"), "variance"),
])
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        call()
