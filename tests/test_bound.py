"""Tests for ddpm_ref.bound: the whole bound Eq. (5) against Eq. (3), and its one-t estimate."""

import numpy as np
import pytest

from ddpm_ref.diffusion import eps_from_x0, p_mean_var, predict_x0, q_sample, q_step
from ddpm_ref.elbo import (
    bound_estimate,
    bound_terms,
    discretized_gaussian_log_likelihood,
    prior_kl,
    vlb_term,
)
from ddpm_ref.schedule import make_schedule

GRID = np.arange(256) / 127.5 - 1.0  # the 256 data levels


def grid_data(rng, shape):
    return GRID[rng.integers(0, 256, size=shape)]


def _gauss_logpdf(x, mean, log_var):
    return -0.5 * (np.log(2 * np.pi) + log_var + (x - mean) ** 2 / np.exp(log_var))


@pytest.mark.parametrize(
    "decoder, variance", [("gaussian", "fixedlarge"), ("discretized", "fixedsmall")]
)
def test_eq5_sum_of_terms_equals_eq3_monte_carlo(decoder, variance):
    # 1-D data, T = 5, a linear "model" eps_theta = c_t x_t. Eq. (3) is estimated directly from
    # forward trajectories: E_q[-log p(x_{0:T}) + log q(x_{1:T} | x0)], using only the Gaussian
    # densities of Eq. (2), p(x_T) and p_mean_var (no posterior, no KL). bound_terms estimates
    # the same expectation with one x_t per t; compare the two means within 5 combined SE.
    sched = make_schedule("linear", 5, beta_start=0.1, beta_end=0.5)
    c = np.array([0.0, 0.9, -0.3, 0.5, 1.2, 0.2])  # c[t]
    model_fn = lambda xt, t: c[t][:, None] * xt
    rng = np.random.default_rng(4)
    N = 400_000
    x0 = np.full((N, 1), GRID[255])  # x0 = 1: the open edge bin of the discretized decoder
    x, log_q = x0, np.zeros(N)
    traj = [x0]
    for t in range(1, 6):
        x_new = q_step(sched, x, np.full(N, t), rng.standard_normal((N, 1)))
        log_q += _gauss_logpdf(x_new, np.sqrt(1 - sched.beta[t]) * x, np.log(sched.beta[t]))[:, 0]
        x = x_new
        traj.append(x)
    log_p = _gauss_logpdf(traj[5], 0.0, 0.0)[:, 0]
    for t in range(5, 0, -1):
        tt = np.full(N, t)
        mu, _, log_var = p_mean_var(sched, traj[t], tt, model_fn(traj[t], tt), variance=variance)
        if t > 1:
            log_p += _gauss_logpdf(traj[t - 1], mu, log_var)[:, 0]
        elif decoder == "gaussian":
            log_p += _gauss_logpdf(x0, mu, log_var)[:, 0]
        else:
            log_p += discretized_gaussian_log_likelihood(x0, mu, 0.5 * log_var)[:, 0]
    eq3 = log_q - log_p
    terms = bound_terms(sched, model_fn, x0, rng, variance=variance, decoder=decoder)
    se = np.sqrt(eq3.var() / N + terms["total"].var() / N)
    assert abs(eq3.mean() - terms["total"].mean()) < 5 * se
    # the check is sharp: it would see a missing L_T or a 2% error in the total
    assert 5 * se < min(terms["L_T"][0], 0.02 * abs(eq3.mean()))


def test_bound_terms_structure_and_chunk_independence():
    sched = make_schedule("linear", 40)
    rng = np.random.default_rng(5)
    x0 = grid_data(rng, (6, 1, 2, 2))
    model_fn = lambda xt, t: 0.05 * xt + 1e-3 * t[:, None, None, None]
    r1 = bound_terms(sched, model_fn, x0, np.random.default_rng(9), t_chunk=1)
    r7 = bound_terms(sched, model_fn, x0, np.random.default_rng(9), t_chunk=7)
    for key in ("L_T", "L", "L_0", "L_sum", "total", "l_simple"):
        np.testing.assert_array_equal(r1[key], r7[key])
    assert r1["L"].shape == r1["l_simple"].shape == (6, 41)
    assert np.all(np.isnan(r1["L"][:, 0])) and np.all(np.isfinite(r1["L"][:, 1:]))
    np.testing.assert_array_equal(r1["L_0"], r1["L"][:, 1])
    np.testing.assert_allclose(r1["total"], r1["L_T"] + r1["L"][:, 1:].sum(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(r1["L_T"], prior_kl(sched, x0))
    # column t reproduces vlb_term with the same eps: replay the noise stream of t_chunk=1
    replay = np.random.default_rng(9)
    for t in range(1, 41):
        eps = replay.standard_normal(x0.shape)
        tt = np.full(6, t)
        xt = q_sample(sched, x0, tt, eps)
        np.testing.assert_allclose(
            r1["L"][:, t], vlb_term(sched, x0, xt, tt, model_fn(xt, tt)), rtol=1e-12
        )
        np.testing.assert_allclose(
            r1["l_simple"][:, t], ((eps - model_fn(xt, tt)) ** 2).mean(axis=(1, 2, 3)),
            rtol=1e-12)


def test_eq5_bound_terms_variants_equal_separate_runs():
    # several (variance, clip_x0) variants from one model call per (t, example) reproduce the
    # separate runs bit for bit (same noise stream, same arithmetic), with the model called once
    sched = make_schedule("linear", 20)
    x0 = grid_data(np.random.default_rng(4), (3, 1, 2, 2))
    calls = []

    def model_fn(xt, t):
        calls.append(t.shape[0])
        return 0.2 * xt + 1e-3 * t[:, None, None, None]

    variants = {"a": ("fixedlarge", False), "b": ("fixedsmall", True)}
    both = bound_terms(sched, model_fn, x0, np.random.default_rng(2), t_chunk=6,
                       variants=variants)
    assert sum(calls) == 20 * 3
    for name, (variance, clip) in variants.items():
        one = bound_terms(sched, model_fn, x0, np.random.default_rng(2), t_chunk=6,
                          variance=variance, clip_x0=clip)
        for key in ("L", "L_0", "L_sum", "total"):
            np.testing.assert_array_equal(both[key][name], one[key])
        for key in ("L_T", "l_simple", "x0_mse"):
            np.testing.assert_array_equal(both[key], one[key])


def test_bound_estimate_is_unbiased_and_draws_every_t():
    # Algorithm 1, line 3: t ~ Uniform({1..T}); record the t given to the model.
    sched = make_schedule("linear", 10, beta_start=0.01, beta_end=0.3)
    seen = []

    def model_fn(xt, t):
        seen.append(t.copy())
        return 0.3 * xt

    rng = np.random.default_rng(6)
    N = 100_000
    x0 = np.full((N, 2), GRID[40])
    est = bound_estimate(sched, model_fn, x0, rng, decoder="gaussian")
    assert set(np.concatenate(seen).tolist()) == set(range(1, 11))
    exact = bound_terms(sched, model_fn, x0[:20_000], rng, decoder="gaussian")["total"]
    se = np.sqrt(est.var() / N + exact.var() / exact.size)  # 5 combined standard errors
    assert abs(est.mean() - exact.mean()) < 5 * se


def test_eq5_bound_estimate_is_prior_kl_plus_T_times_the_drawn_term():
    # replay the rng: t ~ U{1..T} (Algorithm 1, line 3), then eps; the estimate is exactly
    # L_T + T L_{t-1}(x0, x_t) (a missing L_T is ~1e-5 nats: only an exact identity sees it)
    sched = make_schedule("linear", 30, beta_end=0.2)
    x0 = grid_data(np.random.default_rng(3), (7, 1, 2, 2))
    model_fn = lambda xt, t: 0.3 * xt - 1e-3 * t[:, None, None, None]
    for mean_type in ("eps", "x0"):
        est = bound_estimate(sched, model_fn, x0, np.random.default_rng(8), mean_type=mean_type)
        replay = np.random.default_rng(8)
        t = replay.integers(1, 31, size=7)
        xt = q_sample(sched, x0, t, replay.standard_normal(x0.shape))
        want = prior_kl(sched, x0) + 30 * vlb_term(sched, x0, xt, t, model_fn(xt, t),
                                                    mean_type=mean_type)
        np.testing.assert_allclose(est, want, rtol=1e-13)
        assert np.all(prior_kl(sched, x0) > 0)


@pytest.mark.parametrize("mean_type", ["x0", "mu", "v"])
def test_eq14_bound_terms_l_simple_column_for_other_mean_types(mean_type):
    # the l_simple column is the eps-MSE of the noise the output implies: Eq. (4) solved for eps
    # at x0_hat (unclipped), replayed with the noise stream of t_chunk = 1
    sched = make_schedule("linear", 12)
    x0 = grid_data(np.random.default_rng(6), (4, 1, 2, 2))
    model_fn = lambda xt, t: 0.4 * xt + 0.01 * t[:, None, None, None]
    r = bound_terms(sched, model_fn, x0, np.random.default_rng(2), t_chunk=1, mean_type=mean_type)
    replay = np.random.default_rng(2)
    for t in range(1, 13):
        eps = replay.standard_normal(x0.shape)
        tt = np.full(4, t)
        xt = q_sample(sched, x0, tt, eps)
        eps_hat = eps_from_x0(sched, xt, tt, predict_x0(sched, xt, tt, model_fn(xt, tt),
                                                          mean_type))
        np.testing.assert_allclose(r["l_simple"][:, t], ((eps - eps_hat) ** 2).mean(axis=(1, 2, 3)),
                                   rtol=1e-9)


def test_bad_bound_inputs():
    sched = make_schedule("linear", 5)
    f = lambda xt, t: xt
    with pytest.raises(ValueError, match=r"^x: expected data on the 256-level grid"):
        bound_terms(sched, f, np.full((2, 1), 0.5), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^rng: expected a np.random.Generator"):
        bound_terms(sched, f, np.zeros((2, 1)), 0, decoder="gaussian")
    with pytest.raises(ValueError, match=r"^t_chunk: expected an integer >= 1"):
        bound_terms(
            sched, f, np.zeros((2, 1)), np.random.default_rng(0), t_chunk=0, decoder="gaussian"
        )
    with pytest.raises(ValueError, match=r"^model_output: expected shape"):
        bound_terms(
            sched,
            lambda xt, t: xt[:, :0],
            np.zeros((2, 1)),
            np.random.default_rng(0),
            decoder="gaussian",
        )


def test_bound_terms_progress_bar_changes_nothing(capsys):
    sched = make_schedule("linear", 12)
    x0 = np.zeros((3, 2))
    f = lambda xt, t: 0.1 * xt
    quiet = bound_terms(sched, f, x0, np.random.default_rng(1), decoder="gaussian", t_chunk=5)
    loud = bound_terms(sched, f, x0, np.random.default_rng(1), decoder="gaussian", t_chunk=5,
                       progress=True)
    np.testing.assert_array_equal(quiet["total"], loud["total"])
    assert "bound_terms" in capsys.readouterr().err


def test_bound_estimate_rejects_bad_rng_and_decoder():
    sched = make_schedule("linear", 10)
    x0 = np.zeros((2, 3))
    zero = lambda xt, t: np.zeros_like(xt)
    with pytest.raises(ValueError, match="rng"):
        bound_estimate(sched, zero, x0, rng=0, decoder="gaussian")
    with pytest.raises(ValueError, match="decoder"):
        bound_estimate(sched, zero, x0, np.random.default_rng(0), decoder="laplace")
