"""Tests for ddpm_ref.evaluate: the bound report (Eq. 5) and the MMD two-sample distance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ddpm_ref.analytic import oracle_model_fn
from ddpm_ref.bound import bound_terms
from ddpm_ref.data import toy2d
from ddpm_ref.demo import scaled_schedule
from ddpm_ref.evaluate import bound_report, mmd, mmd_floor

BW = (0.1, 0.5)


def _naive_mmd(x, y, bandwidths):
    """MMD_b^2 by its definition, one pair at a time (Gretton et al. 2012, Eq. 5)."""

    def k(a, b):
        d2 = float(np.sum((a - b) ** 2))
        return np.mean([math.exp(-d2 / (2 * h * h)) for h in bandwidths])

    kxx = np.mean([k(a, b) for a in x for b in x])
    kyy = np.mean([k(a, b) for a in y for b in y])
    kxy = np.mean([k(a, b) for a in x for b in y])
    return kxx + kyy - 2 * kxy


def test_mmd_matches_its_definition():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((13, 2)), rng.standard_normal((9, 2)) + 0.3
    assert mmd(x, y, BW) == pytest.approx(_naive_mmd(x, y, BW), rel=1e-12)
    assert mmd(x, y, BW) == pytest.approx(mmd(y, x, BW), rel=1e-12)  # symmetric


def test_mmd_is_zero_for_the_same_points_and_flattens_images():
    x = np.random.default_rng(1).standard_normal((20, 1, 3, 3))
    assert mmd(x, x.copy()) < 1e-12
    assert mmd(x, x[::-1]) < 1e-12  # a multiset: order does not matter


def test_mmd_small_for_same_distribution_large_for_shifted():
    rng = np.random.default_rng(2)
    x, y = toy2d.sample("gmm", 500, rng), toy2d.sample("gmm", 500, rng)
    shifted = toy2d.sample("gmm", 500, rng) + np.array([0.5, 0.0])
    floor = mmd_floor(lambda n, r: toy2d.sample("gmm", n, r), 500, 500, rng)
    # the statistic between two data sets scatters around the floor (its own mean, ~c/n); its
    # relative spread is well below 2x, while a shift of half a std adds a population term that
    # does not shrink with n
    assert mmd(x, y) < 2.0 * floor
    assert mmd(x, shifted) > 10.0 * floor


def test_mmd_refuses_bad_input():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="y: expected points of dimension 2"):
        mmd(x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="bandwidths: expected positive numbers"):
        mmd(x, x, bandwidths=(0.1, 0.0))
    with pytest.raises(ValueError, match="x: expected finite values"):
        mmd(np.full((5, 2), np.nan), x)


def _oracle_report(n=200, T=100, seed=0):
    sched, _ = scaled_schedule("linear", T)
    x0 = toy2d.sample("gmm", n, np.random.default_rng(seed))
    rep = bound_report(
        sched,
        oracle_model_fn(sched, toy2d.GMM),
        x0,
        np.random.default_rng(seed + 1),
        decoder="gaussian",
    )
    return rep, x0


def test_eq5_report_sums_its_terms():
    rep, _ = _oracle_report()
    T = 100
    assert rep["per_t_L"].shape == rep["per_t_eps_mse"].shape == (T + 1,)
    assert np.isnan(rep["per_t_L"][0]) and np.isnan(rep["per_t_eps_mse"][0])
    assert rep["per_t_L"][1] == pytest.approx(rep["L_0"], rel=1e-12)
    assert rep["per_t_L"][2:].sum() == pytest.approx(rep["L_sum"], rel=1e-12)
    assert rep["total"] == pytest.approx(rep["L_T"] + rep["L_sum"] + rep["L_0"], rel=1e-12)
    assert rep["l_simple"] == pytest.approx(rep["per_t_eps_mse"][1:].mean(), rel=1e-12)
    assert "bits_per_dim" not in rep  # points: nats per point only


def test_report_is_the_mean_of_bound_terms_over_points():
    rep, x0 = _oracle_report(n=50, T=30, seed=3)
    sched, _ = scaled_schedule("linear", 30)
    terms = bound_terms(sched, oracle_model_fn(sched, toy2d.GMM), x0, np.random.default_rng(4),
                        decoder="gaussian")  # the same x_t draws as the report (same seed)
    for k in ("L_T", "L_sum", "L_0", "total"):
        assert rep[k] == pytest.approx(float(np.mean(terms[k])), rel=1e-12)
    np.testing.assert_allclose(rep["per_t_L"][1:], terms["L"][:, 1:].mean(axis=0), rtol=1e-12)


def test_bits_per_dim_for_images():
    sched, _ = scaled_schedule("linear", 10)
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 256, size=(3, 1, 2, 2)) / 127.5 - 1.0  # on the 256-level grid
    rep = bound_report(sched, lambda xt, t: np.zeros_like(xt), x0, rng, decoder="discretized")
    assert rep["bits_per_dim"] == pytest.approx(rep["total"] / (4 * math.log(2.0)), rel=1e-12)
