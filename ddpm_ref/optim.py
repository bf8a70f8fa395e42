r"""Optimisation for the ε-network: Adam, global-norm clipping, learning-rate warm-up, EMA.

Paper: Ho, Jain, Abbeel (2020), Appendix B: "We used the Adam optimizer ... learning rate 2e-4
(2e-5 for 256x256 images) ... a warmup of 5000 steps ... gradient clipping at norm 1 ... EMA on
model parameters with a decay factor of 0.9999."

Every function is pure: it returns new arrays and never mutates its inputs, and all optimiser
state lives in a flat dict of plain arrays so that a checkpoint is one ``np.savez`` away:

    state = adam_init(params)          # {"step": int64 0-d, "m.<key>": ..., "v.<key>": ...}
    grads, norm = clip_grad_norm(grads, 1.0)
    params, state = adam_update(params, grads, state, lr=warmup_lr(step, 2e-4, 5000))
    ema = ema_update(ema, params, decay=0.9999)

Arrays keep their dtype (float32 stays float32): scalars are Python floats, which NumPy treats as
"weak" and does not let upcast an array. :func:`adam_step` is the textbook update of one array;
``adam_update(..., fast=True)`` (the default) runs the same update as one fused Numba pass per
array, :func:`ddpm_ref.nn.fast.adam_step`, which tests hold equal to it.
"""

from __future__ import annotations

import math

import numpy as np

from ddpm_ref.nn import fast as _fast

__all__ = ["adam_init", "adam_step", "adam_update", "clip_grad_norm", "warmup_lr", "cosine_lr",
           "LR_DECAYS", "ema_update"]


def _check_like(name: str, d: dict, params: dict) -> None:
    """ValueError unless dict `d` has exactly the keys of `params`, with the same shapes."""
    if d.keys() != params.keys():
        missing = sorted(params.keys() - d.keys())
        extra = sorted(d.keys() - params.keys())
        raise ValueError(f"{name}: keys differ from params (missing {missing}, extra {extra})")
    for k, p in params.items():
        if d[k].shape != p.shape:
            raise ValueError(f"{name}: {k!r} has shape {d[k].shape}, expected {p.shape}")


def adam_init(params: dict) -> dict:
    """Zeroed Adam state for `params` (a flat dict of arrays).

    Returns:
        {"step": np.int64 0-d array (0), "m.<key>": zeros like params[key] (first moment),
        "v.<key>": zeros like params[key] (second moment)} for every key.
    """
    state = {"step": np.array(0, dtype=np.int64)}  # 0-d
    for k, p in params.items():
        state["m." + k] = np.zeros_like(p)
        state["v." + k] = np.zeros_like(p)
    return state


def adam_step(p, g, m, v, lr, beta1, beta2, eps, step):
    r"""One bias-corrected Adam step on one array (Kingma & Ba 2015, Algorithm 1).

        m_s = beta1 m_{s-1} + (1 - beta1) g
        v_s = beta2 v_{s-1} + (1 - beta2) g^2
        p_s = p_{s-1} - lr (m_s / (1 - beta1^s)) / (sqrt(v_s / (1 - beta2^s)) + eps)

    Args:
        p, g, m, v: the parameter, its gradient and the two moments (same shape and dtype).
        step: s, the 1-based index of this update.
    Returns:
        (p_s, m_s, v_s): fresh arrays.
    """
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * (g * g)
    m_hat = m / (1.0 - beta1**step)
    v_hat = v / (1.0 - beta2**step)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adam_update(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, *, fast=True):
    r"""One Adam step (:func:`adam_step`) on every array of `params`; PyTorch's default Adam.

    Args:
        params: flat dict of arrays.
        grads: dict with the same keys and shapes as params.
        state: from :func:`adam_init` or a previous call.
        lr: learning rate (> 0); the paper uses 2e-4 after a warm-up (:func:`warmup_lr`).
        beta1, beta2: moment decay rates in [0, 1). eps: added to the denominator.
        fast: True runs the fused kernel :func:`ddpm_ref.nn.fast.adam_step`, False the NumPy
            :func:`adam_step` (the same update up to rounding).
    Returns:
        (new_params, new_state): fresh dicts of fresh arrays; the inputs are not modified.
    """
    if not (lr >= 0.0 and math.isfinite(lr)):
        raise ValueError(f"lr: expected a finite learning rate >= 0, got {lr}")
    if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
        raise ValueError(f"beta1, beta2: expected values in [0, 1), got {beta1}, {beta2}")
    _check_like("grads", grads, params)
    step = int(state["step"]) + 1
    step_fn = _fast.adam_step if fast else adam_step
    new_params, new_state = {}, {"step": np.array(step, dtype=np.int64)}
    for k, p in params.items():
        new_params[k], new_state["m." + k], new_state["v." + k] = step_fn(
            p, grads[k], state["m." + k], state["v." + k], lr, beta1, beta2, eps, step
        )
    return new_params, new_state


def clip_grad_norm(grads: dict, max_norm: float):
    r"""Rescale all gradients together so that their global L2 norm is at most `max_norm`.

    total_norm = sqrt(sum_k ||g_k||^2) over every array; if total_norm > max_norm each gradient
    is multiplied by max_norm / (total_norm + 1e-6) (as PyTorch's ``clip_grad_norm_``). The paper
    clips at 1.0 (Appendix B).

    Returns:
        (clipped_grads, total_norm): a new dict (the input arrays are not modified; unclipped
        arrays are passed through) and the norm before clipping, a Python float. A non-finite
        norm is returned as is, and the gradients are then scaled by NaN/0, so that it shows.
    """
    if not max_norm > 0.0:
        raise ValueError(f"max_norm: expected a positive number, got {max_norm}")
    sq = 0.0
    for g in grads.values():
        flat = g.ravel()
        sq += float(np.dot(flat, flat))  # BLAS dot, no temporary array
    total_norm = math.sqrt(sq)
    if not total_norm > max_norm:  # also false for NaN, handled below
        if math.isfinite(total_norm):
            return dict(grads), total_norm
    scale = max_norm / (total_norm + 1e-6)
    return {k: g * scale for k, g in grads.items()}, total_norm


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    r"""Linear learning-rate warm-up: lr = base_lr min(1, step / warmup_steps).

    Args:
        step: the 1-based index of the update about to be made (Adam's s; the first update is
            step 1, so it already gets base_lr / warmup_steps rather than 0).
        base_lr: the learning rate after warm-up (the paper: 2e-4).
        warmup_steps: length of the ramp (the paper: 5000); 0 disables the warm-up.
    """
    if int(step) != step or step < 1:
        raise ValueError(f"step: expected an integer >= 1 (1-based update index), got {step}")
    if int(warmup_steps) != warmup_steps or warmup_steps < 0:
        raise ValueError(f"warmup_steps: expected an integer >= 0, got {warmup_steps}")
    if warmup_steps == 0:
        return float(base_lr)
    return float(base_lr) * min(1.0, step / warmup_steps)


LR_DECAYS = ("none", "cosine")


def cosine_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    r"""Linear warm-up, then a half cosine from base_lr down to 0 at the last update:

        lr = base_lr (1 + cos(pi (step - warmup) / (total - warmup))) / 2    for step > warmup

    (Loshchilov & Hutter's SGDR without restarts; improved-diffusion and many short diffusion
    runs anneal so). ``step`` is 1-based as in :func:`warmup_lr`; the last update, step =
    total_steps, gets lr 0, so the final weights are where the annealed steps left them.
    """
    lr = warmup_lr(step, base_lr, warmup_steps)
    if int(total_steps) != total_steps or total_steps < 1:
        raise ValueError(f"total_steps: expected an integer >= 1, got {total_steps}")
    if step <= warmup_steps or total_steps <= warmup_steps:
        return lr
    frac = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return float(base_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


def ema_update(ema: dict, params: dict, decay: float) -> dict:
    r"""Exponential moving average of the parameters: ema <- decay ema + (1 - decay) params.

    The paper uses decay 0.9999 (Appendix B), an average over roughly the last 1 / (1 - decay)
    = 10,000 steps. A short run (a few thousand steps) wants less, e.g. 0.995-0.999, or the
    average still remembers the random initialisation. Start with ``ema = dict(params)``.

    Returns:
        a new dict of fresh arrays (ema and params are not modified).
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay: expected a value in [0, 1], got {decay}")
    _check_like("ema", ema, params)
    out = {}
    for k, p in params.items():
        # ema + (1 - decay) (p - ema): one temporary less than decay ema + (1 - decay) p
        e = p - ema[k]
        e *= 1.0 - decay
        e += ema[k]
        out[k] = e
    return out
