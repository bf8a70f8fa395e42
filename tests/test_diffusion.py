"""Tests for ddpm_ref.diffusion: Eqs. (2), (4), (6)-(7), (11), reverse mean and variance (§3.2)."""

import numpy as np
import pytest

from ddpm_ref.diffusion import (
    eps_from_mu,
    eps_from_x0,
    fixed_variance,
    mu_from_eps,
    p_mean_var,
    predict_x0,
    q_posterior,
    q_sample,
    q_step,
    x0_from_eps,
)
from ddpm_ref.schedule import make_schedule

SCHED = make_schedule("linear", 1000)


def _batch(rng, B=8, shape=(3, 4, 4), T=1000):
    x0 = rng.uniform(-1, 1, size=(B,) + shape)
    t = rng.integers(1, T + 1, size=B)
    return x0, t


def test_eq2_composed_equals_eq4_exact():
    # q_step is linear in (x_prev, eps): carry the coefficient vector of (x0, eps_1, ..., eps_t)
    # through t applications; Eq. (4) says coef(x0) = sqrt(abar_t), sum coef(eps_s)^2 = 1 - abar_t.
    sched = make_schedule("linear", 300)
    T = sched.T
    coef = np.zeros((1, T + 1))
    coef[0, 0] = 1.0  # x_0
    for t in range(1, T + 1):
        unit = np.zeros((1, T + 1))
        unit[0, t] = 1.0  # eps_t
        coef = q_step(sched, coef, np.array([t]), unit)
        np.testing.assert_allclose(coef[0, 0], np.sqrt(sched.alpha_bar[t]), rtol=1e-12)
        np.testing.assert_allclose(np.sum(coef[0, 1:] ** 2), 1 - sched.alpha_bar[t], rtol=1e-12)


def test_eq2_composed_equals_eq4_monte_carlo():
    sched = make_schedule("linear", 50, beta_end=0.05)
    rng = np.random.default_rng(0)
    N, x0_val = 200_000, 0.7
    x = np.full((N, 1), x0_val)
    for t in range(1, 51):
        x = q_step(sched, x, np.full(N, t), rng.standard_normal((N, 1)))
    direct = q_sample(sched, np.full((N, 1), x0_val), np.full(N, 50), rng.standard_normal((N, 1)))
    mean, var = np.sqrt(sched.alpha_bar[50]) * x0_val, 1 - sched.alpha_bar[50]
    # Both are Gaussian with this mean/variance: SE(mean) = sqrt(var / N), SE(var) = var sqrt(2/N);
    # 5 standard errors (a false failure has probability < 1e-6 per check).
    for samples in (x[:, 0], direct[:, 0]):
        assert abs(samples.mean() - mean) < 5 * np.sqrt(var / N)
        assert abs(samples.var() - var) < 5 * var * np.sqrt(2 / N)


def test_eq4_per_example_timesteps():
    rng = np.random.default_rng(1)
    x0, t = _batch(rng)
    eps = rng.standard_normal(x0.shape)
    xt = q_sample(SCHED, x0, t, eps)
    for b in range(len(t)):
        ab = np.prod(1 - SCHED.beta[1:t[b] + 1])
        np.testing.assert_allclose(xt[b], np.sqrt(ab) * x0[b] + np.sqrt(1 - ab) * eps[b],
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("t", [1, 2, 3, 10, 500, 1000])
def test_eq6_eq7_equal_bayes_on_joint_gaussian(t):
    # Given x0: x_{t-1} ~ N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) and
    # x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps, so Cov(x_{t-1}, x_t) =
    # sqrt(alpha_t)(1 - abar_{t-1}) and Var(x_t) = 1 - abar_t;
    # Gaussian conditioning gives the posterior of x_{t-1} given x_t.
    # The conditioning formula cancels (1 - abar_t - alpha_t (1 - abar_{t-1}) = beta_t abar_{t-1})
    # so evaluate it in extended precision (long double) from the same float64 betas.
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-1, 1, size=(4, 5)).astype(np.longdouble)
    xt = rng.standard_normal((4, 5)).astype(np.longdouble)
    beta = SCHED.beta[1:].astype(np.longdouble)
    alpha_bar = np.concatenate([[np.longdouble(1)], np.cumprod(1 - beta)])
    ab, ab_prev, alpha = alpha_bar[t], alpha_bar[t - 1], 1 - beta[t - 1]
    cov = np.sqrt(alpha) * (1 - ab_prev)
    mean = np.sqrt(ab_prev) * x0 + cov / (1 - ab) * (xt - np.sqrt(ab) * x0)
    var = (1 - ab_prev) - cov**2 / (1 - ab)
    mu_tilde, beta_tilde = q_posterior(SCHED, x0.astype(float), xt.astype(float), np.full(4, t))
    np.testing.assert_allclose(mu_tilde, mean.astype(float), rtol=1e-12, atol=1e-15)
    assert beta_tilde.shape == (4, 1)
    np.testing.assert_allclose(beta_tilde[:, 0], float(var), rtol=1e-12, atol=1e-300)


def test_eq6_eq7_equal_bayes_on_1d_grid():
    # Bayes' rule on a grid: q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0); the
    # trapezoid rule on a fine grid spanning +-12 posterior std has error far below 1e-8.
    sched = make_schedule("linear", 10, beta_start=0.05, beta_end=0.3)
    x0, xt, t = 0.4, -0.3, 4
    ab_prev = sched.alpha_bar[t - 1]
    grid = np.linspace(-6, 6, 200_001)
    log_prior = -0.5 * (grid - np.sqrt(ab_prev) * x0) ** 2 / (1 - ab_prev)
    log_lik = -0.5 * (xt - np.sqrt(sched.alpha[t]) * grid) ** 2 / sched.beta[t]
    w = np.exp(log_prior + log_lik)
    w /= np.trapezoid(w, grid)
    mean = np.trapezoid(w * grid, grid)
    var = np.trapezoid(w * (grid - mean) ** 2, grid)
    mu_tilde, beta_tilde = q_posterior(sched, np.array([[x0]]), np.array([[xt]]), np.array([t]))
    np.testing.assert_allclose(mu_tilde[0, 0], mean, rtol=1e-8)
    np.testing.assert_allclose(beta_tilde[0, 0], var, rtol=1e-8)


def test_eq11_equals_posterior_mean_at_x0_hat():
    rng = np.random.default_rng(3)
    x0, t = _batch(rng)
    xt = rng.standard_normal(x0.shape)
    eps = rng.standard_normal(x0.shape)
    mu_11 = mu_from_eps(SCHED, xt, t, eps)
    mu_7, _ = q_posterior(SCHED, x0_from_eps(SCHED, xt, t, eps), xt, t)
    # x0_hat grows like 1/sqrt(abar_t) (~160 at t = T) before coef1 shrinks it: allow that
    # amplification of the 1e-16 rounding (atol 1e-12 on O(1) values).
    np.testing.assert_allclose(mu_11, mu_7, rtol=1e-12, atol=1e-12)


def test_conversions_round_trip():
    rng = np.random.default_rng(4)
    x0, t = _batch(rng)
    eps = rng.standard_normal(x0.shape)
    xt = q_sample(SCHED, x0, t, eps)
    np.testing.assert_allclose(x0_from_eps(SCHED, xt, t, eps), x0, rtol=1e-12, atol=1e-12)
    # eps = (xt - sqrt(abar) x0) / sqrt(1 - abar) amplifies the rounding of xt by up to
    # 1 / sqrt(beta_1) = 100, and eps_from_mu by sqrt(1 - abar_t) / beta_t <= 1e4 (t = 1)
    np.testing.assert_allclose(eps_from_x0(SCHED, xt, t, x0), eps, rtol=1e-12, atol=1e-13)
    mu = mu_from_eps(SCHED, xt, t, eps)
    np.testing.assert_allclose(eps_from_mu(SCHED, xt, t, mu), eps, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("variance", ["fixedlarge", "fixedsmall"])
def test_three_mean_types_agree_on_the_true_x0(variance):
    # Table 2's three parametrisations, each fed the exact answer, give mu_tilde(x0, xt).
    rng = np.random.default_rng(5)
    x0, t = _batch(rng)
    eps = rng.standard_normal(x0.shape)
    xt = q_sample(SCHED, x0, t, eps)
    mu_tilde, _ = q_posterior(SCHED, x0, xt, t)
    outputs = {"eps": eps, "x0": x0, "mu": mu_tilde}
    for mean_type, out in outputs.items():
        np.testing.assert_allclose(predict_x0(SCHED, xt, t, out, mean_type), x0,
                                   rtol=1e-12, atol=1e-12)
        for clip in (False, True):  # x0 lies in [-1, 1], so clipping changes nothing
            mu, _, _ = p_mean_var(SCHED, xt, t, out, mean_type, variance, clip_x0=clip)
            np.testing.assert_allclose(mu, mu_tilde, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mean_type", ["eps", "x0", "mu"])
def test_clip_x0_uses_eq7_with_clipped_x0(mean_type):
    rng = np.random.default_rng(6)
    B = 6
    xt = 3 * rng.standard_normal((B, 2))
    t = np.array([1, 2, 5, 100, 999, 1000])
    out = 3 * rng.standard_normal((B, 2))
    x0_hat = predict_x0(SCHED, xt, t, out, mean_type)
    assert np.any(np.abs(x0_hat) > 1)  # the test exercises clipping
    clipped = predict_x0(SCHED, xt, t, out, mean_type, clip_x0=True)
    np.testing.assert_array_equal(clipped, np.clip(x0_hat, -1, 1))
    mu, _, _ = p_mean_var(SCHED, xt, t, out, mean_type, clip_x0=True)
    np.testing.assert_allclose(mu, q_posterior(SCHED, clipped, xt, t)[0], rtol=1e-12, atol=1e-14)


def test_fixed_variances_follow_ho_et_al():
    t = np.arange(1, 1001)
    xt = np.zeros((1000, 2))
    out = np.zeros((1000, 2))
    _, s2, log_s2 = p_mean_var(SCHED, xt, t, out, variance="fixedlarge")
    assert s2.shape == (1000, 1)
    np.testing.assert_array_equal(s2[1:, 0], SCHED.beta[2:])  # sigma_t^2 = beta_t for t >= 2
    assert s2[0, 0] == SCHED.beta_tilde[2]  # t = 1: beta_tilde_2 (Ho et al.'s model_variance)
    np.testing.assert_allclose(log_s2[:, 0], np.log(s2[:, 0]), rtol=1e-15)
    _, s2, log_s2 = p_mean_var(SCHED, xt, t, out, variance="fixedsmall")
    np.testing.assert_array_equal(s2[:, 0], SCHED.beta_tilde[1:])
    assert s2[0, 0] == 0.0 and log_s2[0, 0] == np.log(SCHED.beta_tilde[2])
    s2_table, _ = fixed_variance(SCHED, "fixedlarge")
    assert s2_table.shape == (1001,) and np.isnan(s2_table[0])


def test_learned_variance_output_is_log_sigma2():
    # Table 2's "learned diagonal Sigma": the second half of axis 1 is log sigma_t^2 itself
    rng = np.random.default_rng(8)
    B, C = 4, 2
    xt = rng.standard_normal((B, C, 3))
    t = np.array([1, 2, 300, 1000])
    mean_out, v = rng.standard_normal((B, C, 3)), rng.uniform(-12, 0, size=(B, C, 3))
    mu, s2, log_s2 = p_mean_var(SCHED, xt, t, np.concatenate([mean_out, v], axis=1),
                                variance="learned")
    np.testing.assert_array_equal(log_s2, v)
    np.testing.assert_allclose(s2, np.exp(v), rtol=1e-15)
    np.testing.assert_allclose(mu, mu_from_eps(SCHED, xt, t, mean_out), rtol=1e-14)
    with pytest.raises(ValueError, match="model_output: expected shape \\(4, 4, 3\\)"):
        p_mean_var(SCHED, xt, t, mean_out, variance="learned")


def test_learned_range_interpolates_log_variance():
    # Nichol & Dhariwal Eq. (15): v = 1 gives beta_t, v = -1 gives beta_tilde_t (clipped log)
    rng = np.random.default_rng(7)
    B, C = 5, 3
    xt = rng.standard_normal((B, C, 2, 2))
    t = np.array([1, 2, 10, 500, 1000])
    for v, want in ((1.0, np.log(SCHED.beta[t])), (-1.0, SCHED.log_beta_tilde_clipped[t])):
        out = np.concatenate([rng.standard_normal((B, C, 2, 2)), np.full((B, C, 2, 2), v)], axis=1)
        mu, s2, log_s2 = p_mean_var(SCHED, xt, t, out, variance="learned_range")
        assert mu.shape == s2.shape == log_s2.shape == (B, C, 2, 2)
        np.testing.assert_allclose(log_s2, np.broadcast_to(want[:, None, None, None], log_s2.shape),
                                   rtol=1e-14)
        np.testing.assert_allclose(mu, mu_from_eps(SCHED, xt, t, out[:, :C]), rtol=1e-14)
    v = rng.uniform(-1, 1, size=(B, C, 2, 2))
    _, _, log_s2 = p_mean_var(SCHED, xt, t, np.concatenate([xt, v], axis=1),
                              variance="learned_range")
    frac = (v + 1) / 2
    lo, hi = SCHED.log_beta_tilde_clipped[t], np.log(SCHED.beta[t])
    np.testing.assert_allclose(log_s2, frac * hi[:, None, None, None]
                               + (1 - frac) * lo[:, None, None, None], rtol=1e-14)


# ---- bad input: ValueError naming the argument ----

def _args(B=4):
    return np.zeros((B, 2)), np.array([1, 2, 3, 4])[:B], np.zeros((B, 2))


@pytest.mark.parametrize("t, msg", [
    (np.array([1.0, 2.0, 3.0, 4.0]), "integer"),
    (np.array([0, 2, 3, 4]), r"1\.\.1000, got min 0"),
    (np.array([1, 2, 3, 1001]), r"1\.\.1000, got min 1, max 1001"),
    (np.array([[1], [2], [3], [4]]), r"shape \(4,\)"),
    (np.array([1, 2, 3]), r"shape \(4,\)"),
    (3, r"shape \(4,\)"),
])
def test_bad_t(t, msg):
    x, _, eps = _args()
    for fn in (lambda: q_sample(SCHED, x, t, eps), lambda: q_step(SCHED, x, t, eps),
               lambda: q_posterior(SCHED, x, x, t), lambda: p_mean_var(SCHED, x, t, eps),
               lambda: mu_from_eps(SCHED, x, t, eps), lambda: predict_x0(SCHED, x, t, eps)):
        with pytest.raises(ValueError, match=r"^t: expected .*" + msg):
            fn()


@pytest.mark.parametrize("x0, msg", [
    (np.zeros((4, 2), dtype=np.int64), "floating-point"),
    (np.array([[0.0, np.nan]] * 4), "finite"),
    (np.array([[0.0, np.inf]] * 4), "finite"),
    (np.float64(1.0), "shape"),
])
def test_bad_x0(x0, msg):
    _, t, eps = _args()
    with pytest.raises(ValueError, match=r"^x0: expected .*" + msg):
        q_sample(SCHED, x0, t, eps)
    with pytest.raises(ValueError, match=r"^xt: expected .*" + msg):
        q_posterior(SCHED, np.zeros((4, 2)), x0, t)


def test_shapes_that_do_not_broadcast():
    x, t, _ = _args()
    with pytest.raises(ValueError, match=r"^eps: expected a shape that broadcasts"):
        q_sample(SCHED, x, t, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"^eps: expected a shape that broadcasts"):
        q_sample(SCHED, x, t, np.zeros((4, 1, 2)))  # would broadcast to a bigger shape
    with pytest.raises(ValueError, match=r"^x0: expected a shape that broadcasts"):
        q_posterior(SCHED, np.zeros((3, 2)), x, t)
    with pytest.raises(ValueError, match=r"^mu: expected a shape that broadcasts"):
        eps_from_mu(SCHED, x, t, np.zeros((2, 2)))


def test_bad_model_output_and_choices():
    x, t, out = _args()
    with pytest.raises(ValueError, match=r"^model_output: expected shape \(4, 2\)"):
        p_mean_var(SCHED, x, t, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"^model_output: expected shape \(4, 4\)"):
        p_mean_var(SCHED, x, t, out, variance="learned_range")
    with pytest.raises(ValueError, match=r"^model_output: expected a floating"):
        p_mean_var(SCHED, x, t, out.astype(int))
    with pytest.raises(ValueError, match=r"^mean_type: expected one of"):
        p_mean_var(SCHED, x, t, out, mean_type="v")
    with pytest.raises(ValueError, match=r"^variance: expected one of"):
        p_mean_var(SCHED, x, t, out, variance="learnt")
    with pytest.raises(ValueError, match=r"^mean_type: expected one of"):
        predict_x0(SCHED, x, t, out, mean_type="xprev")
