r"""Sampling: Algorithm 2, progressive traces, sampling from a given x_t, DDIM, interpolation.

Paper: Ho, Jain, Abbeel (2020), §3.2 and Algorithm 2 (ancestral sampling), §4.3 (progressive
generation, Figs. 6-7: x0_hat along the chain and samples sharing an x_t), Fig. 8 and Appendix D
(interpolation in x_t). DDIM from Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models",
Eq. (12). Fewer-step sampling needs no code of its own: pass ``sched.respace(K)`` (which keeps
alpha_bar at the kept steps) to :func:`sample` or :func:`ddim_sample`.

``model_fn(xt, t) -> model_output`` follows docs/architecture.md: it is called with the steps of the
*original* schedule, ``sched.timesteps[t]``. All maths in float64.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref._checks import check_choice, check_x, extract
from ddpm_ref.diffusion import (
    LEARNED_VARIANCES,
    MEAN_TYPES,
    VARIANCES,
    eps_from_x0,
    p_mean_var,
    predict_x0,
    q_sample,
)


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")


def _check_model_fn(model_fn) -> None:
    if not callable(model_fn):
        raise ValueError(f"model_fn: expected a callable model_fn(xt, t), got {model_fn!r}")


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    bad = isinstance(value, bool) or not isinstance(value, (int, np.integer))
    if bad or value < lo or (hi is not None and value > hi):
        want = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}: expected an integer {want}, got {value!r}")
    return int(value)


def _check_shape(shape) -> tuple:
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if not shape or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape
    ):
        raise ValueError(f"shape: expected a tuple of integers >= 1 like (B, 2), got {shape!r}")
    return tuple(int(s) for s in shape)


def _check_trace_steps(trace_steps, t_start: int):
    """Sorted (descending) unique steps in 0..t_start to record, or None."""
    if trace_steps is None:
        return None
    steps = np.unique(np.asarray(list(trace_steps)))
    if steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"trace_steps: expected integers in 0..{t_start}, got {steps!r}")
    if steps.min() < 0 or steps.max() > t_start:
        raise ValueError(f"trace_steps: expected integers in 0..{t_start}, got {steps.tolist()}")
    return steps[::-1].astype(np.int64)  # sampling order, T first


def call_model(sched, model_fn, xt, t: int) -> np.ndarray:
    """model_fn at step t of ``sched`` for the whole batch: conditioned on sched.timesteps[t]."""
    t_orig = np.full(xt.shape[0], sched.timesteps[t], dtype=np.int64)  # (B,)
    return np.asarray(model_fn(xt, t_orig), dtype=np.float64)


def _mean_part(out, xt, variance):
    """The mean half of a learned-variance output (first C channels), else the output itself."""
    if variance in LEARNED_VARIANCES and out.ndim >= 2 and out.shape[1] == 2 * xt.shape[1]:
        return out[:, : xt.shape[1]]
    return out


def _progress(iterable, progress: bool, desc: str):
    if not progress:
        return iterable
    from tqdm import tqdm  # imported lazily, only when asked for (plain bar: no widget warning)

    return tqdm(iterable, desc=desc)


class _Trace:
    """Collects (x_t, x0_hat) at the requested steps; step 0 records the final x_0."""

    def __init__(self, steps):
        self.steps, self.xt, self.x0_pred = steps, [], []

    def maybe_add(self, t, xt, x0_pred):
        if self.steps is not None and t in self.steps:
            self.xt.append(np.array(xt))
            self.x0_pred.append(np.array(x0_pred))

    def result(self):
        return {"t": self.steps, "xt": np.stack(self.xt), "x0_pred": np.stack(self.x0_pred)}


def sample_from(
    sched,
    model_fn,
    xt,
    t_start,
    rng,
    mean_type="eps",
    variance="fixedlarge",
    clip_x0=False,
    trace_steps=None,
    progress=False,
    shared_noise=False,
):
    r"""Run the reverse chain of Algorithm 2 from a given x_t at step t_start down to x_0.

    Lines 2-6 of Algorithm 2 with the loop starting at t_start instead of T: what §4.3's Fig. 7
    (samples sharing an x_t) and Fig. 8 (decoding interpolated latents) need.

    Args:
        sched: a Schedule (possibly respaced). model_fn: model_fn(xt, t) (docs/architecture.md).
        xt: (B, ...) float, the state at step t_start. t_start: int in 1..T.
        rng: np.random.Generator for the noise z of line 3.
        mean_type, variance, clip_x0: as in :func:`ddpm_ref.diffusion.p_mean_var`.
        trace_steps: optional iterable of steps in 0..t_start at which to record x_t and x0_hat
            (step 0 records the returned x_0 for both).
        progress: show a tqdm bar.
        shared_noise: draw one z per step and use it for every example (Fig. 8 fixes the noise
            across interpolants).
    Returns:
        x0 (B, ...) float64, or (x0, trace) with trace = {"t": (K,) descending,
        "xt": (K, B, ...), "x0_pred": (K, B, ...)} when trace_steps is given.
    """
    _check_model_fn(model_fn)
    _check_rng(rng)
    xt = check_x("xt", xt).copy()
    t_start = _check_int("t_start", t_start, 1, sched.T)
    check_choice("mean_type", mean_type, MEAN_TYPES)
    check_choice("variance", variance, VARIANCES)
    trace = _Trace(_check_trace_steps(trace_steps, t_start))
    B = xt.shape[0]
    # Algorithm 2, line 2: for t = T, ..., 1 (here from t_start)
    for t in _progress(range(t_start, 0, -1), progress, "sampling"):
        tt = np.full(B, t, dtype=np.int64)  # (B,)
        out = call_model(sched, model_fn, xt, t)  # eps_theta(x_t, t), (B, ...) or (B, 2C, ...)
        if trace.steps is not None and t in trace.steps:
            x0_hat = predict_x0(sched, xt, tt, _mean_part(out, xt, variance), mean_type, clip_x0)
            trace.maybe_add(t, xt, x0_hat)
        mu, _, log_sigma2 = p_mean_var(sched, xt, tt, out, mean_type, variance, clip_x0)
        # Algorithm 2, line 3: z ~ N(0, I) if t > 1, else z = 0 (no noise at the last step)
        if t > 1:
            z_shape = (1,) + xt.shape[1:] if shared_noise else xt.shape
            z = np.broadcast_to(rng.standard_normal(z_shape), xt.shape)
        else:
            z = np.zeros_like(xt)
        # Algorithm 2, line 4: x_{t-1} = mu_theta(x_t, t) + sigma_t z, with mu_theta of Eq. (11)
        xt = mu + np.exp(0.5 * log_sigma2) * z
    # Algorithm 2, line 6: return x_0
    trace.maybe_add(0, xt, xt)
    return xt if trace.steps is None else (xt, trace.result())


def sample(
    sched,
    model_fn,
    shape,
    rng,
    mean_type="eps",
    variance="fixedlarge",
    clip_x0=False,
    trace_steps=None,
    progress=False,
):
    r"""Ancestral sampling, Algorithm 2: x_T ~ N(0, I), then x_{t-1} ~ p_theta(x_{t-1} | x_t).

    ``variance="fixedlarge"`` is sigma_t^2 = beta_t, ``"fixedsmall"`` sigma_t^2 = beta_tilde_t
    (§3.2: both gave similar samples). With a respaced ``sched`` this is the fewer-step sampler.

    Args:
        shape: (B, ...) of the samples, e.g. (B, 2) or (B, 1, 28, 28).
        Others: as in :func:`sample_from`.
    Returns:
        x0 (shape) float64, or (x0, trace) when trace_steps is given.
    """
    _check_model_fn(model_fn)
    _check_rng(rng)
    shape = _check_shape(shape)
    # Algorithm 2, line 1: x_T ~ N(0, I)
    xT = rng.standard_normal(shape)
    return sample_from(
        sched, model_fn, xT, sched.T, rng, mean_type, variance, clip_x0, trace_steps, progress
    )


def ddim_step(sched, xt, t, model_output, eta=0.0, mean_type="eps", clip_x0=False):
    r"""Mean and variance of one DDIM step x_t -> x_{t-1} (Song et al. 2021, Eq. 12).

    x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - sigma_t^2) eps_hat + sigma_t z,
    sigma_t^2 = eta^2 (1 - abar_{t-1}) / (1 - abar_t) (1 - abar_t / abar_{t-1})
              = eta^2 beta_tilde_t.
    eta = 0: deterministic. eta = 1: the mean equals mu_tilde(x0_hat, x_t) of Eq. (7) and the
    variance beta_tilde_t, i.e. Algorithm 2 with sigma_t^2 = beta_tilde_t ("fixedsmall").

    Args:
        xt: (B, ...). t: int (B,) steps of ``sched``. model_output: (B, ...) the mean part.
    Returns:
        (mean (B, ...), sigma2 (B, 1, ..., 1)).
    """
    if not (np.isscalar(eta) and np.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta: expected a finite number >= 0, got {eta!r}")
    xt = check_x("xt", xt)
    x0_hat = predict_x0(sched, xt, t, model_output, mean_type, clip_x0)
    t = np.asarray(t)
    ab_prev = extract(sched.alpha_bar_prev, t, xt.ndim)  # (B, 1, ..., 1)
    omab_prev = extract(sched.one_minus_alpha_bar, t - 1, xt.ndim)  # 1 - alpha_bar_{t-1}
    if mean_type == "eps" and not clip_x0:
        eps_hat = np.asarray(model_output, dtype=np.float64)
    else:  # Eq. (4) solved for eps at x0_hat
        eps_hat = eps_from_x0(sched, xt, t, x0_hat)
    sigma2 = eta**2 * extract(sched.beta_tilde, t, xt.ndim)  # (B, 1, ..., 1)
    # Song et al. Eq. (12): "predicted x0" + "direction pointing to x_t" (+ sigma_t z, by caller)
    mean = np.sqrt(ab_prev) * x0_hat + np.sqrt(np.maximum(omab_prev - sigma2, 0.0)) * eps_hat
    return mean, sigma2


def ddim_sample(
    sched,
    model_fn,
    shape,
    rng,
    eta=0.0,
    mean_type="eps",
    clip_x0=False,
    x_T=None,
    trace_steps=None,
    progress=False,
):
    r"""DDIM sampling (Song et al. 2021): deterministic for eta = 0, Algorithm 2 with
    sigma_t^2 = beta_tilde_t for eta = 1. Use ``sched.respace(K)`` for K-step sampling.

    Args:
        shape: (B, ...). eta: >= 0. x_T: optional (shape) starting noise; drawn from rng if None.
        A learned-variance output (2C channels) is accepted; only its mean half is used.
    Returns:
        x0 (shape) float64, or (x0, trace) as in :func:`sample_from`.
    """
    _check_model_fn(model_fn)
    _check_rng(rng)
    shape = _check_shape(shape)
    # Algorithm 2, line 1: x_T ~ N(0, I) (or the given x_T)
    xt = rng.standard_normal(shape) if x_T is None else check_x("x_T", x_T, shape).copy()
    trace = _Trace(_check_trace_steps(trace_steps, sched.T))
    for t in _progress(range(sched.T, 0, -1), progress, "DDIM"):
        tt = np.full(shape[0], t, dtype=np.int64)  # (B,)
        out = _mean_part(call_model(sched, model_fn, xt, t), xt, "learned_range")
        if trace.steps is not None and t in trace.steps:
            trace.maybe_add(t, xt, predict_x0(sched, xt, tt, out, mean_type, clip_x0))
        mean, sigma2 = ddim_step(sched, xt, tt, out, eta, mean_type, clip_x0)
        if t > 1 and eta > 0:  # no noise at the last step (sigma_1 = 0 anyway)
            xt = mean + np.sqrt(sigma2) * rng.standard_normal(shape)
        else:
            xt = mean
    trace.maybe_add(0, xt, xt)
    return xt if trace.steps is None else (xt, trace.result())


def interpolate(
    sched,
    model_fn,
    x0_a,
    x0_b,
    t,
    n,
    rng,
    mean_type="eps",
    variance="fixedlarge",
    clip_x0=False,
    progress=False,
):
    r"""Interpolate two data points through the latent x_t (paper §4.3, Fig. 8, Appendix D).

    Encode both with the stochastic encoder q(x_t | x_0) (Eq. 4), mix the latents
    xbar_t = (1 - lambda) x_t + lambda x'_t for lambda in linspace(0, 1, n), and decode each with
    the reverse process from step t, using the same noise for every lambda (as in the paper).
    t = 0 is plain interpolation in data space.

    Args:
        x0_a, x0_b: one example each, same per-example shape (e.g. (2,) or (1, 28, 28)).
        t: int in 0..T. n: number of interpolants, >= 1.
    Returns:
        (n, ...) float64, row i decoded from lambda_i.
    """
    _check_model_fn(model_fn)
    _check_rng(rng)
    t = _check_int("t", t, 0, sched.T)
    n = _check_int("n", n, 1)
    x0_a = check_x("x0_a", np.asarray(x0_a)[None])  # (1, ...)
    x0_b = check_x("x0_b", np.asarray(x0_b)[None], x0_a.shape)
    lam = np.linspace(0.0, 1.0, n).reshape((n,) + (1,) * (x0_a.ndim - 1))  # (n, 1, ..., 1)
    if t == 0:
        return (1.0 - lam) * x0_a + lam * x0_b
    tt = np.array([t], dtype=np.int64)
    x_t_a = q_sample(sched, x0_a, tt, rng.standard_normal(x0_a.shape))  # Eq. (4), (1, ...)
    x_t_b = q_sample(sched, x0_b, tt, rng.standard_normal(x0_b.shape))
    xbar = (1.0 - lam) * x_t_a + lam * x_t_b  # (n, ...)
    return sample_from(
        sched,
        model_fn,
        xbar,
        t,
        rng,
        mean_type,
        variance,
        clip_x0,
        progress=progress,
        shared_noise=True,
    )
