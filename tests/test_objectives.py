"""Tests for ddpm_ref.objectives: each objective against the bound's terms, Eqs. (5), (14)."""

from __future__ import annotations

import numpy as np
import pytest

from ddpm_ref.diffusion import q_sample
from ddpm_ref.elbo import vlb_term
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


@pytest.mark.parametrize("mean_type", ["eps", "x0", "mu"])
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
