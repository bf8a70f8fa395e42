"""Tests for ddpm_ref.objectives: each objective against the bound's terms, Eqs. (5), (14)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ddpm_ref.diffusion import eps_from_x0, predict_x0, q_posterior, q_sample
from ddpm_ref.elbo import l_simple, vlb_term
from ddpm_ref.objectives import objective_loss
from ddpm_ref.schedule import make_schedule
from ddpm_ref.train import TrainConfig

SCHED = make_schedule("linear", 100, beta_start=1e-3, beta_end=0.2)


def _cfg(**kw):
    return TrainConfig(**{**dict(steps=10, batch=6, log_every=5), **kw})


def _batch(B=6, C=2, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((B, C))
    t = rng.integers(1, SCHED.T + 1, size=B)
    t[0] = 1  # the decoder term L_0 is included
    eps = rng.standard_normal((B, C))
    return x0, t, eps, q_sample(SCHED, x0, t, eps), rng


def _num_grad(cfg, x0, xt, t, eps, out, h=1e-6):
    num = np.zeros_like(out)
    for idx in np.ndindex(out.shape):
        up, dn = out.copy(), out.copy()
        up[idx] += h
        dn[idx] -= h
        num[idx] = (objective_loss(cfg, SCHED, x0, xt, t, eps, up)[0]
                    - objective_loss(cfg, SCHED, x0, xt, t, eps, dn)[0]) / (2 * h)
    return num


def _paper_target(x0, xt, t, eps, mean_type):
    """The regression target of each parametrisation, written out independently of the table."""
    ab, omab = SCHED.alpha_bar[t][:, None], SCHED.one_minus_alpha_bar[t][:, None]
    return {"eps": eps, "x0": x0, "mu": q_posterior(SCHED, x0, xt, t)[0],
            "v": np.sqrt(ab) * eps - np.sqrt(omab) * x0}[mean_type]


@pytest.mark.parametrize("mean_type", ["eps", "x0", "mu", "v"])
def test_eq14_simple_objective_regresses_on_the_paper_target(mean_type):
    # L_simple with each mean type is Eq. (14)'s MSE against that type's target (eps for the
    # paper's; x0; mu_tilde of Eq. 7; v), and its eps-MSE log is the implied noise's MSE
    x0, t, eps, xt, rng = _batch()
    out = rng.standard_normal(x0.shape)
    loss, d, eps_mse = objective_loss(_cfg(mean_type=mean_type), SCHED, x0, xt, t, eps, out)
    ref_loss, ref_d = l_simple(_paper_target(x0, xt, t, eps, mean_type), out)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(d, ref_d, rtol=1e-12)
    eps_hat = eps_from_x0(SCHED, xt, t, predict_x0(SCHED, xt, t, out, mean_type))
    np.testing.assert_allclose(eps_mse, ((eps - eps_hat) ** 2).mean(axis=1), rtol=1e-9)


@pytest.mark.parametrize("mean_type", ["eps", "x0", "mu", "v"])
def test_eq5_vlb_objective_logs_the_implied_eps_mse(mean_type):
    x0, t, eps, xt, rng = _batch(seed=1)
    out = rng.standard_normal(x0.shape)
    cfg = _cfg(objective="vlb", mean_type=mean_type)
    _, _, eps_mse = objective_loss(cfg, SCHED, x0, xt, t, eps, out)
    eps_hat = eps_from_x0(SCHED, xt, t, predict_x0(SCHED, xt, t, out, mean_type))
    np.testing.assert_allclose(eps_mse, ((eps - eps_hat) ** 2).mean(axis=1), rtol=1e-9)


@pytest.mark.parametrize("mean_type", ["eps", "x0", "mu", "v"])
def test_eq5_vlb_objective_with_learned_diagonal_sigma(mean_type):
    # Table 2's "L, learned diagonal Sigma": the true bound trains the mean and v = log sigma_t^2
    x0, t, eps, xt, rng = _batch()
    lo, hi = SCHED.log_beta_tilde_clipped[t][:, None], np.log(SCHED.beta[t])[:, None]
    v = lo + rng.uniform(0, 1, size=x0.shape) * (hi - lo)  # (B, C) between the two bounds
    out = np.concatenate([rng.standard_normal(x0.shape), v], axis=1)  # (B, 2C)
    cfg = _cfg(objective="vlb", mean_type=mean_type, variance="learned")
    loss, d, eps_mse = objective_loss(cfg, SCHED, x0, xt, t, eps, out)
    ref = vlb_term(SCHED, x0, xt, t, out, variance="learned", decoder="gaussian",
                   mean_type=mean_type)
    assert loss == pytest.approx(SCHED.T * ref.mean(), rel=1e-12)
    assert eps_mse.shape == (6,)
    num = _num_grad(cfg, x0, xt, t, eps, out)
    # centred differences with h = 1e-6 on a loss of size ~T: rounding ~ 1e-16 T / h ~ 1e-8
    np.testing.assert_allclose(d, num, rtol=1e-5, atol=1e-7 * np.abs(num).max())


def test_train_config_variance_per_objective():
    # learned: the true bound only (L_simple does not see the variance; the hybrid is Nichol &
    # Dhariwal's and keeps their learned_range)
    assert _cfg(objective="vlb", variance="learned").variance == "learned"
    assert _cfg(objective="vlb", variance="learned_range").variance == "learned_range"
    for objective in ("simple", "hybrid"):
        with pytest.raises(ValueError, match="variance: expected one of"):
            _cfg(objective=objective, variance="learned")


def test_objective_simple_is_eq14_l_simple():
    x0, t, eps, xt, rng = _batch()
    out = rng.standard_normal(x0.shape)
    loss, d, eps_mse = objective_loss(_cfg(), SCHED, x0, xt, t, eps, out)
    ref_loss, ref_d = l_simple(eps, out)
    assert loss == ref_loss  # the same function, so the same bits
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_allclose(eps_mse, ((eps - out) ** 2).mean(axis=1), rtol=1e-12)


@pytest.mark.parametrize("mean_type", ["eps", "x0", "mu"])
def test_objective_vlb_is_T_times_mean_term(mean_type):
    x0, t, eps, xt, rng = _batch()
    out = rng.standard_normal(x0.shape)
    cfg = _cfg(objective="vlb", mean_type=mean_type)
    loss, d, _ = objective_loss(cfg, SCHED, x0, xt, t, eps, out)
    ref = vlb_term(SCHED, x0, xt, t, out, variance="fixedlarge", decoder="gaussian",
                   mean_type=mean_type)
    assert loss == pytest.approx(SCHED.T * ref.mean(), rel=1e-12)
    num = _num_grad(cfg, x0, xt, t, eps, out)  # centred differences of the loss itself
    np.testing.assert_allclose(d, num, rtol=1e-5, atol=1e-7 * np.abs(num).max())


def test_objective_hybrid_stops_the_vlb_gradient_at_the_mean():
    x0, t, eps, xt, rng = _batch()
    out = np.concatenate([rng.standard_normal(x0.shape), rng.uniform(-1, 1, x0.shape)], axis=1)
    cfg = _cfg(objective="hybrid", variance="learned_range", hybrid_lambda=0.01)
    loss, d, _ = objective_loss(cfg, SCHED, x0, xt, t, eps, out)
    ls, d_ls = l_simple(eps, out[:, :2])
    nats = vlb_term(SCHED, x0, xt, t, out, variance="learned_range", decoder="gaussian")
    w = 0.01 * SCHED.T / (2 * math.log(2.0))  # lambda T / (D ln 2): bits per dimension
    assert loss == pytest.approx(ls + w * nats.mean(), rel=1e-12)
    np.testing.assert_allclose(d[:, :2], d_ls, rtol=1e-12)  # mean half: L_simple only
    h = 1e-6
    for idx in np.ndindex(x0.shape):  # variance half: the full loss
        up, dn = out.copy(), out.copy()
        up[idx[0], 2 + idx[1]] += h
        dn[idx[0], 2 + idx[1]] -= h
        num = (objective_loss(cfg, SCHED, x0, xt, t, eps, up)[0]
               - objective_loss(cfg, SCHED, x0, xt, t, eps, dn)[0]) / (2 * h)
        assert d[idx[0], 2 + idx[1]] == pytest.approx(num, rel=1e-5, abs=1e-9)
