r"""Algorithm 1 (training), generic over any network with the forward/backward contract.

Paper: Ho, Jain, Abbeel (2020), Algorithm 1 and §3.4 (L_simple, Eq. 14); Appendix B (Adam, warm-up,
gradient clipping at 1, EMA of the parameters). Objectives are in :mod:`ddpm_ref.objectives`.

The trainer knows nothing of the model beyond docs/architecture.md's network contract
(``net.init``, ``net.forward(params, x, t, rng)``, ``net.backward(dout, cache)``). All training
state is plain arrays plus one numpy Generator, so that :mod:`ddpm_ref.checkpoint` can store it and
a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from ddpm_ref.diffusion import MEAN_TYPES, VARIANCES, q_sample
from ddpm_ref.objectives import OBJECTIVES, objective_loss
from ddpm_ref.optim import (
    LR_DECAYS,
    adam_init,
    adam_update,
    clip_grad_norm,
    cosine_lr,
    ema_update,
    warmup_lr,
)

__all__ = ["TrainConfig", "TrainState", "NonFiniteLossError", "TrainingInterrupted", "init_state",
           "train", "ema_decay_at", "lr_at", "make_model_fn", "state_from_checkpoint", "save_state"]


@dataclass
class TrainConfig:
    """Hyper-parameters of Algorithm 1 (the paper's values for CIFAR10 in the comments).

    The defaults are the 2-D recipe (an MLP on 2-D points, about 10 s on two cores) that both
    ``ddpm-ref demo`` and ``ddpm-ref train`` use; images override some (``datasets.py``).
    """

    steps: int = 8000  # total number of updates (paper: 800k)
    batch: int = 256  # examples per update, B (paper: 128)
    lr: float = 2e-3  # Adam learning rate after warm-up (paper: 2e-4)
    warmup: int = 200  # linear learning-rate warm-up, in steps (paper: 5000)
    lr_decay: str = "none"  # after warm-up: "none" (constant, the paper's) | "cosine" (to 0)
    grad_clip: float = 1.0  # global gradient-norm clip (paper: 1.0)
    ema_decay: float = 0.999  # EMA decay of the parameters (paper: 0.9999); see ema_warmup
    ema_warmup: bool = True  # decay min(ema_decay, (1 + s) / (10 + s)) at update s (ema_decay_at)
    objective: str = "simple"  # "simple" (Eq. 14) | "vlb" (Eq. 5) | "hybrid" (Nichol & Dhariwal)
    mean_type: str = "eps"  # what the network predicts: "eps" (Eq. 11) | "x0" | "mu"
    variance: str = "fixedlarge"  # sigma_t^2: fixedlarge | fixedsmall | learned | learned_range
    decoder: str = "gaussian"  # L_0 of vlb/hybrid: "gaussian" (points) | "discretized" (Eq. 13)
    hybrid_lambda: float = 0.001  # lambda of L_hybrid = L_simple + lambda L_vlb (N&D: 0.001)
    log_every: int = 100  # steps between log records
    ckpt_every: int = 1000  # steps between checkpoints (0: only at the end)
    seed: int = 0  # seeds the Generator when train() is given none

    def __post_init__(self):
        for name in ("steps", "batch", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        for name in ("warmup", "ckpt_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a finite number > 0, got {self.lr}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay: expected one of {LR_DECAYS}, got {self.lr_decay!r}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip: expected a number > 0, got {self.grad_clip}")
        if not isinstance(self.ema_warmup, bool):
            raise ValueError(f"ema_warmup: expected True or False, got {self.ema_warmup!r}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay: expected a number in [0, 1], got {self.ema_decay}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {self.objective!r}")
        if self.mean_type not in MEAN_TYPES:
            raise ValueError(f"mean_type: expected one of {MEAN_TYPES}, got {self.mean_type!r}")
        want = {"hybrid": ("learned_range",), "vlb": VARIANCES}.get(self.objective,
                                                                    ("fixedlarge", "fixedsmall"))
        if self.variance not in want:
            raise ValueError(
                f"variance: expected one of {want} for objective {self.objective!r}, "
                f"got {self.variance!r}"
            )
        if self.decoder not in ("gaussian", "discretized"):
            raise ValueError(f"decoder: expected 'gaussian' or 'discretized', got {self.decoder!r}")
        if not self.hybrid_lambda >= 0:
            raise ValueError(f"hybrid_lambda: expected a number >= 0, got {self.hybrid_lambda}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A TrainConfig from a dict (e.g. a checkpoint's), ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict):
            raise TypeError(f"train_config: expected a dict, got {type(d).__name__}")
        # a config saved before ema_warmup existed was trained without it: resume it that way
        d = {"ema_warmup": False, **d} if d and "ema_warmup" not in d else d
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainState:
    """Everything Algorithm 1 carries from one step to the next (plain arrays + one Generator)."""

    params: dict  # network parameters, float32
    ema: dict  # their exponential moving average (what we sample from)
    opt_state: dict  # Adam moments and step count (optim.adam_init)
    step: int  # number of updates made
    rng: np.random.Generator  # the single source of randomness of the loop


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of update ``step`` (1-based): the warm-up, then cfg.lr_decay."""
    if cfg.lr_decay == "cosine":
        return cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps)
    return warmup_lr(step, cfg.lr, cfg.warmup)


def ema_decay_at(s: int, decay: float, warmup: bool = True) -> float:
    r"""The EMA decay used at the update after ``s`` updates: min(decay, (1 + s) / (10 + s)).

    This is the warm-up of TensorFlow's ``ExponentialMovingAverage(decay, num_updates=s)``. A
    fixed decay d keeps weight d^n on the random initial weights after n updates (0.999^2000 =
    0.135: a short run samples a 13 %-untrained model); with the warm-up that weight is
    prod_{s<n} (1 + s) / (10 + s) = 9! n! / (n + 9)! < 10^-23 at n = 2000, while after about
    10 / (1 - decay) updates (10,000 for 0.999) the decay is ``decay`` itself, so long runs
    average over the last ~1 / (1 - decay) updates as before. ``warmup=False``: ``decay``.
    """
    return min(decay, (1.0 + s) / (10.0 + s)) if warmup else decay


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient norm; ``state`` is the last good state."""

    def __init__(self, step, what, value, state, ckpt_path=None, ckpt_step=None):
        self.step, self.what, self.value, self.state = step, what, value, state
        self.ckpt_path, self.ckpt_step = ckpt_path, ckpt_step
        kept = (f"; last good checkpoint kept: {ckpt_path} (step {ckpt_step})"
                if ckpt_path is not None and ckpt_step is not None else "")
        super().__init__(
            f"training stopped at step {step}: the {what} is {value} (try a smaller learning "
            f"rate){kept}"
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`: ``state`` is the last completed step (its rng rewound to that
    step, so that a resumed run continues bit for bit); ``saved`` the checkpoint written for it
    (None if train had no ``ckpt_path``); ``history`` the log records made so far."""

    def __init__(self, state, history, saved=None):
        super().__init__(f"interrupted at step {state.step}")
        self.state, self.history, self.saved = state, history, saved


def init_state(net, cfg: TrainConfig, rng: np.random.Generator | None = None,
               dtype=np.float32) -> TrainState:
    """Fresh parameters (``net.init``), EMA = params, zeroed Adam state, step 0."""
    rng = np.random.default_rng(cfg.seed) if rng is None else rng
    params = net.init(rng, dtype=dtype)
    return TrainState(params, dict(params), adam_init(params), 0, rng)


def state_from_checkpoint(ckpt) -> TrainState:
    """The TrainState stored in a :class:`ddpm_ref.checkpoint.Checkpoint` (to resume training)."""
    if ckpt.rng is None:
        raise ValueError("checkpoint: has no rng state; cannot resume training bit for bit")
    opt = ckpt.opt_state if ckpt.opt_state else adam_init(ckpt.params)
    return TrainState(dict(ckpt.params), dict(ckpt.ema), dict(opt), int(ckpt.step), ckpt.rng)


def save_state(path, net, sched, state: TrainState, cfg: TrainConfig, **meta):
    """Checkpoint a TrainState (``meta``: dataset, image_size, schedule_info)."""
    from ddpm_ref.checkpoint import save_checkpoint  # local: checkpoint imports nothing of ours

    return save_checkpoint(path, net, sched, state.params, ema=state.ema,
                           opt_state=state.opt_state, step=state.step, train_config=asdict(cfg),
                           rng=state.rng, **meta)


def _check_data(data, net) -> np.ndarray:
    if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.floating):
        raise ValueError("data: expected a float array of shape (N, ...)")
    if data.ndim < 2 or data.shape[1:] != tuple(net.x_shape) or data.shape[0] < 1:
        raise ValueError(f"data: expected shape (N, {', '.join(map(str, net.x_shape))}), "
                         f"got {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"data: expected finite values, got {np.sum(~np.isfinite(data))} NaN/inf")
    return data


def train(net, sched, data, cfg: TrainConfig, rng=None, state=None, callback=None,
          ckpt_path=None, ckpt_meta=None, stop_at=None, progress=False):
    r"""Run Algorithm 1 until ``state.step == cfg.steps`` (or ``stop_at``).

    Each step: x0 ~ data (line 2), t ~ U{1..T} (line 3), eps ~ N(0, I) (line 4), x_t by Eq. (4),
    then the objective's loss and d(loss)/d(output), ``net.backward``, ``clip_grad_norm``,
    warm-up learning rate, ``adam_update``, ``ema_update`` (line 5).

    Args:
        net: network with the forward/backward contract. sched: the Schedule.
        data: (N, ...) training set; batches are drawn with replacement.
        cfg: TrainConfig. rng: Generator for a fresh state (default: seeded by cfg.seed).
        state: a TrainState to continue from (e.g. :func:`state_from_checkpoint`).
        callback: called as callback(record) with each log record.
        ckpt_path: where to save a checkpoint every cfg.ckpt_every steps and at the end.
        ckpt_meta: extra keywords for :func:`save_state` (dataset, image_size, schedule_info).
        stop_at: stop after this step (for interrupting a run); default cfg.steps.
        progress: show a labelled tqdm bar, moved every step, with the running loss (and a
            line saying so while the Numba kernels compile in the first step).
    Returns:
        (state, history): the final TrainState and the list of log records, each a dict with
        step, loss (mean objective over the window), l_simple (mean eps-MSE per example),
        l_simple_q1..q4 (the same within each quarter of t: q1 = the smallest t), lr,
        grad_norm, steps_per_s, wall_s.
    Raises:
        NonFiniteLossError: on a NaN/inf loss or gradient norm; the state is not updated with
            it and the checkpoint on disk is not overwritten.
        TrainingInterrupted: on Ctrl-C (KeyboardInterrupt); the last completed step is saved
            to ``ckpt_path`` first (with the rng state of that step: resume stays bit for bit).
    """
    data = _check_data(data, net)
    state = init_state(net, cfg, rng) if state is None else state
    stop_at = cfg.steps if stop_at is None else min(int(stop_at), cfg.steps)
    ckpt_meta = ckpt_meta or {}
    T, B, N = sched.T, cfg.batch, data.shape[0]
    dtype = next(iter(state.params.values())).dtype
    timesteps = sched.timesteps  # the network is conditioned on the original step
    params, ema, opt, step, rng = state.params, state.ema, state.opt_state, state.step, state.rng
    last_ckpt = None
    history = []
    win = _Window()
    t_start = time.perf_counter()
    # overflow shows up as a non-finite output, loss or gradient norm, which stop the loop below
    quiet_overflow = np.errstate(over="ignore", invalid="ignore")
    mark = (step, rng.bit_generator.state)
    with quiet_overflow, _progress_bar(progress, step, stop_at, net) as bar:
        try:
            while step < stop_at:
                mark = (step, rng.bit_generator.state)  # to rewind a step cut short by Ctrl-C
                # Algorithm 1, line 2: x0 ~ q(x0), a batch drawn from the training set
                x0 = data[rng.integers(0, N, size=B)]  # (B, ...)
                # Algorithm 1, line 3: t ~ Uniform({1, ..., T})
                t = rng.integers(1, T + 1, size=B)  # (B,)
                # Algorithm 1, line 4: eps ~ N(0, I)
                eps = rng.standard_normal(x0.shape)  # (B, ...) float64
                # Eq. (4): x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, in float64
                xt = q_sample(sched, x0, t, eps)
                out, cache = net.forward(params, xt.astype(dtype), timesteps[t], rng=rng)
                if not np.isfinite(out).all():
                    raise NonFiniteLossError(step + 1, "network output", "not finite", state,
                                             *_kept(last_ckpt))
                loss, d_out, eps_mse = objective_loss(cfg, sched, x0, xt, t, eps, out)
                if not math.isfinite(loss):
                    raise NonFiniteLossError(step + 1, "loss", loss, state, *_kept(last_ckpt))
                # Algorithm 1, line 5: gradient step on the objective
                grads = net.backward(d_out.astype(dtype, copy=False), cache)
                grads, gnorm = clip_grad_norm(grads, cfg.grad_clip)
                if not math.isfinite(gnorm):
                    raise NonFiniteLossError(step + 1, "gradient norm", gnorm, state,
                                             *_kept(last_ckpt))
                lr = lr_at(step + 1, cfg)
                params, opt = adam_update(params, grads, opt, lr)
                ema = ema_update(ema, params, ema_decay_at(step, cfg.ema_decay, cfg.ema_warmup))
                state = TrainState(params, ema, opt, step + 1, rng)  # one assignment: atomic
                step = state.step
                win.add(loss, eps_mse, t, T)
                if bar is not None:
                    bar.update(1)
                    if step % max(1, min(cfg.log_every, 10)) == 0 or step == stop_at:
                        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                if step % cfg.log_every == 0 or step == stop_at:
                    rec = win.record(step, lr, gnorm, time.perf_counter() - t_start)
                    history.append(rec)
                    if callback is not None:
                        callback(rec)
                if ckpt_path is not None and (
                    (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == stop_at
                ):
                    last_ckpt = (save_state(ckpt_path, net, sched, state, cfg, **ckpt_meta), step)
        except KeyboardInterrupt:
            if state.step == mark[0]:  # the step in flight did not finish: rewind its draws
                rng.bit_generator.state = mark[1]
            saved = None
            if ckpt_path is not None and state.step > 0:
                saved = (last_ckpt[0] if last_ckpt is not None and last_ckpt[1] == state.step
                         else save_state(ckpt_path, net, sched, state, cfg, **ckpt_meta))
            raise TrainingInterrupted(state, history, saved) from None
    return state, history


def _progress_bar(progress, initial, total, net=None):
    if not progress:
        return contextlib.nullcontext()
    from tqdm import tqdm  # imported lazily: only when asked for

    if initial < total and type(net).__name__ == "UNet":
        tqdm.write("the first step compiles the Numba kernels (up to a minute the first time; "
                   "cached after that): ignore the first ETA")
    return tqdm(total=total, initial=initial, desc="training (Algorithm 1)", unit="step",
                dynamic_ncols=True, mininterval=0.5)


def _kept(last_ckpt):
    return (None, None) if last_ckpt is None else last_ckpt


class _Window:
    """Running sums between two log records (per-quartile-of-t eps-MSE included)."""

    def __init__(self):
        self.reset()
        self.t0 = time.perf_counter()

    def reset(self):
        self.n, self.loss = 0, 0.0
        self.q_sum, self.q_cnt = np.zeros(4), np.zeros(4)
        self.t0 = time.perf_counter()

    def add(self, loss, eps_mse, t, T):
        self.n += 1
        self.loss += loss
        q = (t - 1) * 4 // T  # (B,) quartile of t: 0 for t in the first quarter of 1..T
        self.q_sum += np.bincount(q, weights=eps_mse, minlength=4)
        self.q_cnt += np.bincount(q, minlength=4)

    def record(self, step, lr, gnorm, wall):
        dt = time.perf_counter() - self.t0
        with np.errstate(invalid="ignore", divide="ignore"):
            q = self.q_sum / self.q_cnt  # NaN for a quartile with no example in the window
        rec = {
            "step": step,
            "loss": self.loss / self.n,
            "l_simple": float(self.q_sum.sum() / self.q_cnt.sum()),
            **{f"l_simple_q{i + 1}": float(q[i]) for i in range(4)},
            "lr": float(lr),
            "grad_norm": float(gnorm),
            "steps_per_s": self.n / dt if dt > 0 else float("nan"),
            "wall_s": wall,
        }
        self.reset()
        return rec


def make_model_fn(net, params, dtype=np.float32, chunk=None):
    """``model_fn(xt, t) -> model_output`` (float64) of docs/architecture.md for a network.

    Casts x_t to ``dtype`` (params too, once), calls ``net.forward(..., rng=None)`` (no dropout)
    in chunks of ``chunk`` examples (default 8192 points or 64 images) to bound the memory the
    forward caches take, and returns float64.
    """
    p = {k: v.astype(dtype, copy=False) for k, v in params.items()}
    net.check_params(p)
    size = int(np.prod(net.x_shape))
    chunk = chunk or (8192 if size <= 16 else 64)

    def model_fn(xt, t):
        xt = np.asarray(xt)
        t = np.asarray(t)
        outs = []
        for i in range(0, xt.shape[0], chunk):
            out, _ = net.forward(p, xt[i:i + chunk].astype(dtype), t[i:i + chunk], rng=None)
            outs.append(out.astype(np.float64))
        return np.concatenate(outs, axis=0) if len(outs) != 1 else outs[0]

    return model_fn
