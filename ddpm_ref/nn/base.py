r"""What every ε-network shares: the parameter dict, its checks, and the input checks.

Paper: Ho, Jain, Abbeel (2020), §3.2: the network eps_theta(x_t, t) predicts the noise ε that was
mixed into x_t (Eq. 11); it is trained on L_simple (Eq. 14) by Algorithm 1.

The contract (docs/architecture.md, "Network contract"):

    params = net.init(rng, dtype=np.float32)              # flat dict[str, ndarray], dotted keys
    eps_theta, cache = net.forward(params, x, t, rng=None) # rng given -> dropout active
    grads = net.backward(d_eps_theta, cache)               # same keys and shapes as params
    net.check_params(params)                               # ValueError naming a bad key

Parameters live outside the network: a network object holds only its config, so the optimiser,
the EMA and the checkpoint all work on plain dicts of arrays.
"""

from __future__ import annotations

import math

import numpy as np

from ddpm_ref.nn import fast
from ddpm_ref.nn import layers as plain
from ddpm_ref.nn.layers import timestep_embedding

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def pick_tier(fast_flag: bool):
    """The layer namespace a network calls: :mod:`ddpm_ref.nn.fast` or :mod:`ddpm_ref.nn.layers`."""
    if not isinstance(fast_flag, (bool, np.bool_)):
        raise ValueError(f"fast: expected True or False, got {fast_flag!r}")
    return fast if fast_flag else plain


def fan_avg_uniform(rng, fan_in, fan_out, shape, dtype, scale=1.0):
    r"""Uniform(-a, a) with a = sqrt(3 scale / ((fan_in + fan_out) / 2)): variance scale / fan_avg.

    This is Ho et al.'s ``default_init`` (``variance_scaling(scale, 'fan_avg', 'uniform')``,
    i.e. Glorot uniform for scale = 1); scale = 0 gives zeros, as for their output layers.
    """
    if scale == 0.0:
        return np.zeros(shape, dtype=dtype)
    a = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
    return rng.uniform(-a, a, size=shape).astype(dtype)


class EmbeddingTable:
    """Rows of :func:`~ddpm_ref.nn.layers.timestep_embedding` for t = 0..n-1, computed once per
    dtype and looked up by index: the same values, without the sin/cos of (B, dim/2) float64
    arguments at every call (for the 2D MLP they cost more than the rest of its forward pass).

    The cache is the attribute ``tables``: {dtype: (n, dim) array}, grown (n doubles) when a
    t >= n is asked for.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.tables = {}

    def lookup(self, t, dtype):
        """(B, dim) embedding rows of the integer timesteps t (B,), in dtype."""
        dtype = np.dtype(dtype)
        table = self.tables.get(dtype)
        t_max = int(t.max())
        if table is None or table.shape[0] <= t_max:
            n = max(1024, 1 << t_max.bit_length())  # rows for t = 0..n-1
            table = timestep_embedding(np.arange(n), self.dim, dtype=dtype)  # (n, dim)
            self.tables[dtype] = table
        return table[t]  # (B, dim)


class EpsNetwork:
    """Base class: subclasses set ``config``, ``x_shape``, ``layers`` (the tier: the module
    :mod:`ddpm_ref.nn.layers`, or :mod:`ddpm_ref.nn.fast` when ``config.fast``) and ``temb_table``,
    and implement ``param_shapes``, ``init``, ``forward`` and ``backward``."""

    config: object
    x_shape: tuple
    layers: object
    temb_table: EmbeddingTable

    def param_shapes(self) -> dict:
        """{key: shape} for every parameter array, in a fixed order."""
        raise NotImplementedError

    def n_params(self, params=None) -> int:
        """Number of scalar parameters (of `params` if given, else of the config)."""
        if params is not None:
            self.check_params(params)
        return sum(math.prod(s) for s in self.param_shapes().values())

    def check_params(self, params) -> None:
        """ValueError naming the first missing, extra, wrongly-shaped or non-float key."""
        if not isinstance(params, dict):
            raise ValueError(f"params: expected a dict of arrays, got {type(params).__name__}")
        shapes = self.param_shapes()
        missing = [k for k in shapes if k not in params]
        if missing:
            raise ValueError(f"params: missing key {missing[0]!r} (and {len(missing) - 1} more)")
        extra = [k for k in params if k not in shapes]
        if extra:
            raise ValueError(
                f"params: unexpected key {extra[0]!r} (built for another config? "
                f"{len(extra)} extra in all)"
            )
        dtype = None
        for k, shape in shapes.items():
            p = params[k]
            if not isinstance(p, np.ndarray) or p.dtype not in FLOAT_DTYPES:
                got = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
                raise ValueError(f"params[{k!r}]: expected a float32/float64 array, got {got}")
            if p.shape != shape:
                raise ValueError(f"params[{k!r}]: expected shape {shape}, got {p.shape}")
            if dtype is None:
                dtype = p.dtype
            elif p.dtype != dtype:
                raise ValueError(
                    f"params[{k!r}]: expected dtype {dtype} like the others, got {p.dtype}"
                )

    def check_inputs(self, params, x, t) -> None:
        """ValueErrors for a bad x (shape (B,) + x_shape, the params' dtype) or t (ints >= 0)."""
        self.check_params(params)
        dtype = next(iter(params.values())).dtype
        if not isinstance(x, np.ndarray) or x.ndim != 1 + len(self.x_shape):
            got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"x: expected an array of shape (B, {self.x_shape_str}), got {got}")
        if x.shape[1:] != tuple(self.x_shape) or x.shape[0] < 1:
            raise ValueError(f"x: expected shape (B, {self.x_shape_str}), got {x.shape}")
        if x.dtype != dtype:
            raise ValueError(f"x: expected dtype {dtype} (that of params), got {x.dtype}")
        if not isinstance(t, np.ndarray) or not np.issubdtype(t.dtype, np.integer):
            got = t.dtype if isinstance(t, np.ndarray) else type(t).__name__
            raise ValueError(f"t: expected an integer array of shape ({x.shape[0]},), got {got}")
        if t.shape != (x.shape[0],):
            raise ValueError(
                f"t: expected shape ({x.shape[0]},) (one step per example), got {t.shape}"
            )
        if t.min() < 0:
            raise ValueError(f"t: expected integer timesteps >= 0, got min {t.min()}")

    def time_embedding(self, t, dim, dtype):
        """sinusoidal(t) (B, dim), looked up in ``self.temb_table`` (an :class:`EmbeddingTable`
        that the subclass creates in its ``__init__``)."""
        if dim != self.temb_table.dim:
            raise ValueError(f"dim: expected {self.temb_table.dim} (this network's), got {dim}")
        return self.temb_table.lookup(t, dtype)

    @property
    def x_shape_str(self) -> str:
        return ", ".join(str(s) for s in self.x_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
