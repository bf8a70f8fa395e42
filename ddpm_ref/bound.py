r"""The whole variational bound of a model: the exact sum over t, and a one-t unbiased estimate.

Paper: Ho, Jain, Abbeel (2020), Eq. (5), L = L_T + sum_{t=2}^T L_{t-1} + L_0, evaluated as in
their Table 2 / §4.2 "NLL" column: every term with one draw x_t ~ q(x_t | x_0) per t and example.

``model_fn(xt, t) -> model_output`` follows docs/architecture.md; it receives
``sched.timesteps[t]`` (the original schedule's step). Both functions are re-exported from
``ddpm_ref.elbo``.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref._checks import check_choice, check_rng, check_x
from ddpm_ref.diffusion import _predict_x0, _split_output, eps_from_x0, q_sample
from ddpm_ref.elbo import DECODERS, _check_on_grid, prior_kl, vlb_term


def _default_chunk(sched, x0):
    # about 2**16 input elements per model call (at least one timestep)
    return int(max(1, min(sched.T, 2**16 // max(1, x0.size))))


def bound_terms(sched, model_fn, x0, rng, variance="fixedlarge", clip_x0=False,
                decoder="discretized", mean_type="eps", t_chunk=None, progress=False,
                cdf="exact"):
    r"""Every term of the bound Eq. (5) for each example: the exact sum over t = 1..T.

    One x_t ~ q(x_t | x_0) (Eq. 4) is drawn per t and example; ``t_chunk`` timesteps x B
    examples are stacked into one model call. The noise stream does not depend on t_chunk.

    Args:
        x0: (B, ...) data (on the 256-level grid for decoder="discretized").
        rng: np.random.Generator for the eps draws.
        t_chunk: timesteps per model call (default: about 65k input elements per call).
        progress: show a tqdm bar over the model calls.
    Returns:
        dict of float64 arrays, nats per example:
        "L_T" (B,): prior_kl; "L" (B, T+1): L[:, t] = vlb_term at t (L[:, 1] = L_0, L[:, 0] NaN);
        "L_0" (B,); "L_sum" (B,) = sum_{t>=2} L_{t-1}; "total" (B,) = L_T + L_sum + L_0;
        "l_simple" (B, T+1): ||eps - eps_hat||^2 averaged over dimensions (eps_hat the noise the
        output implies, Eq. 4 inverted at x0_hat for mean types "x0"/"mu", unclipped), col 0 NaN.
    """
    x0 = check_x("x0", x0)
    if decoder == "discretized":
        _check_on_grid(x0)
    elif decoder not in DECODERS:
        raise ValueError(f"decoder: expected one of {DECODERS}, got {decoder!r}")
    check_rng(rng)
    T, B = sched.T, x0.shape[0]
    chunk = _default_chunk(sched, x0) if t_chunk is None else int(t_chunk)
    if chunk < 1:
        raise ValueError(f"t_chunk: expected an integer >= 1, got {t_chunk}")
    L = np.full((B, T + 1), np.nan)
    mse = np.full((B, T + 1), np.nan)
    starts = range(1, T + 1, chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="bound_terms", unit="call")
    for start in starts:
        ts = np.arange(start, min(start + chunk, T + 1))  # (k,)
        k = ts.shape[0]
        t = np.repeat(ts, B)  # (k*B,) timestep-major
        x0_k = np.broadcast_to(x0, (k,) + x0.shape).reshape((k * B,) + x0.shape[1:])
        eps = rng.standard_normal((k * B,) + x0.shape[1:])  # (k*B, ...)
        xt = q_sample(sched, x0_k, t, eps)  # Eq. (4)
        out = np.asarray(model_fn(xt, sched.timesteps[t]), dtype=np.float64)
        L[:, ts] = vlb_term(sched, x0_k, xt, t, out, variance, clip_x0, decoder, mean_type,
                            cdf).reshape(k, B).T
        mean_out, _ = _split_output(sched, xt, out, variance)
        eps_hat = mean_out if mean_type == "eps" else eps_from_x0(
            sched, xt, t, _predict_x0(sched, xt, t, mean_out, mean_type))
        mse[:, ts] = ((eps - eps_hat) ** 2).reshape(k, B, -1).mean(axis=2).T
    L_T = prior_kl(sched, x0)
    L_sum = L[:, 2:].sum(axis=1)
    return {"L_T": L_T, "L": L, "L_0": L[:, 1].copy(), "L_sum": L_sum,
            "total": L_T + L_sum + L[:, 1], "l_simple": mse}


def bound_estimate(sched, model_fn, x0, rng, variance="fixedlarge", clip_x0=False,
                   decoder="discretized", mean_type="eps"):
    r"""An unbiased one-sample estimate of the bound Eq. (5), nats per example, shape (B,).

    L_T + T L_{t-1} with t ~ Uniform({1..T}) per example (as Algorithm 1, line 3 draws t) and
    one x_t ~ q(x_t | x_0): E_t[T L_{t-1}] = sum_t L_{t-1}.
    """
    x0 = check_x("x0", x0)
    check_rng(rng)
    check_choice("decoder", decoder, DECODERS)
    B = x0.shape[0]
    t = rng.integers(1, sched.T + 1, size=B)  # (B,)
    eps = rng.standard_normal(x0.shape)
    xt = q_sample(sched, x0, t, eps)
    out = np.asarray(model_fn(xt, sched.timesteps[t]), dtype=np.float64)
    terms = vlb_term(sched, x0, xt, t, out, variance, clip_x0, decoder, mean_type)
    return prior_kl(sched, x0) + sched.T * terms
