"""Tests for ddpm_ref.data.toy2d: seeded 2D datasets and the fixed Gaussian mixture."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ddpm_ref.data import toy2d

N = 40_000


@pytest.mark.parametrize("name", toy2d.NAMES)
def test_shape_dtype_and_seeded(name):
    x = toy2d.sample(name, 17, np.random.default_rng(3))
    assert x.shape == (17, 2) and x.dtype == np.float64 and np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, toy2d.sample(name, 17, np.random.default_rng(3)))
    assert not np.array_equal(x, toy2d.sample(name, 17, np.random.default_rng(4)))


@pytest.mark.parametrize("name", [n for n in toy2d.NAMES if n != "gmm"])
def test_standardised_exactly(name):
    # The standardisation uses exact moments, so E[x] = 0 and Var[x] = 1 per coordinate.
    # SE of the mean is 1/sqrt(N) = 0.005; SE of the sample variance is std(x^2)/sqrt(N), estimated
    # from the data (bounded-ish distributions: ~0.007). 5 SE: false with prob ~1e-6 per check.
    x = toy2d.sample(name, N, np.random.default_rng(0))
    se_mean = x.std(axis=0) / np.sqrt(N)
    assert np.all(np.abs(x.mean(axis=0)) < 5 * se_mean)
    xc = x - x.mean(axis=0)
    se_var = (xc**2).std(axis=0) / np.sqrt(N)
    assert np.all(np.abs(x.var(axis=0) - 1.0) < 5 * se_var)


def test_gmm_samples_match_its_parameters():
    x, labels = toy2d.GMM.sample(N, np.random.default_rng(1), return_labels=True)
    # component frequencies: binomial SE sqrt(p (1 - p) / N) <= 0.0025; 5 SE
    freq = np.bincount(labels, minlength=toy2d.GMM.K) / N
    se = np.sqrt(toy2d.GMM.weights * (1 - toy2d.GMM.weights) / N)
    assert np.all(np.abs(freq - toy2d.GMM.weights) < 5 * se)
    for k in range(toy2d.GMM.K):
        xk = x[labels == k]
        nk = len(xk)
        # per-coordinate mean: SE sqrt(S_kk / n_k); covariance entries: SE of a Gaussian sample
        # covariance, sqrt((S_ii S_jj + S_ij^2) / n_k); 5 SE
        S = toy2d.GMM.covs[k]
        assert np.all(np.abs(xk.mean(axis=0) - toy2d.GMM.means[k]) < 5 * np.sqrt(np.diag(S) / nk))
        se_cov = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / nk)
        assert np.all(np.abs(np.cov(xk.T) - S) < 5 * se_cov)


def test_gmm_roughly_standardised():
    # the mixture's exact overall moments, not sample ones: "roughly" zero mean, unit variance
    assert np.all(np.abs(toy2d.GMM.mean) < 0.2)
    assert np.all(np.abs(np.sqrt(np.diag(toy2d.GMM.cov)) - 1.0) < 0.15)


def test_gmm_log_density_matches_scipy():
    x = np.random.default_rng(2).normal(size=(50, 2)) * 1.5
    g = toy2d.GMM
    parts = zip(g.weights, g.means, g.covs, strict=True)
    ref = np.log(sum(w * multivariate_normal(m, c).pdf(x) for w, m, c in parts))
    np.testing.assert_allclose(toy2d.log_density("gmm", x), ref, rtol=1e-12)


def test_gmm_density_integrates_to_one():
    # midpoint rule on [-6, 6]^2 with h = 0.01: Gaussian tails beyond the box are < 1e-20 and the
    # rule's error for smooth integrands is O(h^2 * curvature) ~ 1e-5 here.
    h = 0.01
    g = np.arange(-6 + h / 2, 6, h)
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    total = np.exp(toy2d.log_density("gmm", pts)).sum() * h * h
    assert abs(total - 1.0) < 1e-4


def test_log_density_only_for_gmm():
    with pytest.raises(ValueError, match="name: only 'gmm'"):
        toy2d.log_density("moons", np.zeros((3, 2)))


@pytest.mark.parametrize(
    "args, match",
    [
        (("spiral", 10), "name"),
        (("moons", 0), "n:"),
        (("moons", -3), "n:"),
        (("moons", 2.5), "n:"),
        (("moons", True), "n:"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        toy2d.sample(*args, np.random.default_rng(0))


def test_bad_rng():
    with pytest.raises(ValueError, match="rng:"):
        toy2d.sample("moons", 10, 0)
    with pytest.raises(ValueError, match="rng:"):
        toy2d.sample("gmm", 10, np.random.RandomState(0))


def test_bad_points_for_log_density():
    with pytest.raises(ValueError, match="x:"):
        toy2d.log_density("gmm", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="x:"):
        toy2d.log_density("gmm", np.array([[0.0, np.nan]]))
