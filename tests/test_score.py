"""ddpm_ref.score: the score view of §3.2 (scores, Langevin, reverse SDE, probability-flow ODE)."""

import numpy as np
import pytest

from ddpm_ref.analytic import GaussianMixture, eps_star, log_q_xt, oracle_model_fn
from ddpm_ref.data.toy2d import GMM
from ddpm_ref.diffusion import p_mean_var
from ddpm_ref.sampling import ddim_sample, sample
from ddpm_ref.schedule import make_schedule
from ddpm_ref.score import (
    annealed_langevin_sample,
    eps_from_score,
    eps_star_fn,
    langevin_sample,
    langevin_step,
    mixture_score,
    predictor_corrector_sample,
    probability_flow_ode_sample,
    reverse_sde_mean_var,
    score_from_eps,
    sigma_bar_grid,
)

SCHED = make_schedule("linear", 1000)
M0, S0 = np.array([0.5, -1.0]), 0.3  # Gaussian data N(M0, S0^2 I): every score is linear
GAUSS = GaussianMixture(np.array([1.0]), M0[None], (S0**2 * np.eye(2))[None])


def test_sec32_eps_star_is_minus_sqrt_one_minus_abar_times_the_score():
    # mixture_score is built from q(x_t)'s components, eps_star from E[eps | x_t]: two codes
    x = np.random.default_rng(0).standard_normal((50, 2)) * 1.5
    for t in (1, 10, 200, 1000):
        eps = eps_star(SCHED, GMM, x, t)
        s = mixture_score(SCHED, GMM, x, t)
        # float64 rounding of two O(1e2) computations: 1e-12 relative to the largest entry
        assert np.allclose(eps, -np.sqrt(SCHED.one_minus_alpha_bar[t]) * s, rtol=0,
                           atol=1e-12 * np.abs(eps).max())
        assert np.allclose(score_from_eps(SCHED, x, np.full(50, t), eps), s, rtol=1e-11, atol=0)


def test_mixture_score_is_the_gradient_of_log_q_xt():
    x = np.random.default_rng(1).standard_normal((20, 2))
    h = 1e-5
    for t in (0, 1, 300):
        s = mixture_score(SCHED, GMM, x, t)
        fd = np.stack([(log_q_xt(SCHED, GMM, x + h * e, t) - log_q_xt(SCHED, GMM, x - h * e, t))
                       / (2 * h) for e in np.eye(2)], axis=1)
        # central differences: O(h^2 f''') ~ 1e-9 plus rounding 1e-16 |log q| / h ~ 1e-10
        assert np.allclose(fd, s, rtol=1e-6, atol=1e-6)


def test_score_and_eps_convert_both_ways():
    rng = np.random.default_rng(2)
    x, eps, t = rng.standard_normal((8, 2)), rng.standard_normal((8, 2)), rng.integers(1, 1001, 8)
    s = score_from_eps(SCHED, x, t, eps)
    assert np.allclose(eps_from_score(SCHED, x, t, s), eps, rtol=1e-14, atol=0)
    # for Gaussian data the score is linear: -(x - sqrt(abar) m) / (abar s^2 + 1 - abar)
    ab = SCHED.alpha_bar[300]
    exact = -(x - np.sqrt(ab) * M0) / (ab * S0**2 + 1 - ab)
    assert np.allclose(mixture_score(SCHED, GAUSS, x, 300), exact, rtol=1e-13, atol=0)


def test_vincent_dsm_equals_score_matching_plus_a_constant():
    # E||eps - eps_theta||^2 = (1 - abar) E||s_theta - grad log q(x_t)||^2 + E||eps - eps*||^2
    rng = np.random.default_rng(3)
    n, t = 100_000, 150
    omab = SCHED.one_minus_alpha_bar[t]
    x0, eps = GMM.sample(n, rng), rng.standard_normal((n, 2))
    xt = np.sqrt(SCHED.alpha_bar[t]) * x0 + np.sqrt(omab) * eps
    e_star, s_true = eps_star(SCHED, GMM, xt, t), mixture_score(SCHED, GMM, xt, t)
    for eps_theta in (0.7 * e_star, e_star + 0.3 * np.sin(3 * xt)):
        s_theta = -eps_theta / np.sqrt(omab)
        d = (np.sum((eps - eps_theta) ** 2, 1) - omab * np.sum((s_theta - s_true) ** 2, 1)
             - np.sum((eps - e_star) ** 2, 1))
        se = d.std() / np.sqrt(n)
        assert abs(d.mean()) < 5 * se  # Monte Carlo: 5 standard errors
        wrong = d + (1 - np.sqrt(omab)) * omab * np.sum((s_theta - s_true) ** 2, 1)
        assert abs(wrong.mean()) > 10 * se  # the check has power: sqrt(1 - abar) fails it


def test_langevin_step_stationary_variance_of_a_gaussian_target():
    # x' - m = (1 - delta / v)(x - m) + sqrt(2 delta) z has stationary variance v / (1 - delta / 2v)
    v, m, delta, n = 0.5, 1.0, 0.1, 40_000
    rng = np.random.default_rng(4)
    x = langevin_sample(lambda x: -(x - m) / v, np.full((n, 1), m), rng, step_size=delta,
                        n_steps=200)  # (1 - 0.2)^400 ~ 1e-39: converged
    want = v / (1 - delta / (2 * v))
    assert abs(x.var() - want) < 5 * want * np.sqrt(2 / n)  # 5 SE of a variance
    assert abs(x.var() - v) > 10 * want * np.sqrt(2 / n)  # the O(delta) bias is real
    z = rng.standard_normal((3, 1))
    assert np.allclose(langevin_step(np.ones((3, 1)), np.full((3, 1), 2.0), 0.5, z), 2.0 + z)


def test_annealed_langevin_last_level_reaches_the_ula_stationary_law():
    t, delta = 50, 0.02
    v = SCHED.alpha_bar[t] * S0**2 + SCHED.one_minus_alpha_bar[t]  # Var q(x_t), Gaussian data
    x = annealed_langevin_sample(SCHED, oracle_model_fn(SCHED, GAUSS), (20_000, 2),
                                 np.random.default_rng(5), levels=[t], n_steps=600,
                                 step_size=delta)
    want = v / (1 - delta / (2 * v))
    assert np.all(np.abs(x.var(0) - want) < 5 * want * np.sqrt(2 / 20_000))
    assert np.allclose(x.mean(0), np.sqrt(SCHED.alpha_bar[t]) * M0, atol=5 * np.sqrt(want / 2e4))


def test_reverse_sde_step_is_algorithm2_to_first_order_in_beta():
    # one step from the same x_t with the same score s, for a step beta_t halved twice
    rng = np.random.default_rng(6)
    x, t = rng.standard_normal((10, 2)), np.full(10, 2)
    s = mixture_score(SCHED, GMM, x, 400)
    errs = []
    for beta in (0.02, 0.01, 0.005):
        sched = make_schedule("constant", 2, beta=beta)
        eps = eps_from_score(sched, x, t, s)
        mu, s2, _ = p_mean_var(sched, x, t, eps, variance="fixedlarge")  # Eq. (11)
        mean_em, var_em = reverse_sde_mean_var(sched, x, t, s)
        assert np.array_equal(var_em, s2)  # the same variance beta_t (t >= 2)
        errs.append(np.abs(mean_em - mu).max())
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 3.8) & (ratios < 4.2)), ratios  # O(beta^2): halving beta quarters it


def test_reverse_sde_step_is_probability_flow_plus_half_a_langevin_step():
    rng = np.random.default_rng(7)
    x, s, t = rng.standard_normal((5, 2)), rng.standard_normal((5, 2)), np.full(5, 700)
    beta = SCHED.beta[700]
    mean, var = reverse_sde_mean_var(SCHED, x, t, s)
    z = rng.standard_normal((5, 2))
    pf = x + 0.5 * beta * (x + s)  # one Euler step back of dx/dt = -beta (x + s) / 2
    lang = langevin_step(pf, s, beta / 2, z)  # delta = beta / 2: noise sqrt(beta)
    assert np.allclose(mean + np.sqrt(var) * z, lang, rtol=1e-14, atol=1e-15)


def test_pf_ode_maps_gaussian_marginals_exactly():
    # Gaussian data: the flow keeps the standardised coordinate (x - sqrt(abar) m) / sd fixed
    x_T = np.random.default_rng(8).standard_normal((30, 2))
    ab = SCHED.alpha_bar[SCHED.T]
    x0 = probability_flow_ode_sample(eps_star_fn(GAUSS), x_T, alpha_bar_T=ab, n_steps=400)
    want = M0 + S0 * (x_T - np.sqrt(ab) * M0) / np.sqrt(ab * S0**2 + 1 - ab)
    # RK4 error at 400 steps: measured 1.3e-8 (16x less per doubling)
    assert np.allclose(x0, want, rtol=0, atol=1e-7)
    assert sigma_bar_grid(5.0, 10)[0] == pytest.approx(5.0) and sigma_bar_grid(5.0, 10)[-1] == 0


def test_ddim_eta0_converges_to_the_probability_flow_ode():
    x_T = np.random.default_rng(9).standard_normal((40, 2))
    ref = probability_flow_ode_sample(eps_star_fn(GMM), x_T,
                                      alpha_bar_T=SCHED.alpha_bar[SCHED.T], n_steps=800)
    errs = []
    for K in (25, 100, 400):
        sub = SCHED.respace(K)
        x = ddim_sample(sub, oracle_model_fn(sub, GMM), x_T.shape, np.random.default_rng(0),
                        eta=0.0, x_T=x_T)
        errs.append(np.sqrt(np.mean((x - ref) ** 2)))
    assert errs[0] > 2.5 * errs[1] > 2.5 ** 2 * errs[2], errs  # first order: 4x per 4x steps


def test_predictor_corrector_without_corrector_is_algorithm2():
    sub = SCHED.respace(50)
    fn = oracle_model_fn(sub, GMM)
    a = predictor_corrector_sample(sub, fn, (64, 2), np.random.default_rng(10), n_corrector=0)
    b = sample(sub, fn, (64, 2), np.random.default_rng(10))
    assert np.array_equal(a, b)
    c = predictor_corrector_sample(sub, fn, (64, 2), np.random.default_rng(10), n_corrector=1)
    assert np.all(np.isfinite(c)) and not np.allclose(a, c)


@pytest.mark.parametrize("call, name", [
    (lambda: langevin_sample(lambda x: -x, np.zeros((2, 1)), np.random.default_rng(0),
                             step_size=-1.0, n_steps=3), "step_size"),
    (lambda: annealed_langevin_sample(SCHED, oracle_model_fn(SCHED, GMM), (2, 2),
                                      np.random.default_rng(0), levels=[1, 5], n_steps=1,
                                      step_size=0.1), "levels"),
    (lambda: predictor_corrector_sample(SCHED, oracle_model_fn(SCHED, GMM), (2, 2), 0), "rng"),
    (lambda: probability_flow_ode_sample(eps_star_fn(GMM), np.zeros((2, 2)), alpha_bar_T=1.5,
                                         n_steps=3), "alpha_bar_T"),
    (lambda: mixture_score(SCHED, GMM, np.zeros((2, 3)), 1), "xt"),
    (lambda: predictor_corrector_sample(SCHED, oracle_model_fn(SCHED, GMM), (0, 2),
                                        np.random.default_rng(0)), "shape"),
])
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        call()
