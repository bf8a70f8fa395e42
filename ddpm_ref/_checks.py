"""Shared input validation and per-timestep gathering for the float64 maths modules.

Every public function of ``diffusion.py``, ``elbo.py``, ``sampling.py``, ``analytic.py`` (and the
trainer built on them) validates its arguments with these helpers, so a bad argument raises a
``ValueError`` whose message starts with the argument's name and says what was expected
(docs/architecture.md, "Conventions"). They run once, at the public boundary: internal calls go
to the unchecked cores (the ``_name`` twins of the public functions).
"""

from __future__ import annotations

import numpy as np


def check_x(name: str, x, shape: tuple | None = None) -> np.ndarray:
    """``x`` as a float64 array of rank >= 1 with finite values (optionally of exactly ``shape``).

    Raises:
        ValueError: naming ``name`` if x is not floating point, has rank 0, contains NaN/inf, or
            differs from ``shape``.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name}: expected an array of shape (B, ...), got a scalar")
    if shape is not None and x.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values, got {np.sum(~np.isfinite(x))} NaN/inf")
    return x.astype(np.float64, copy=False)


def check_like(name: str, x, ref_name: str, ref_shape: tuple) -> np.ndarray:
    """``x`` validated by :func:`check_x` and required to broadcast to ``ref_shape`` (unchanged)."""
    x = check_x(name, x)
    try:
        out = np.broadcast_shapes(x.shape, tuple(ref_shape))
    except ValueError:
        out = None
    if out != tuple(ref_shape):
        raise ValueError(
            f"{name}: expected a shape that broadcasts to {ref_name}.shape {tuple(ref_shape)}, "
            f"got {x.shape}"
        )
    return x


def check_param(name: str, x, ref_name: str | None = None, ref_shape: tuple | None = None):
    """A distribution parameter (a mean, log-scale...): real, finite, any rank (scalars allowed),
    broadcasting to ``ref_shape`` unchanged when given. Returns float64."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name}: expected real numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values, got {np.sum(~np.isfinite(x))} NaN/inf")
    if ref_shape is not None:
        try:
            out = np.broadcast_shapes(x.shape, tuple(ref_shape))
        except ValueError:
            out = None
        if out != tuple(ref_shape):
            raise ValueError(f"{name}: expected a shape that broadcasts to {ref_name}.shape "
                             f"{tuple(ref_shape)}, got {x.shape}")
    return x.astype(np.float64, copy=False)


def check_t(sched, t, B: int | None = None, t_min: int = 1) -> np.ndarray:
    """``t`` as an int64 array of shape (B,) with values in t_min..T (the paper's timesteps).

    Raises:
        ValueError: naming ``t`` for a non-integer dtype, a shape other than (B,), or values
            outside t_min..T.
    """
    t = np.asarray(t)
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"t: expected an integer array of timesteps in {t_min}..{sched.T}, "
                         f"got dtype {t.dtype}")
    if t.ndim != 1 or (B is not None and t.shape[0] != B):
        want = f"({B},)" if B is not None else "(B,)"
        raise ValueError(f"t: expected shape {want} (one timestep per example), got {t.shape}")
    if t.size and (t.min() < t_min or t.max() > sched.T):
        raise ValueError(
            f"t: expected integers in {t_min}..{sched.T}, got min {t.min()}, max {t.max()}"
        )
    return t.astype(np.int64, copy=False)


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """An integer (not a bool) in lo..hi (or >= lo), as int."""
    bad = isinstance(value, bool) or not isinstance(value, (int, np.integer))
    if bad or value < lo or (hi is not None and value > hi):
        want = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}: expected an integer {want}, got {value!r}")
    return int(value)


def check_shape(shape) -> tuple:
    """A batch shape: a non-empty tuple of integers >= 1."""
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if not shape or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape
    ):
        raise ValueError(f"shape: expected a tuple of integers >= 1 like (B, 2), got {shape!r}")
    return tuple(int(s) for s in shape)


def check_model_fn(model_fn):
    """A callable model_fn(xt, t) (docs/architecture.md)."""
    if not callable(model_fn):
        raise ValueError(f"model_fn: expected a callable model_fn(xt, t), got {model_fn!r}")
    return model_fn


def check_trace_steps(trace_steps, t_start: int):
    """Sorted (descending) unique steps in 0..t_start to record, or None."""
    if trace_steps is None:
        return None
    steps = np.unique(np.asarray(list(trace_steps)))
    if steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"trace_steps: expected integers in 0..{t_start}, got {steps!r}")
    if steps.min() < 0 or steps.max() > t_start:
        raise ValueError(f"trace_steps: expected integers in 0..{t_start}, got {steps.tolist()}")
    return steps[::-1].astype(np.int64)  # sampling order, T first


def check_points(name: str, x, D: int) -> np.ndarray:
    """Real points of shape (B, D), B >= 1, finite; returned as float64 (a copy)."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name}: expected real numbers, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[1] != D or x.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (B, {D}), got {x.shape}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values")
    return x


def check_t_or_scalar(sched, t, B: int, lo: int) -> np.ndarray:
    """t as int64 (B,) in lo..T, a scalar broadcast to (B,) (the closed-form functions' t)."""
    t = np.asarray(t)
    if not np.issubdtype(t.dtype, np.integer) or t.dtype == np.bool_:
        raise ValueError(f"t: expected integers in {lo}..{sched.T}, got dtype {t.dtype}")
    t = np.broadcast_to(t, (B,)) if t.ndim == 0 else t
    if t.shape != (B,):
        raise ValueError(f"t: expected shape ({B},) or a scalar, got {t.shape}")
    if t.min() < lo or t.max() > sched.T:
        raise ValueError(
            f"t: expected integers in {lo}..{sched.T}, got min {t.min()}, max {t.max()}"
        )
    return t.astype(np.int64)


def check_rng(rng) -> np.random.Generator:
    """rng must be an explicit np.random.Generator (no global seeding anywhere)."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a np.random.Generator, got {type(rng).__name__}")
    return rng


def check_choice(name: str, value, choices: tuple) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def extract(arr: np.ndarray, t: np.ndarray, ndim: int) -> np.ndarray:
    """``arr[t]`` reshaped to (B, 1, ..., 1) with ``ndim`` axes, to broadcast against a batch."""
    return arr[t].reshape((t.shape[0],) + (1,) * (ndim - 1))  # (B, 1, ..., 1)
