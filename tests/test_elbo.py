"""Tests for ddpm_ref.elbo: L_T, L_{t-1}, L_0 and their gradients, Eqs. (5), (12)-(14)."""

import numpy as np
import pytest
from scipy.special import ndtr

from ddpm_ref.diffusion import LEARNED_VARIANCES, MEAN_TYPES, VARIANCES, q_posterior, q_sample
from ddpm_ref.elbo import (
    bits_per_dim,
    decoder_nll,
    discretized_gaussian_log_likelihood,
    l_simple,
    l_simple_per_example,
    normal_kl,
    prior_kl,
    vlb_term,
    vlb_term_and_grad,
    vlb_weight,
)
from ddpm_ref.schedule import make_schedule

SCHED = make_schedule("linear", 1000)
GRID = np.arange(256) / 127.5 - 1.0  # the 256 data levels


def rel_error(a, b):
    return np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))


def check_grad_per_example(f, out, grad, h=1e-5, rtol=1e-6):
    """Compare grad with centred differences of f(out)[b] (the example that owns each element).

    A centred difference carries rounding error ~ eps_machine |f_b| / h; allow 100 times that
    (with |f_b| >= 1 for the scale of intermediate terms) on top of rtol relative agreement."""
    f0 = f(out)
    for b in range(out.shape[0]):
        num = num_grad(lambda o, b=b: f(o)[b], out, h=h)[b]
        floor = 100 * np.finfo(float).eps * max(1.0, abs(f0[b])) / h
        np.testing.assert_allclose(grad[b], num, rtol=rtol, atol=floor, err_msg=f"example {b}")


def num_grad(f, x, h=1e-5):
    """Centred finite differences of the scalar f at x."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def grid_data(rng, shape):
    x0 = GRID[rng.integers(0, 256, size=shape)]
    x0.flat[:2] = [-1.0, 1.0]  # always exercise both open edge bins
    return x0


# ---- normal_kl ----

def test_normal_kl_zero_at_equal_arguments():
    m, lv = np.linspace(-3, 3, 7), np.linspace(-5, 2, 7)
    np.testing.assert_allclose(normal_kl(m, lv, m, lv), 0.0, atol=1e-15)
    assert np.all(normal_kl(m, lv, m + 0.1, lv) > 0) and np.all(normal_kl(m, lv, m, lv + 0.1) > 0)


def test_normal_kl_accurate_for_nearly_equal_variances():
    # variance part e^d - 1 - d = d^2/2 + d^3/6 + d^4/24 + ...: the leading three terms leave a
    # relative error d^3/60 < 2e-11 for |d| <= 1e-3
    d = np.array([1e-3, -1e-4, 1e-6, -1e-8, 3e-9])
    kl = normal_kl(0.0, d, 0.0, 0.0)
    np.testing.assert_allclose(kl, 0.5 * (d**2 / 2 + d**3 / 6 + d**4 / 24), rtol=1e-10)
    big = np.array([-3.0, 0.5, 2.0])  # and the direct formula away from 0
    np.testing.assert_allclose(normal_kl(0.0, big, 0.0, 0.0), 0.5 * (np.exp(big) - 1 - big),
                               rtol=1e-14)


def test_normal_kl_matches_monte_carlo():
    rng = np.random.default_rng(0)
    m1, lv1, m2, lv2 = 0.3, np.log(0.5), -0.4, np.log(2.0)
    x = m1 + np.exp(0.5 * lv1) * rng.standard_normal(1_000_000)
    log_ratio = (-0.5 * lv1 - 0.5 * (x - m1) ** 2 / np.exp(lv1)
                 + 0.5 * lv2 + 0.5 * (x - m2) ** 2 / np.exp(lv2))
    # KL = E[log N1(x) - log N2(x)], x ~ N1; 5 standard errors of the sample mean
    se = log_ratio.std() / np.sqrt(x.size)
    assert abs(log_ratio.mean() - normal_kl(m1, lv1, m2, lv2)) < 5 * se


# ---- Eq. (13): the discretized decoder ----

MEANS = [-5.0, -1.3, -1.0, -0.3, 0.0, 0.21, 0.99, 1.0, 1.7, 6.0]
SIGMAS = [1e-3, 1e-2, 0.1, 1.0, 10.0]


@pytest.mark.parametrize("sigma", SIGMAS)
def test_eq13_probabilities_sum_to_one(sigma):
    mean = np.array(MEANS)[:, None]  # (M, 1) against the grid (1, 256)
    logp = discretized_gaussian_log_likelihood(GRID[None, :], mean, np.log(sigma))
    assert np.all(np.isfinite(logp)) and np.all(logp <= 0)
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-12)


def _log_ndtr_tail(z):
    """log Phi(z) for z <= -8 from the asymptotic series (independent of scipy's log_ndtr):
    Phi(z) = phi(z)/|z| sum_k (-1)^k (2k-1)!! / z^{2k}; 12 terms, truncation error < 1e-13."""
    s, term = 1.0, 1.0
    for k in range(1, 12):
        term *= -(2 * k - 1) / z**2
        s += term
    return -0.5 * z**2 - 0.5 * np.log(2 * np.pi) - np.log(-z) + np.log(s)


@pytest.mark.parametrize("x, mean, sigma", [
    (GRID[191], 3.0, 1e-3),   # lower tail, z ~ -2500: naive Phi underflows to 0
    (GRID[102], -4.0, 1e-3),  # upper tail, z ~ +3800: naive 1 - Phi cancels to 0
    (-1.0, 5.0, 0.5),         # open lower edge bin, z ~ -12
    (1.0, -5.0, 0.5),         # open upper edge bin, z ~ +12
    (GRID[230], -5.0, 0.4),   # interior bin in the upper tail
])
def test_eq13_exact_cdf_is_accurate_in_the_tails(x, mean, sigma):
    h = 1 / 255
    a, b = (x - h - mean) / sigma, (x + h - mean) / sigma
    if a > 0:  # by symmetry, P = Phi(-a) - Phi(-b)
        a, b = -b, -a
    lb = _log_ndtr_tail(b)
    edge = x in (-1.0, 1.0)
    ref = lb if edge else lb + np.log1p(-np.exp(_log_ndtr_tail(a) - lb))
    got = discretized_gaussian_log_likelihood(np.array([x]), np.array([mean]), np.log(sigma))
    np.testing.assert_allclose(got[0], ref, rtol=1e-10)


def test_eq13_exact_vs_tanh_cdf_close():
    # A bin probability is a difference of two CDF values, so the two versions differ by at most
    # twice the tanh approximation's largest CDF error (measured here on a fine grid).
    z = np.linspace(-10, 10, 400_001)
    approx = 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    max_cdf_err = np.abs(approx - ndtr(z)).max()
    assert max_cdf_err < 1e-3
    for sigma in (0.01, 0.1, 0.5):
        mean = np.array([-0.5, 0.0, 0.33, 0.9])[:, None]
        p_exact = np.exp(discretized_gaussian_log_likelihood(GRID, mean, np.log(sigma)))
        p_tanh = np.exp(discretized_gaussian_log_likelihood(GRID, mean, np.log(sigma), cdf="tanh"))
        assert np.abs(p_exact - p_tanh).max() <= 2 * max_cdf_err + 1e-15
        assert np.abs(p_exact - p_tanh).max() > 0  # really two different CDFs


@pytest.mark.parametrize("decoder", ["discretized", "gaussian"])
def test_decoder_nll_sums_over_dims(decoder):
    rng = np.random.default_rng(1)
    x0 = grid_data(rng, (3, 2, 4))
    mean = x0 + 0.01 * rng.standard_normal(x0.shape)
    log_scale = np.log(0.02)
    nll = decoder_nll(x0, mean, log_scale, decoder)
    if decoder == "gaussian":
        sigma = 0.02
        ref = 0.5 * np.log(2 * np.pi * sigma**2) + 0.5 * (x0 - mean) ** 2 / sigma**2
    else:
        ref = -discretized_gaussian_log_likelihood(x0, mean, np.full(x0.shape, log_scale))
    assert nll.shape == (3,)
    np.testing.assert_allclose(nll, ref.reshape(3, -1).sum(axis=1), rtol=1e-12)


# ---- L_T ----

def test_prior_kl_is_about_1e_5_bits_per_dim():
    # For small abar_T, L_T per dim = 0.5 (abar x0^2 + abar - log(1/(1 - abar)) ... ) expands to
    # 0.5 abar_T (x0^2 + abar_T / 2) + O(abar_T^3): check the formula against that expansion.
    x0 = GRID[None, :]  # one example holding every data level, D = 256
    for kind in ("linear", "cosine"):
        sched = make_schedule(kind, 1000)
        ab = sched.alpha_bar[1000]
        np.testing.assert_allclose(prior_kl(sched, x0)[0],
                                   np.sum(0.5 * ab * (x0**2 + ab / 2)), rtol=1e-6)
    bpd = bits_per_dim(prior_kl(SCHED, x0), x0.size)[0]
    assert 1e-6 < bpd < 3e-5  # the paper's "L_T ~ 1e-5 bits per dimension" (§4)


# ---- Eq. (12): L_{t-1} = lambda_t ||eps - eps_theta||^2 + C_t D ----

@pytest.mark.parametrize("variance", ["fixedlarge", "fixedsmall"])
def test_eq12_vlb_term_equals_weighted_mse(variance):
    rng = np.random.default_rng(2)
    B, shape = 64, (3, 5)
    x0 = rng.uniform(-1, 1, size=(B,) + shape)
    t = np.concatenate([[2, 3, 1000], rng.integers(2, 1001, size=B - 3)])
    eps = rng.standard_normal(x0.shape)
    eps_theta = eps + 0.3 * rng.standard_normal(x0.shape)
    xt = q_sample(SCHED, x0, t, eps)
    lam, C = vlb_weight(SCHED, t, variance)
    D = np.prod(shape)
    want = lam * ((eps - eps_theta) ** 2).reshape(B, -1).sum(axis=1) + C * D
    got = vlb_term(SCHED, x0, xt, t, eps_theta, variance=variance, decoder="gaussian")
    np.testing.assert_allclose(got, want, rtol=1e-10)
    if variance == "fixedsmall":
        np.testing.assert_allclose(C, 0.0, atol=1e-15)


def test_optimal_eps_on_gaussian_data_gives_irreducible_kl():
    r"""Data x0 ~ N(0, I): every marginal q(x_t) is N(0, I) and the true reverse conditional is
    q(x_{t-1} | x_t) = N(sqrt(alpha_t) x_t, beta_t I). The optimal eps_theta = E[eps | x_t] =
    sqrt(1 - abar_t) x_t makes Eq. (11)'s mean sqrt(alpha_t) x_t and sigma^2 = beta_t
    (fixedlarge) is then exact, so E[L_{t-1}] is the irreducible
    E KL(q(x_{t-1}|x_t,x0) || q(x_{t-1}|x_t)) = I(x_{t-1}; x0 | x_t)
    = 0.5 D log(beta_t / beta_tilde_t).
    Through Eq. (12): E||eps - eps*||^2 = D abar_t, so C_t D + lambda_t D abar_t must agree."""
    t_all = np.arange(2, 1001)
    lam, C = vlb_weight(SCHED, t_all, "fixedlarge")
    # beta_t / beta_tilde_t = (1 - abar_t) / (1 - abar_{t-1}) -> 1 at large t: take the log as
    # -log1p(beta_tilde / beta - 1) with beta_tilde / beta - 1 = -abar_{t-1} beta_t / (1 - abar_t)
    ab_prev, omab = SCHED.alpha_bar[t_all - 1], SCHED.one_minus_alpha_bar[t_all]
    irreducible = -0.5 * np.log1p(-ab_prev * SCHED.beta[t_all] / omab)
    naive = 0.5 * np.log(SCHED.beta[t_all] / SCHED.beta_tilde[t_all])
    np.testing.assert_allclose(irreducible, naive, rtol=1e-9)  # naive loses ~1e-16 / (1 - ratio)
    np.testing.assert_allclose(C + lam * SCHED.alpha_bar[t_all], irreducible, rtol=1e-12)

    rng = np.random.default_rng(3)
    N, D = 200_000, 3
    for t_val in (2, 10, 300, 1000):
        t = np.full(N, t_val)
        x0 = rng.standard_normal((N, D))
        xt = q_sample(SCHED, x0, t, rng.standard_normal((N, D)))
        eps_star = np.sqrt(SCHED.one_minus_alpha_bar[t_val]) * xt
        L = vlb_term(SCHED, x0, xt, t, eps_star, variance="fixedlarge", decoder="gaussian")
        se = L.std() / np.sqrt(N)  # 5 standard errors of the sample mean
        assert abs(L.mean() - D * irreducible[t_val - 2]) < 5 * se


# ---- gradients ----

def _learned_v(variance, t, rng, shape):
    """A variance output v of the given (B, C, ...) shape with sigma_t^2 between beta_tilde_t
    and beta_t: frac in [-1, 1] for learned_range, log sigma_t^2 itself for learned."""
    frac = rng.uniform(-1, 1, size=shape)
    if variance == "learned_range":
        return frac
    lo = SCHED.log_beta_tilde_clipped[t].reshape((-1,) + (1,) * (len(shape) - 1))
    hi = np.log(SCHED.beta[t]).reshape(lo.shape)
    return lo + (frac + 1) / 2 * (hi - lo)


@pytest.mark.parametrize("mean_type", MEAN_TYPES)
@pytest.mark.parametrize("variance", VARIANCES)
@pytest.mark.parametrize("clip_x0", [False, True])
def test_vlb_term_and_grad_matches_finite_differences(mean_type, variance, clip_x0):
    rng = np.random.default_rng(7)
    t = np.array([1, 1, 2, 3, 40, 1000])
    x0 = grid_data(rng, (6, 2, 2, 2))
    xt = q_sample(SCHED, x0, t, rng.standard_normal(x0.shape))
    eps = rng.standard_normal(x0.shape)
    base = {"eps": eps, "x0": x0 + 0.05 * eps, "mu": q_posterior(SCHED, x0, xt, t)[0] + 0.01 * eps}
    out = base[mean_type] + 0.1 * rng.standard_normal(x0.shape)
    if variance in LEARNED_VARIANCES:
        out = np.concatenate([out, _learned_v(variance, t, rng, x0.shape)], axis=1)  # (6, 4, 2, 2)
    kw = dict(variance=variance, clip_x0=clip_x0, mean_type=mean_type)
    nats, grad = vlb_term_and_grad(SCHED, x0, xt, t, out, **kw)
    np.testing.assert_array_equal(nats, vlb_term(SCHED, x0, xt, t, out, **kw))
    assert grad.shape == out.shape
    check_grad_per_example(lambda o: vlb_term(SCHED, x0, xt, t, o, **kw), out.copy(), grad)
    if variance in LEARNED_VARIANCES:
        _, g_stop = vlb_term_and_grad(SCHED, x0, xt, t, out, stop_grad_mean=True, **kw)
        np.testing.assert_array_equal(g_stop[:, :2], 0.0)
        np.testing.assert_array_equal(g_stop[:, 2:], grad[:, 2:])


@pytest.mark.parametrize("variance", VARIANCES)
def test_vlb_grad_gaussian_decoder(variance):
    rng = np.random.default_rng(8)
    t = np.array([1, 1, 1, 2, 500])
    x0 = rng.uniform(-2, 2, size=(5, 2))
    xt = q_sample(SCHED, x0, t, rng.standard_normal(x0.shape))
    out = rng.standard_normal((5, 2))
    if variance in LEARNED_VARIANCES:
        out = np.concatenate([out, _learned_v(variance, t, rng, out.shape)], axis=1)  # (5, 4)
    kw = dict(variance=variance, decoder="gaussian")
    _, grad = vlb_term_and_grad(SCHED, x0, xt, t, out, **kw)
    check_grad_per_example(lambda o: vlb_term(SCHED, x0, xt, t, o, **kw), out.copy(), grad)


@pytest.mark.parametrize("mean, sigma", [(0.3, 1e-3), (3.0, 1e-3), (-4.0, 0.5), (0.0, 0.05),
                                         (1.5, 2.0)])
def test_eq13_gradient_matches_finite_differences(mean, sigma):
    # the decoder's gradient in every regime, through vlb_term at t = 1 with mean_type "mu"
    # (mu_theta = output) and learned_range (log sigma^2 linear in v)
    sched = make_schedule("linear", 10)
    x0 = GRID[[0, 3, 127, 128, 200, 255]][:, None]  # (6, 1)
    t = np.ones(6, dtype=int)
    log_min, log_max = sched.log_beta_tilde_clipped[1], np.log(sched.beta[1])
    v = 2 * (2 * np.log(sigma) - log_min) / (log_max - log_min) - 1  # so that sigma_1 = sigma
    out = np.concatenate([np.full((6, 1), mean), np.full((6, 1), v)], axis=1)
    kw = dict(variance="learned_range", mean_type="mu")
    _, grad = vlb_term_and_grad(sched, x0, x0, t, out, **kw)
    assert np.all(np.isfinite(grad))
    check_grad_per_example(lambda o: vlb_term(sched, x0, x0, t, o, **kw), out.copy(), grad)


@pytest.mark.parametrize("mean, sigma", [(0.3, 1e-3), (-4.0, 0.5), (0.0, 0.05), (1.5, 2.0)])
def test_eq13_gradient_wrt_learned_log_variance(mean, sigma):
    # the paper's learned diagonal Sigma: v = log sigma_1^2 (log_scale = v / 2), so
    # d L_0 / dv = 0.5 d L_0 / d log_scale; centred differences in v, and v = 2 log sigma
    # reproduces the decoder at that scale exactly
    sched = make_schedule("linear", 10)
    x0 = GRID[[0, 3, 127, 128, 200, 255]][:, None]  # (6, 1)
    t = np.ones(6, dtype=int)
    out = np.concatenate([np.full((6, 1), mean), np.full((6, 1), 2 * np.log(sigma))], axis=1)
    kw = dict(variance="learned", mean_type="mu")
    nats, grad = vlb_term_and_grad(sched, x0, x0, t, out, **kw)
    np.testing.assert_allclose(nats, decoder_nll(x0, np.full((6, 1), mean),
                                                 np.full((6, 1), np.log(sigma))), rtol=1e-12)
    assert np.all(np.isfinite(grad))
    check_grad_per_example(lambda o: vlb_term(sched, x0, x0, t, o, **kw), out.copy(), grad)


def test_learned_log_variance_kl_gradient_vanishes_at_beta_tilde():
    # Eq. (5)'s L_{t-1} as a function of v = log sigma_t^2:
    # d/dv KL = 0.5 (1 - beta_tilde_t / sigma_t^2 - (mu_tilde - mu)^2 / sigma_t^2),
    # zero at sigma_t^2 = beta_tilde_t when the means agree
    rng = np.random.default_rng(12)
    t = np.array([2, 10, 500, 1000])
    x0 = rng.standard_normal((4, 3))
    xt = q_sample(SCHED, x0, t, rng.standard_normal(x0.shape))
    mu_tilde = q_posterior(SCHED, x0, xt, t)[0]
    v = np.broadcast_to(SCHED.log_beta_tilde_clipped[t][:, None], x0.shape)
    out = np.concatenate([mu_tilde, v], axis=1)  # (4, 6)
    nats, grad = vlb_term_and_grad(SCHED, x0, xt, t, out, variance="learned", mean_type="mu")
    np.testing.assert_allclose(nats, 0.0, atol=1e-12)
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)


def test_l_simple_value_and_gradient():
    # Eq. (14)
    rng = np.random.default_rng(10)
    eps, eps_theta = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    loss, grad = l_simple(eps, eps_theta)
    assert loss == pytest.approx(np.mean((eps - eps_theta) ** 2), rel=1e-14)
    num = num_grad(lambda e: l_simple(eps, e)[0], eps_theta.copy())
    assert rel_error(grad, num) < 1e-8
    per = l_simple_per_example(eps, eps_theta)
    assert per.shape == (4,) and per.mean() == pytest.approx(loss, rel=1e-14)


def test_bits_per_dim():
    assert bits_per_dim(np.log(2.0) * 784, 784) == pytest.approx(1.0, rel=1e-15)


# ---- bad input ----

def test_bad_decoder_inputs():
    with pytest.raises(ValueError, match=r"^x: expected data on the 256-level grid"):
        discretized_gaussian_log_likelihood(np.array([0.5]), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"^x: expected data on the 256-level grid"):
        discretized_gaussian_log_likelihood(np.array([1.0 + 2 / 255]), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"^x: expected a floating"):
        discretized_gaussian_log_likelihood(np.array([1]), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"^cdf: expected one of"):
        discretized_gaussian_log_likelihood(GRID, 0.0, 0.0, cdf="erf")
    with pytest.raises(ValueError, match=r"^log_scale: expected finite"):
        discretized_gaussian_log_likelihood(GRID, 0.0, np.nan)
    with pytest.raises(ValueError, match=r"^mean, log_scale: expected shapes that broadcast"):
        discretized_gaussian_log_likelihood(GRID, np.zeros(3), 0.0)
    with pytest.raises(ValueError, match=r"^decoder: expected one of"):
        decoder_nll(GRID[None], GRID[None], 0.0, decoder="logistic")
    with pytest.raises(ValueError, match=r"^mean: expected a shape that broadcasts"):
        decoder_nll(GRID[None], np.zeros((2, 256)), 0.0)


def test_bad_vlb_inputs():
    x = np.zeros((3, 2))
    t = np.array([1, 2, 3])
    with pytest.raises(ValueError, match=r"^t: expected integers in 2\.\.1000"):
        vlb_weight(SCHED, np.array([1, 2]))
    with pytest.raises(ValueError, match=r"^variance: expected one of"):
        vlb_weight(SCHED, np.array([2]), "learned_range")
    with pytest.raises(ValueError, match=r"^model_output: expected shape \(3, 2\)"):
        vlb_term(SCHED, x, x, t, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"^t: expected integers in 1\.\.1000"):
        vlb_term(SCHED, x, x, np.array([0, 1, 2]), x)
    with pytest.raises(ValueError, match=r"^x0: expected a floating"):
        vlb_term(SCHED, x.astype(int), x, t, x)
    with pytest.raises(ValueError, match=r"^x0: expected shape \(3, 2\)"):
        vlb_term(SCHED, np.zeros((2, 2)), x, t, x)
    with pytest.raises(ValueError, match=r"^x: expected data on the 256-level grid"):
        vlb_term(SCHED, x + 0.001, x, t, x)  # t = 1 uses the discretized decoder
    with pytest.raises(ValueError, match=r"^x0: expected finite"):
        prior_kl(SCHED, np.array([[np.inf]]))
    with pytest.raises(ValueError, match=r"^eps_theta: expected shape \(3, 2\)"):
        l_simple(x, np.zeros((3, 1)))
