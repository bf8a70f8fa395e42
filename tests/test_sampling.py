"""Tests for ddpm_ref.sampling: Algorithm 2, traces, sample_from, DDIM, respacing, interpolation."""

import numpy as np
import pytest

from ddpm_ref import sampling
from ddpm_ref.diffusion import fixed_variance, p_mean_var, predict_x0
from ddpm_ref.schedule import make_schedule

SCHED = make_schedule("linear", 1000)


def gaussian_oracle(sched):
    """eps*(x_t, t) = sqrt(1 - abar_t) x_t: the exact E[eps | x_t] for data N(0, I), where
    q(x_t) = N(0, I) at every t. Called with original timesteps, it reads the original schedule."""

    def model_fn(xt, t):
        return np.sqrt(1.0 - sched.alpha_bar[t]).reshape((-1,) + (1,) * (xt.ndim - 1)) * xt

    return model_fn


def exact_variance(sched, variance):
    """Var of x_0 under Algorithm 2 with the Gaussian oracle, by the exact recursion.

    With eps*, mu_theta = sqrt(alpha_t) x_t (Eq. 11), so v_{t-1} = alpha_t v_t + sigma_t^2 for
    t >= 2 and v_0 = alpha_1 v_1 (no noise at t = 1), starting from v_T = 1.
    """
    s2 = sched.beta if variance == "fixedlarge" else sched.beta_tilde
    v = 1.0
    for t in range(sched.T, 1, -1):
        v = sched.alpha[t] * v + s2[t]
    return sched.alpha[1] * v


def check_gaussian(x, var):
    # mean 0: SE sqrt(var / n); variance: SE sqrt(2 / n) var for Gaussian samples; covariance
    # off-diagonals: SE var / sqrt(n). 5 SE each.
    n = x.shape[0]
    x = x.reshape(n, -1)
    assert np.all(np.abs(x.mean(axis=0)) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(x.var(axis=0) - var) < 5 * np.sqrt(2.0 / n) * var)
    c = np.cov(x.T)
    off = c[~np.eye(c.shape[0], dtype=bool)]
    assert np.all(np.abs(off) < 5 * var / np.sqrt(n))


@pytest.mark.parametrize("variance", ["fixedlarge", "fixedsmall"])
def test_algorithm2_with_exact_eps_samples_the_gaussian(variance):
    # sigma^2 = beta: the reverse chain is the exact reverse of q, variance alpha_1 (~ 1) at x_0;
    # sigma^2 = beta_tilde: the recursion gives a (slightly) different exact variance.
    x = sampling.sample(
        SCHED, gaussian_oracle(SCHED), (4000, 3), np.random.default_rng(0), variance=variance
    )
    assert x.shape == (4000, 3) and x.dtype == np.float64
    check_gaussian(x, exact_variance(SCHED, variance))


def test_algorithm2_fixedsmall_variance_is_distinguishable():
    # the two variances differ enough that check_gaussian is a real test: with a shorter schedule
    # (T = 20), beta_tilde underestimates the spread by more than 8 SE at n = 4000
    sched = make_schedule("linear", 20, beta_end=0.3)
    v_large, v_small = exact_variance(sched, "fixedlarge"), exact_variance(sched, "fixedsmall")
    assert v_large - v_small > 8 * np.sqrt(2.0 / 4000)
    x = sampling.sample(
        sched, gaussian_oracle(sched), (4000, 2), np.random.default_rng(1), variance="fixedsmall"
    )
    check_gaussian(x, v_small)


def test_algorithm2_line3_no_noise_at_the_last_step():
    # Replay Algorithm 2 by hand with the same rng: x_T, then one z per step t = T..2 only.
    sched = make_schedule("linear", 5, beta_end=0.2)
    model_fn = lambda xt, t: 0.3 * xt + 0.01 * t[:, None]
    got = sampling.sample(sched, model_fn, (6, 2), rng := np.random.default_rng(2))
    replay = np.random.default_rng(2)
    x = replay.standard_normal((6, 2))
    for t in range(5, 0, -1):
        tt = np.full(6, t)
        mu, _, log_s2 = p_mean_var(sched, x, tt, model_fn(x, tt))
        x = mu + (np.exp(0.5 * log_s2) * replay.standard_normal((6, 2)) if t > 1 else 0.0)
    np.testing.assert_array_equal(got, x)
    # the rng has advanced by exactly T draws of the batch shape: no z drawn at t = 1
    np.testing.assert_array_equal(rng.standard_normal(3), replay.standard_normal(3))


def test_sample_equals_sample_from_x_T():
    model_fn = gaussian_oracle(SCHED)
    a = sampling.sample(SCHED, model_fn, (5, 2), np.random.default_rng(3))
    rng = np.random.default_rng(3)
    x_T = rng.standard_normal((5, 2))
    np.testing.assert_array_equal(a, sampling.sample_from(SCHED, model_fn, x_T, SCHED.T, rng))


def test_sample_from_intermediate_step_shares_x_t():
    # Fig. 7: from one x_t, different noise gives different x_0; t_start = 1 adds no noise at all
    sched = make_schedule("linear", 50, beta_end=0.2)
    model_fn = gaussian_oracle(sched)
    xt = np.tile(np.array([[0.5, -1.0]]), (4, 1))
    x0 = sampling.sample_from(sched, model_fn, xt, 25, np.random.default_rng(4))
    assert len(np.unique(x0[:, 0])) == 4
    one = sampling.sample_from(sched, model_fn, xt, 1, np.random.default_rng(5))
    np.testing.assert_allclose(one, np.sqrt(sched.alpha[1]) * xt, rtol=1e-12)


def test_trace_shapes_and_contents():
    sched = make_schedule("linear", 30, beta_end=0.2)
    model_fn = gaussian_oracle(sched)
    rng = np.random.default_rng(6)
    x0, tr = sampling.sample(sched, model_fn, (7, 1, 2, 2), rng, trace_steps=[0, 30, 10, 1, 10])
    np.testing.assert_array_equal(tr["t"], [30, 10, 1, 0])
    assert tr["xt"].shape == (4, 7, 1, 2, 2) and tr["x0_pred"].shape == (4, 7, 1, 2, 2)
    np.testing.assert_array_equal(
        tr["xt"][0], np.random.default_rng(6).standard_normal((7, 1, 2, 2))
    )
    np.testing.assert_array_equal(tr["xt"][-1], x0)
    np.testing.assert_array_equal(tr["x0_pred"][-1], x0)
    tt = np.full(7, 10)
    np.testing.assert_array_equal(
        tr["x0_pred"][1], predict_x0(sched, tr["xt"][1], tt, model_fn(tr["xt"][1], tt))
    )


def test_respaced_sampling_passes_original_timesteps():
    resp = SCHED.respace(50)
    seen = []
    oracle = gaussian_oracle(SCHED)  # reads the ORIGINAL schedule at the step it is given

    def model_fn(xt, t):
        seen.append(np.unique(t))
        return oracle(xt, t)

    x = sampling.sample(resp, model_fn, (4000, 2), np.random.default_rng(7))
    np.testing.assert_array_equal(np.concatenate(seen), resp.timesteps[50:0:-1])
    assert seen[0][0] == 1000 and seen[-1][0] == 20  # original steps, not 50..1
    # with the right alpha_bar the respaced chain is exact too: Var x_0 = alpha'_1 = abar[20]
    check_gaussian(x, SCHED.alpha_bar[20])


def test_ddim_eta1_step_equals_fixedsmall_ancestral_step():
    rng = np.random.default_rng(8)
    xt = rng.normal(size=(6, 3))
    t = np.array([1, 2, 10, 300, 999, 1000])
    out = rng.normal(size=(6, 3))
    for clip in (False, True):
        mean, sigma2 = sampling.ddim_step(SCHED, xt, t, out, eta=1.0, clip_x0=clip)
        mu, s2, _ = p_mean_var(SCHED, xt, t, out, variance="fixedsmall", clip_x0=clip)
        np.testing.assert_allclose(mean, mu, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(sigma2, s2, rtol=1e-12, atol=0)


def test_ddim_eta1_sampling_equals_algorithm2_fixedsmall():
    # same rng stream: x_T then one z per step t > 1 in both samplers
    sched = make_schedule("linear", 100, beta_end=0.1)
    model_fn = lambda xt, t: np.tanh(xt) * 0.5
    a = sampling.ddim_sample(sched, model_fn, (5, 2), np.random.default_rng(9), eta=1.0)
    b = sampling.sample(sched, model_fn, (5, 2), np.random.default_rng(9), variance="fixedsmall")
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_ddim_eta0_is_deterministic():
    model_fn = gaussian_oracle(SCHED)
    resp = SCHED.respace(20)
    x_T = np.random.default_rng(10).standard_normal((4, 2))
    a = sampling.ddim_sample(resp, model_fn, (4, 2), np.random.default_rng(11), x_T=x_T)
    b = sampling.ddim_sample(resp, model_fn, (4, 2), np.random.default_rng(12), x_T=x_T)
    np.testing.assert_array_equal(a, b)
    # For N(0, I) data with eps*, each DDIM step multiplies x_t by
    # c_t = sqrt(abar_{t-1} abar_t) + sqrt((1 - abar_{t-1})(1 - abar_t)).
    ab, ab_prev = resp.alpha_bar[1:], resp.alpha_bar_prev[1:]
    c = np.sqrt(ab_prev * ab) + np.sqrt((1 - ab_prev) * (1 - ab))
    np.testing.assert_allclose(a, np.prod(c) * x_T, rtol=1e-12)


def test_interpolate_endpoints_and_shared_noise():
    sched = make_schedule("linear", 40, beta_end=0.2)
    model_fn = gaussian_oracle(sched)  # eps* linear in x_t: decoding is affine in x_t
    xa, xb = np.array([1.0, -2.0]), np.array([-0.5, 3.0])
    out = sampling.interpolate(sched, model_fn, xa, xb, t=20, n=5, rng=np.random.default_rng(13))
    assert out.shape == (5, 2)
    # with the same reverse noise for every lambda, an affine decoder keeps the mix linear
    lam = np.linspace(0, 1, 5)[:, None]
    np.testing.assert_allclose(out, (1 - lam) * out[0] + lam * out[-1], rtol=1e-12, atol=1e-12)
    # t = 0: plain interpolation in data space
    mix = sampling.interpolate(sched, model_fn, xa, xb, t=0, n=3, rng=np.random.default_rng(0))
    np.testing.assert_allclose(mix, [xa, (xa + xb) / 2, xb], rtol=1e-12)
    img = sampling.interpolate(
        sched,
        lambda x, t: 0 * x,
        np.zeros((1, 4, 4)),
        np.ones((1, 4, 4)),
        t=5,
        n=3,
        rng=np.random.default_rng(1),
    )
    assert img.shape == (3, 1, 4, 4)


def test_learned_range_output_is_accepted():
    model_fn = lambda xt, t: np.concatenate([0.1 * xt, np.zeros_like(xt)], axis=1)  # v = 0
    sched = make_schedule("linear", 10, beta_end=0.2)
    x, tr = sampling.sample(
        sched,
        model_fn,
        (3, 2),
        np.random.default_rng(14),
        variance="learned_range",
        trace_steps=[10],
    )
    assert x.shape == (3, 2) and tr["x0_pred"].shape == (1, 3, 2)
    assert sampling.ddim_sample(sched, model_fn, (3, 2), np.random.default_rng(0)).shape == (3, 2)


def test_learned_variance_at_log_beta_samples_as_fixedlarge():
    # variance="learned" reads log sigma_t^2 from the output: outputting fixedlarge's log sigma_t^2
    # must give Algorithm 2 with fixedlarge, draw for draw (same rng stream, same arithmetic)
    sched = make_schedule("linear", 10, beta_end=0.2)
    _, log_s2 = fixed_variance(sched, "fixedlarge")  # (T+1,)
    eps_fn = lambda xt, t: 0.1 * xt
    learned_fn = lambda xt, t: np.concatenate(
        [eps_fn(xt, t), np.broadcast_to(log_s2[t][:, None], xt.shape)], axis=1)
    a = sampling.sample(sched, learned_fn, (5, 2), np.random.default_rng(3), variance="learned")
    b = sampling.sample(sched, eps_fn, (5, 2), np.random.default_rng(3), variance="fixedlarge")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, r: sampling.sample(SCHED, f, (0, 2), r), "shape:"),
        (lambda f, r: sampling.sample(SCHED, f, (-3, 2), r), "shape:"),
        (lambda f, r: sampling.sample(SCHED, f, (), r), "shape:"),
        (lambda f, r: sampling.sample(SCHED, f, 5, r), "shape:"),
        (lambda f, r: sampling.sample(SCHED, "net", (2, 2), r), "model_fn:"),
        (lambda f, r: sampling.sample(SCHED, f, (2, 2), 0), "rng:"),
        (lambda f, r: sampling.sample(SCHED, f, (2, 2), r, mean_type="v"), "mean_type:"),
        (lambda f, r: sampling.sample(SCHED, f, (2, 2), r, variance="big"), "variance:"),
        (lambda f, r: sampling.sample(SCHED, f, (2, 2), r, trace_steps=[1001]), "trace_steps:"),
        (lambda f, r: sampling.sample(SCHED, f, (2, 2), r, trace_steps=[]), "trace_steps:"),
        (lambda f, r: sampling.sample(SCHED, lambda x, t: x[:1], (2, 2), r), "model_output:"),
        (lambda f, r: sampling.sample_from(SCHED, f, np.zeros((2, 2)), 0, r), "t_start:"),
        (lambda f, r: sampling.sample_from(SCHED, f, np.zeros((2, 2)), 1001, r), "t_start:"),
        (
            lambda f, r: sampling.sample_from(SCHED, f, np.zeros((2, 2)), 5, r, trace_steps=[6]),
            "trace_steps:",
        ),
        (lambda f, r: sampling.sample_from(SCHED, f, np.full((2, 2), np.nan), 5, r), "xt:"),
        (lambda f, r: sampling.ddim_sample(SCHED, f, (2, 2), r, eta=-1.0), "eta:"),
        (lambda f, r: sampling.ddim_sample(SCHED, f, (2, 2), r, x_T=np.zeros((3, 2))), "x_T:"),
        (lambda f, r: sampling.interpolate(SCHED, f, np.zeros(2), np.zeros(2), 1001, 3, r), "t:"),
        (lambda f, r: sampling.interpolate(SCHED, f, np.zeros(2), np.zeros(2), 10, 0, r), "n:"),
        (lambda f, r: sampling.interpolate(SCHED, f, np.zeros(2), np.zeros(3), 10, 3, r), "x0_b:"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(gaussian_oracle(SCHED), np.random.default_rng(0))


def test_ddim_trace_and_progress_change_nothing():
    sched = make_schedule("linear", 12, beta_end=0.2)
    model_fn = lambda xt, t: np.tanh(xt)
    plain = sampling.ddim_sample(sched, model_fn, (3, 2), np.random.default_rng(15), eta=0.5)
    x, tr = sampling.ddim_sample(
        sched,
        model_fn,
        (3, 2),
        np.random.default_rng(15),
        eta=0.5,
        trace_steps=range(13),
        progress=True,
    )
    np.testing.assert_array_equal(x, plain)
    np.testing.assert_array_equal(tr["t"], np.arange(12, -1, -1))
    assert tr["xt"].shape == (13, 3, 2)
    np.testing.assert_array_equal(tr["x0_pred"][-1], x)
    y = sampling.sample(sched, model_fn, (3, 2), np.random.default_rng(16), progress=True)
    np.testing.assert_array_equal(
        y, sampling.sample(sched, model_fn, (3, 2), np.random.default_rng(16))
    )
