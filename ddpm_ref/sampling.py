r"""Sampling: Algorithm 2, progressive traces, sampling from a given x_t, DDIM, interpolation.

Paper: Ho, Jain, Abbeel (2020), §3.2 and Algorithm 2 (ancestral sampling), §4.3 (progressive
generation, Figs. 6-7: x0_hat along the chain and samples sharing an x_t), Fig. 8 and Appendix D
(interpolation in x_t). DDIM from Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models",
Eq. (12). Fewer-step sampling needs no code of its own: pass ``sched.respace(K)`` (which keeps
alpha_bar at the kept steps) to :func:`sample` or :func:`ddim_sample`.

``model_fn(xt, t) -> model_output`` follows docs/architecture.md: it is called with the steps of the
*original* schedule, ``sched.timesteps[t]``. All maths in float64.

Every sampler is :func:`reverse_loop` (Algorithm 2, lines 2-6) with a step function
``step(xt, t_batch, t, out) -> x_{t-1}``: :func:`ancestral_step` (line 4) or :func:`ddim_step_fn`
(Song et al.'s Eq. 12); a new sampler is a new step function.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref._checks import (
    check_choice,
    check_int,
    check_model_fn,
    check_rng,
    check_shape,
    check_t,
    check_trace_steps,
    check_x,
    extract,
)
from ddpm_ref.diffusion import (
    MEAN_TYPES,
    VARIANCES,
    _eps_hat,
    _p_mean_var,
    _predict_x0,
    _split_output,
    q_sample,
)


def call_model(sched, model_fn, xt, t: int) -> np.ndarray:
    """model_fn at step t of ``sched`` for the whole batch: conditioned on sched.timesteps[t]."""
    t_orig = np.full(xt.shape[0], sched.timesteps[t], dtype=np.int64)  # (B,)
    return np.asarray(model_fn(xt, t_orig), dtype=np.float64)


def _ddim_mean_out(sched, xt, out):
    """The mean part of the output DDIM reads: the first C channels of a 2C output, checked."""
    if out.ndim >= 2 and xt.ndim >= 2 and out.shape[1] == 2 * xt.shape[1]:
        out = out[:, : xt.shape[1]]  # a learned-variance output: DDIM ignores its v half
    return _split_output(sched, xt, out, "fixedlarge")[0]


def _x0_hat(sched, xt, t, mean_out, mean_type, clip_x0):
    x0_hat = _predict_x0(sched, xt, t, mean_out, mean_type)
    return np.clip(x0_hat, -1.0, 1.0) if clip_x0 else x0_hat


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


def reverse_loop(sched, model_fn, xt, t_start, step, x0_pred, trace_steps=None, progress=False,
                 desc="sampling"):
    r"""Algorithm 2, lines 2-6, from x_t at step t_start, with the update of line 4 as ``step``.

    Unchecked core of every sampler (the public samplers validate their arguments).

    Args:
        xt: (B, ...) float64 state at t_start (not modified). step: step(xt, t_batch, t, out)
            -> x_{t-1}, with t_batch int (B,) and out the model output at (xt, t).
        x0_pred: x0_pred(xt, t_batch, out) -> x0_hat, for the trace.
        trace_steps: sorted descending steps to record (from check_trace_steps), or None.
    Returns:
        x0, or (x0, trace) as in :func:`sample_from`.
    """
    trace = _Trace(trace_steps)
    B = xt.shape[0]
    # Algorithm 2, line 2: for t = T, ..., 1 (here from t_start)
    for t in _progress(range(t_start, 0, -1), progress, desc):
        tt = np.full(B, t, dtype=np.int64)  # (B,)
        out = call_model(sched, model_fn, xt, t)  # eps_theta(x_t, t), (B, ...) or (B, 2C, ...)
        if trace.steps is not None and t in trace.steps:
            trace.maybe_add(t, xt, x0_pred(xt, tt, out))
        xt = step(xt, tt, t, out)
    # Algorithm 2, line 6: return x_0
    trace.maybe_add(0, xt, xt)
    return xt if trace.steps is None else (xt, trace.result())


def ancestral_step(sched, rng, mean_type, variance, clip_x0, shared_noise=False):
    r"""The step function of Algorithm 2, lines 3-4: x_{t-1} = mu_theta(x_t, t) + sigma_t z."""

    def step(xt, tt, t, out):
        mu, _, log_sigma2 = _p_mean_var(sched, xt, tt, out, mean_type, variance, clip_x0)
        # Algorithm 2, line 3: z ~ N(0, I) if t > 1, else z = 0 (no noise at the last step)
        if t > 1:
            z_shape = (1,) + xt.shape[1:] if shared_noise else xt.shape
            z = np.broadcast_to(rng.standard_normal(z_shape), xt.shape)
        else:
            z = np.zeros_like(xt)
        # Algorithm 2, line 4: x_{t-1} = mu_theta(x_t, t) + sigma_t z, with mu_theta of Eq. (11)
        return mu + np.exp(0.5 * log_sigma2) * z

    return step


def sample_from(
    sched,
    model_fn,
    xt,
    t_start,
    rng,
    *,
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
    check_model_fn(model_fn)
    check_rng(rng)
    xt = check_x("xt", xt).copy()
    t_start = check_int("t_start", t_start, 1, sched.T)
    check_choice("mean_type", mean_type, MEAN_TYPES)
    check_choice("variance", variance, VARIANCES)
    steps = check_trace_steps(trace_steps, t_start)
    return _sample_from(sched, model_fn, xt, t_start, rng, mean_type, variance, clip_x0, steps,
                        progress, shared_noise)


def _sample_from(sched, model_fn, xt, t_start, rng, mean_type, variance, clip_x0, steps,
                 progress, shared_noise=False):
    step = ancestral_step(sched, rng, mean_type, variance, clip_x0, shared_noise)

    def x0_pred(xt, tt, out):
        return _x0_hat(sched, xt, tt, _split_output(sched, xt, out, variance)[0], mean_type,
                       clip_x0)

    return reverse_loop(sched, model_fn, xt, t_start, step, x0_pred, steps, progress)


def sample(
    sched,
    model_fn,
    shape,
    rng,
    *,
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
    check_model_fn(model_fn)
    check_rng(rng)
    shape = check_shape(shape)
    check_choice("mean_type", mean_type, MEAN_TYPES)
    check_choice("variance", variance, VARIANCES)
    steps = check_trace_steps(trace_steps, sched.T)
    # Algorithm 2, line 1: x_T ~ N(0, I)
    xT = rng.standard_normal(shape)
    return _sample_from(sched, model_fn, xT, sched.T, rng, mean_type, variance, clip_x0, steps,
                        progress)


def ddim_step(sched, xt, t, model_output, *, eta=0.0, mean_type="eps", clip_x0=False):
    r"""Mean and variance of one DDIM step x_t -> x_{t-1} (Song et al. 2021, Eq. 12).

    x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - sigma_t^2) eps_hat + sigma_t z,
    sigma_t^2 = eta^2 (1 - abar_{t-1}) / (1 - abar_t) (1 - abar_t / abar_{t-1})
              = eta^2 beta_tilde_t.
    eta = 0: deterministic. eta = 1: the mean equals mu_tilde(x0_hat, x_t) of Eq. (7) and the
    variance beta_tilde_t, i.e. Algorithm 2 with sigma_t^2 = beta_tilde_t ("fixedsmall").
    eps_hat is the noise the output implies (the mean type's own formula; Eq. 4 at the clipped
    x0_hat when clip_x0).

    Args:
        xt: (B, ...). t: int (B,) steps of ``sched``. model_output: (B, ...) the mean part.
    Returns:
        (mean (B, ...), sigma2 (B, 1, ..., 1)).
    """
    _check_eta(eta)
    xt = check_x("xt", xt)
    t = check_t(sched, t, xt.shape[0])
    check_choice("mean_type", mean_type, MEAN_TYPES)
    out, _ = _split_output(sched, xt, model_output, "fixedlarge")
    return _ddim_step(sched, xt, t, out, eta, mean_type, clip_x0)


def _check_eta(eta):
    if not (np.isscalar(eta) and np.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta: expected a finite number >= 0, got {eta!r}")


def _ddim_step(sched, xt, t, out, eta, mean_type, clip_x0):
    x0_hat = _x0_hat(sched, xt, t, out, mean_type, clip_x0)
    ab_prev = extract(sched.alpha_bar_prev, t, xt.ndim)  # (B, 1, ..., 1)
    omab_prev = extract(sched.one_minus_alpha_bar, t - 1, xt.ndim)  # 1 - alpha_bar_{t-1}
    eps_hat = _eps_hat(sched, xt, t, out, mean_type, x0_hat if clip_x0 else None)
    sigma2 = eta**2 * extract(sched.beta_tilde, t, xt.ndim)  # (B, 1, ..., 1)
    # Song et al. Eq. (12): "predicted x0" + "direction pointing to x_t" (+ sigma_t z, by caller)
    mean = np.sqrt(ab_prev) * x0_hat + np.sqrt(np.maximum(omab_prev - sigma2, 0.0)) * eps_hat
    return mean, sigma2


def ddim_step_fn(sched, rng, eta, mean_type, clip_x0):
    r"""The step function of DDIM: the mean of :func:`ddim_step` plus sigma_t z (none at t = 1)."""

    def step(xt, tt, t, out):
        mean, sigma2 = _ddim_step(sched, xt, tt, _ddim_mean_out(sched, xt, out), eta, mean_type,
                                  clip_x0)
        if t > 1 and eta > 0:  # no noise at the last step (sigma_1 = 0 anyway)
            return mean + np.sqrt(sigma2) * rng.standard_normal(xt.shape)
        return mean

    return step


def ddim_sample(
    sched,
    model_fn,
    shape,
    rng,
    *,
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
    check_model_fn(model_fn)
    check_rng(rng)
    shape = check_shape(shape)
    _check_eta(eta)
    check_choice("mean_type", mean_type, MEAN_TYPES)
    # Algorithm 2, line 1: x_T ~ N(0, I) (or the given x_T)
    xt = rng.standard_normal(shape) if x_T is None else check_x("x_T", x_T, shape).copy()
    steps = check_trace_steps(trace_steps, sched.T)
    step = ddim_step_fn(sched, rng, eta, mean_type, clip_x0)

    def x0_pred(xt, tt, out):
        return _x0_hat(sched, xt, tt, _ddim_mean_out(sched, xt, out), mean_type, clip_x0)

    return reverse_loop(sched, model_fn, xt, sched.T, step, x0_pred, steps, progress, "DDIM")


def interpolate(
    sched,
    model_fn,
    x0_a,
    x0_b,
    t,
    n,
    rng,
    *,
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
    check_model_fn(model_fn)
    check_rng(rng)
    t = check_int("t", t, 0, sched.T)
    n = check_int("n", n, 1)
    check_choice("mean_type", mean_type, MEAN_TYPES)
    check_choice("variance", variance, VARIANCES)
    x0_a = check_x("x0_a", np.asarray(x0_a)[None])  # (1, ...)
    x0_b = check_x("x0_b", np.asarray(x0_b)[None], x0_a.shape)
    lam = np.linspace(0.0, 1.0, n).reshape((n,) + (1,) * (x0_a.ndim - 1))  # (n, 1, ..., 1)
    if t == 0:
        return (1.0 - lam) * x0_a + lam * x0_b
    tt = np.array([t], dtype=np.int64)
    x_t_a = q_sample(sched, x0_a, tt, rng.standard_normal(x0_a.shape))  # Eq. (4), (1, ...)
    x_t_b = q_sample(sched, x0_b, tt, rng.standard_normal(x0_b.shape))
    xbar = (1.0 - lam) * x_t_a + lam * x_t_b  # (n, ...)
    return _sample_from(sched, model_fn, xbar, t, rng, mean_type, variance, clip_x0, None,
                        progress, shared_noise=True)
