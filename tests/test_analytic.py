"""Tests for ddpm_ref.analytic: the Gaussian-mixture oracle (q(x_t), eps*, density, bound)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ddpm_ref import analytic
from ddpm_ref.analytic import GaussianMixture
from ddpm_ref.data.toy2d import GMM
from ddpm_ref.diffusion import q_sample
from ddpm_ref.sampling import sample
from ddpm_ref.schedule import make_schedule

SCHED = make_schedule("linear", 1000)


def _random_gmm(rng, K=3, D=3):
    A = rng.normal(size=(K, D, D)) * 0.4
    covs = A @ np.swapaxes(A, 1, 2) + 0.05 * np.eye(D)
    w = rng.uniform(0.5, 1.5, size=K)
    return GaussianMixture(w / w.sum(), rng.normal(size=(K, D)) * 1.5, covs)


def _scipy_log_density(g, x):
    parts = zip(g.weights, g.means, g.covs, strict=True)
    return np.log(sum(w * multivariate_normal(m, c).pdf(x) for w, m, c in parts))


@pytest.mark.parametrize("t", [0, 1, 137, 1000])
def test_eq4_q_xt_is_the_mixture_of_diffused_components(t):
    g = _random_gmm(np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(20, 3)) * 2
    # q(x_t) = sum_k pi_k N(sqrt(abar) m_k, abar S_k + (1 - abar) I), checked against scipy
    ab = SCHED.alpha_bar[t]
    ref = GaussianMixture(g.weights, np.sqrt(ab) * g.means, ab * g.covs + (1 - ab) * np.eye(3))
    np.testing.assert_allclose(
        analytic.log_q_xt(SCHED, g, x, t), _scipy_log_density(ref, x), rtol=1e-12
    )
    np.testing.assert_allclose(
        analytic.log_density(analytic.q_xt(SCHED, g, t), x), _scipy_log_density(ref, x), rtol=1e-12
    )


def test_eq4_q_xt_moments_match_forward_samples():
    # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps (Eq. 4) with x0 ~ GMM; compare with q_xt's exact
    # moments. Mean SE sqrt(var / n); covariance entry SE estimated from the products; 5 SE.
    rng = np.random.default_rng(2)
    n, t = 50_000, 250
    x0 = GMM.sample(n, rng)
    xt = q_sample(SCHED, x0, np.full(n, t), rng.standard_normal(x0.shape))
    q = analytic.q_xt(SCHED, GMM, t)
    assert np.all(np.abs(xt.mean(axis=0) - q.mean) < 5 * xt.std(axis=0) / np.sqrt(n))
    xc = xt - xt.mean(axis=0)
    prods = xc[:, :, None] * xc[:, None, :]  # (n, 2, 2)
    se = prods.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(prods.mean(axis=0) - q.cov) < 5 * se)


def test_eps_star_is_minus_scaled_score_finite_differences():
    # eps* = -sqrt(1 - abar_t) grad log q(x_t); centred differences, h = 1e-5: truncation
    # O(h^2) ~ 1e-10, rounding ~ 1e-16 / h ~ 1e-11, far below the 1e-7 tolerance.
    for g in (GMM, _random_gmm(np.random.default_rng(3))):
        rng = np.random.default_rng(4)
        B = 12
        t = rng.integers(1, SCHED.T + 1, size=B)
        xt = rng.normal(size=(B, g.D)) * 1.5
        h = 1e-5
        grad = np.zeros_like(xt)
        for d in range(g.D):
            e = np.zeros(g.D)
            e[d] = h
            up, dn = analytic.log_q_xt(SCHED, g, xt + e, t), analytic.log_q_xt(SCHED, g, xt - e, t)
            grad[:, d] = (up - dn) / (2 * h)
        expected = -np.sqrt(1 - SCHED.alpha_bar[t])[:, None] * grad
        np.testing.assert_allclose(
            analytic.eps_star(SCHED, g, xt, t), expected, rtol=1e-7, atol=1e-9
        )


@pytest.mark.parametrize("t", [100, 400, 800])
def test_eps_star_is_posterior_mean_of_the_noise(t):
    # E[eps | x_t] by self-normalised importance sampling over x0_i ~ GMM: weights
    # w_i ∝ q(x_t | x0_i) (Eq. 4), eps_i = (x_t - sqrt(abar) x0_i) / sqrt(1 - abar). Delta-method
    # SE^2 = sum_i w_i^2 (eps_i - est)^2 (normalised w); tolerance 5 SE per coordinate.
    rng = np.random.default_rng(5 + t)
    N = 200_000
    x0 = GMM.sample(N, rng)
    ab = SCHED.alpha_bar[t]
    xt = analytic.q_xt(SCHED, GMM, t).sample(4, rng)  # typical points of q(x_t)
    got = analytic.eps_star(SCHED, GMM, xt, np.full(4, t))
    for b in range(4):
        eps_i = (xt[b] - np.sqrt(ab) * x0) / np.sqrt(1 - ab)  # (N, 2)
        logw = -0.5 * np.sum(eps_i**2, axis=1)
        w = np.exp(logw - logw.max())
        w /= w.sum()
        assert 1.0 / np.sum(w**2) > 500  # effective sample size: the SE estimate is reliable
        est = w @ eps_i
        se = np.sqrt(w**2 @ (eps_i - est) ** 2)
        assert np.all(np.abs(got[b] - est) < 5 * se), (got[b], est, se)


def test_eps_star_vectorised_over_t():
    rng = np.random.default_rng(6)
    xt = rng.normal(size=(9, 2))
    t = rng.integers(1, SCHED.T + 1, size=9)
    batched = analytic.eps_star(SCHED, GMM, xt, t)
    for b in range(9):
        np.testing.assert_allclose(
            batched[b], analytic.eps_star(SCHED, GMM, xt[b : b + 1], t[b])[0], rtol=1e-12
        )


def test_oracle_model_fn_maps_original_timesteps():
    rng = np.random.default_rng(7)
    xt = rng.normal(size=(5, 2))
    t = np.array([1, 20, 500, 999, 1000])
    np.testing.assert_array_equal(
        analytic.oracle_model_fn(SCHED, GMM)(xt, t), analytic.eps_star(SCHED, GMM, xt, t)
    )
    resp = SCHED.respace(50)
    k = np.array([1, 10, 25, 49, 50])  # steps of the respaced schedule
    t_orig = resp.timesteps[k]
    got = analytic.oracle_model_fn(resp, GMM)(xt, t_orig)
    # the respaced schedule keeps alpha_bar at the kept steps (up to rounding of the cumprod)
    np.testing.assert_allclose(got, analytic.eps_star(SCHED, GMM, xt, t_orig), rtol=1e-12)
    np.testing.assert_allclose(got, analytic.eps_star(resp, GMM, xt, k), rtol=1e-12)
    with pytest.raises(ValueError, match="t:"):
        analytic.oracle_model_fn(resp, GMM)(xt, t_orig + 1)  # not kept steps


def test_algorithm2_with_eps_star_reproduces_the_mixture():
    # Algorithm 2 with the exact eps* and sigma^2 = beta: T = 200 steps rising to beta_T = 0.1
    # (alpha_bar_T ~ 5e-5) keeps the test fast; its discretisation bias (measured with 50k samples:
    # < 0.003 in weights, < 0.006 in means/covariances) is well below the tolerances below.
    sched = make_schedule("linear", 200, beta_end=0.1)
    n = 3000
    x = sample(sched, analytic.oracle_model_fn(sched, GMM), (n, 2), np.random.default_rng(8))
    ref = GMM.sample(200_000, np.random.default_rng(9))  # exact draws, same assignment rule
    # overall mean and covariance against the mixture's exact moments, 5 SE
    assert np.all(np.abs(x.mean(axis=0) - GMM.mean) < 5 * x.std(axis=0) / np.sqrt(n))
    xc = x - GMM.mean
    prods = xc[:, :, None] * xc[:, None, :]
    assert np.all(np.abs(prods.mean(axis=0) - GMM.cov) < 5 * prods.std(axis=0) / np.sqrt(n))
    # per component (assigned by max responsibility): weights, means, covariances against the same
    # statistics of the exact reference sample; SE of a difference combines both samples; 5 SE
    lab_x = analytic.responsibilities(GMM, x).argmax(axis=1)
    lab_r = analytic.responsibilities(GMM, ref).argmax(axis=1)
    for k in range(GMM.K):
        p, p_ref = np.mean(lab_x == k), np.mean(lab_r == k)
        se = np.sqrt(p_ref * (1 - p_ref) * (1 / n + 1 / len(ref)))
        assert abs(p - p_ref) < 5 * se, (k, p, p_ref)
        xs, rs = x[lab_x == k], ref[lab_r == k]
        for stat in (lambda a: a, lambda a: (a - a.mean(0))[:, :, None] * (a - a.mean(0))[:, None]):
            sx, sr = stat(xs), stat(rs)
            se = np.sqrt(sx.var(axis=0) / len(xs) + sr.var(axis=0) / len(rs))
            assert np.all(np.abs(sx.mean(axis=0) - sr.mean(axis=0)) < 5 * se), k


def test_oracle_bound_exceeds_exact_nll_on_average():
    # E_q[bound] >= E_q[-log p_theta(x0)] >= E_q[-log q(x0)] (entropy <= cross-entropy). The bound
    # is a one-sample MC estimate per point, so test the mean difference against its SE (3 SE,
    # one-sided).
    sched = make_schedule("linear", 200, beta_end=0.1)
    x0 = GMM.sample(1000, np.random.default_rng(10))
    res = analytic.oracle_bound(sched, GMM, x0, np.random.default_rng(11))
    np.testing.assert_allclose(res["nll"], -analytic.log_density(GMM, x0), rtol=1e-12)
    d = res["total"] - res["nll"]
    assert d.mean() > -3 * d.std() / np.sqrt(len(d))


def test_eps_star_minimises_the_bound_terms():
    # eps* = E[eps | x_t] minimises each E[L_{t-1}] (Eq. 12) over all functions. With common random
    # numbers (same rng seed -> same x_t draws), the oracle's summed L terms are below those of a
    # model off by 10%, per point on average; paired SE, 5 SE.
    sched = make_schedule("linear", 200, beta_end=0.1)
    x0 = GMM.sample(300, np.random.default_rng(12))
    from ddpm_ref.elbo import bound_terms

    oracle = analytic.oracle_model_fn(sched, GMM)
    worse = lambda xt, t: 1.1 * oracle(xt, t)
    a = bound_terms(sched, oracle, x0, np.random.default_rng(13), decoder="gaussian")["L_sum"]
    b = bound_terms(sched, worse, x0, np.random.default_rng(13), decoder="gaussian")["L_sum"]
    d = b - a
    assert d.mean() > 5 * d.std() / np.sqrt(len(d))


def test_gmm_sample_and_density_in_3d():
    g = _random_gmm(np.random.default_rng(14))
    x = g.sample(10, np.random.default_rng(15))
    np.testing.assert_allclose(analytic.log_density(g, x), _scipy_log_density(g, x), rtol=1e-12)
    r = analytic.responsibilities(g, x)
    np.testing.assert_allclose(r.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(weights=[0.5, 0.6], means=np.zeros((2, 2)), covs=np.stack([np.eye(2)] * 2)),
            "weights",
        ),
        (
            dict(weights=[1.2, -0.2], means=np.zeros((2, 2)), covs=np.stack([np.eye(2)] * 2)),
            "weights",
        ),
        (dict(weights=[1.0], means=np.zeros((2, 2)), covs=np.eye(2)[None]), "means"),
        (dict(weights=[1.0], means=np.zeros((1, 2)), covs=np.eye(3)[None]), "covs"),
        (
            dict(weights=[1.0], means=np.zeros((1, 2)), covs=np.array([[[1.0, 2.0], [2.0, 1.0]]])),
            "covs: expected positive definite",
        ),
        (
            dict(weights=[1.0], means=np.zeros((1, 2)), covs=np.array([[[1.0, 0.5], [0.0, 1.0]]])),
            "covs: expected symmetric",
        ),
    ],
)
def test_gaussian_mixture_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_bad_arguments():
    xt = np.zeros((3, 2))
    with pytest.raises(ValueError, match="t: expected integers in 1..1000"):
        analytic.eps_star(SCHED, GMM, xt, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="t: expected integers in 0..1000"):
        analytic.log_q_xt(SCHED, GMM, xt, 1001)
    with pytest.raises(ValueError, match="t: expected integers"):
        analytic.eps_star(SCHED, GMM, xt, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="t: expected shape"):
        analytic.eps_star(SCHED, GMM, xt, np.array([1, 2]))
    with pytest.raises(ValueError, match="xt: expected shape"):
        analytic.eps_star(SCHED, GMM, np.zeros((3, 3)), 5)
    with pytest.raises(ValueError, match="gmm:"):
        analytic.eps_star(SCHED, "gmm", xt, 5)
    with pytest.raises(ValueError, match="sched:"):
        analytic.oracle_model_fn(None, GMM)
    with pytest.raises(ValueError, match="variance:"):
        analytic.oracle_bound(SCHED, GMM, xt, np.random.default_rng(0), variance="learned_range")
    with pytest.raises(ValueError, match="n:"):
        GMM.sample(0, np.random.default_rng(0))
