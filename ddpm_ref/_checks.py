"""Shared input validation and per-timestep gathering for the float64 maths modules.

Every public function of ``diffusion.py``, ``elbo.py`` (and the samplers and trainer built on them)
validates its arguments with these helpers, so a bad argument raises a ``ValueError`` whose message
starts with the argument's name and says what was expected (docs/architecture.md, "Conventions").
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
