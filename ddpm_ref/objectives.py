r"""Training objectives for Algorithm 1: L_simple, the true bound, and L_hybrid.

Paper: Ho, Jain, Abbeel (2020), Eq. (14) (L_simple), Eq. (5) (the bound L = L_T + sum L_{t-1} + L_0)
and Table 2 (the ablation over mean parametrisation and objective); L_hybrid from Nichol & Dhariwal
(2021), §3.1.

Each objective returns (loss, d_output, eps_mse): the scalar minimised, its gradient with respect to
the network output (same shape as the output), and the per-example eps-MSE
mean_i (eps - eps_theta)_i^2 (what the per-quartile training logs show, whatever the objective).

* ``simple`` (Eq. 14): unweighted MSE between the network output and its target: eps for
  mean_type="eps" (the paper's L_simple), x0 for "x0", mu_tilde (Eq. 7) for "mu".
* ``vlb`` (Eq. 5): with t ~ U{1..T}, T L_{t-1} is an unbiased estimate of
  sum_{t=1}^T L_{t-1} (L_0 included, as the t = 1 term), i.e. of the whole bound minus L_T, which
  has no parameters. The loss is T mean_b L_{t_b - 1}(x0_b) in nats per example. With a learned
  variance (Table 2's "learned diagonal Sigma" rows: ``variance="learned"``) the bound trains both
  halves of the output, the mean and v = log sigma_t^2.
* ``hybrid`` (Nichol & Dhariwal): L_hybrid = L_simple + lambda L_vlb with lambda = 0.001, where
  L_simple trains the mean half of the output and L_vlb trains only the variance half (the mean is
  stop-gradient'ed inside L_vlb). Precisely what is implemented, per example:
  mean_i (eps - eps_theta)_i^2 + lambda T L_{t-1} / (D ln 2), i.e. L_vlb is the T-scaled per-t term
  in bits per dimension. This is improved-diffusion's ``mse + vb * num_timesteps / 1000`` with vb
  in bits/dim, so lambda = 0.001 weighs the two terms exactly as their code does.
"""

from __future__ import annotations

import math

import numpy as np

from ddpm_ref.diffusion import LEARNED_VARIANCES, eps_from_x0, predict_x0, q_posterior
from ddpm_ref.elbo import l_simple, vlb_term_and_grad

OBJECTIVES = ("simple", "vlb", "hybrid")

__all__ = ["OBJECTIVES", "objective_loss", "simple_target"]


def _mean_per_example(a: np.ndarray) -> np.ndarray:
    flat = a.reshape(a.shape[0], -1)  # (B, D)
    return flat.sum(axis=1) * (1.0 / flat.shape[1])  # (B,); sum * 1/D is cheaper than mean


def simple_target(sched, x0, xt, t, eps, mean_type):
    """What the network output regresses on under L_simple: eps, x0, or mu_tilde (Eq. 7)."""
    if mean_type == "eps":
        return eps
    if mean_type == "x0":
        return x0
    return q_posterior(sched, x0, xt, t)[0]  # mu_tilde


def _mse(target, pred):
    """Eq. (14)'s mean squared error and its gradient wrt pred (:func:`ddpm_ref.elbo.l_simple`),
    plus the per-example means over dimensions (for the per-t logs)."""
    loss, d_pred = l_simple(target, pred)  # mean over all elements, 2 (pred - target) / size
    diff = pred - target  # (B, ...)
    return loss, d_pred, _mean_per_example(diff * diff)


def _eps_mse(sched, xt, t, eps, mean_out, mean_type, per_example_if_eps):
    if mean_type == "eps":
        return per_example_if_eps
    x0_hat = predict_x0(sched, xt, t, mean_out, mean_type)
    eps_theta = eps_from_x0(sched, xt, t, x0_hat)
    d = eps - eps_theta
    return _mean_per_example(d * d)


def objective_loss(cfg, sched, x0, xt, t, eps, out):
    r"""The loss of ``cfg.objective`` on one batch and its gradient wrt the network output.

    Args:
        cfg: a TrainConfig (objective, mean_type, variance, decoder, hybrid_lambda).
        x0, xt, eps: (B, ...) float64; t: int (B,) in 1..T; out: the network output,
            (B, ...) or (B, 2C, ...) for a learned variance (any float dtype).
    Returns:
        (loss: float, d_out: float64 like out, eps_mse: (B,) per-example eps-MSE).
    """
    out = out.astype(np.float64, copy=False)
    B = out.shape[0]
    if cfg.objective == "simple":
        # Eq. (14): L_simple = E || eps - eps_theta(sqrt(abar) x0 + sqrt(1 - abar) eps, t) ||^2
        target = simple_target(sched, x0, xt, t, eps, cfg.mean_type)
        loss, d_out, per_ex = _mse(target, out)
        return loss, d_out, _eps_mse(sched, xt, t, eps, out, cfg.mean_type, per_ex)

    if cfg.objective == "vlb":
        # Eq. (5): T L_{t-1} with t ~ U{1..T} estimates sum_t L_{t-1} without bias
        nats, d_nats = vlb_term_and_grad(
            sched, x0, xt, t, out, variance=cfg.variance, clip_x0=False,
            decoder=cfg.decoder, mean_type=cfg.mean_type,
        )  # (B,), (B, ...)
        T = sched.T
        loss = T * float(nats.mean())
        d_out = d_nats * (T / B)
        mean_out = out[:, :xt.shape[1]] if cfg.variance in LEARNED_VARIANCES else out
        eps_mse = _eps_mse(sched, xt, t, eps, mean_out, cfg.mean_type,
                           _mean_per_example((eps - mean_out) ** 2))
        return loss, d_out, eps_mse

    # hybrid (Nichol & Dhariwal 2021): the mean half learns from L_simple, the v half from L_vlb
    # (cfg.variance is a learned one: TrainConfig allows learned_range only)
    C = xt.shape[1]
    mean_out = out[:, :C]  # (B, C, ...)
    target = simple_target(sched, x0, xt, t, eps, cfg.mean_type)
    l_simple, d_mean, per_ex = _mse(target, mean_out)
    nats, d_nats = vlb_term_and_grad(
        sched, x0, xt, t, out, variance=cfg.variance, clip_x0=False,
        decoder=cfg.decoder, mean_type=cfg.mean_type, stop_grad_mean=True,
    )  # (B,), (B, 2C, ...) with zeros in the mean half
    D = int(np.prod(xt.shape[1:]))
    w = cfg.hybrid_lambda * sched.T / (D * math.log(2.0))  # nats -> bits/dim, times lambda T
    loss = l_simple + w * float(nats.mean())
    d_out = d_nats * (w / B)
    d_out[:, :C] += d_mean
    return loss, d_out, _eps_mse(sched, xt, t, eps, mean_out, cfg.mean_type, per_ex)
