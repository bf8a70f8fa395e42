r"""An MLP ε-network for low-dimensional (2D toy) data.

Paper: Ho, Jain, Abbeel (2020), §3.2 (eps_theta(x_t, t), Eq. 11) and §4 / Appendix B (the
timestep enters through the Transformer sinusoidal embedding). The toy-data recipe, with Fourier
features of x as well as of t, follows tanelp's tiny-diffusion.

    h_0 = concat(fourier(x), sinusoidal(t))          # (B, D + 2 D F + t_dim)
    h_l = act(h_{l-1} W_l + b_l),  l = 1..depth      # (B, hidden)
    eps_theta = h_depth W_out + b_out                # (B, D * out_mult), W_out starts at zero

``MLP(**reference_mlp_config())`` is BENCHMARKS.md's reference MLP (37,762 parameters).

Fourier features matter for 2D data: after 4,000 steps (batch 256, lr 1e-3, EMA 0.999) the
squared MMD between 2,000 samples and held-out data was 4x lower with the default 8 frequencies
(1..8) than without (checkerboard 0.0014 vs 0.0051, swiss roll 0.0013 vs 0.0058); 16
frequencies up to 32 or 100 did no better (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ddpm_ref.nn import kernels
from ddpm_ref.nn.base import EpsNetwork, fan_avg_uniform
from ddpm_ref.nn.layers import (
    fourier_features_backward,
    fourier_features_forward,
    gelu_backward,
    gelu_forward,
)


def _silu_forward(a):
    r"""SiLU out = a sigma(a), the maths of :func:`~ddpm_ref.nn.layers.silu_forward` without its
    argument checks and worker threads (too costly at the MLP's sizes). Cache: (a, sigma(a))."""
    # sigma(a) = (1 + tanh(a / 2)) / 2: no overflow in float32; tanh by NumPy (SIMD), the rest
    # in one pass of kernels.silu_fwd
    s = np.multiply(a, 0.5)
    np.tanh(s, out=s)
    out = np.empty_like(a)
    kernels.silu_fwd(a.reshape(-1), s.reshape(-1), out.reshape(-1))  # s becomes sigma(a)
    return out, (a, s)


def _silu_backward(dout, cache):
    r"""d/da [a sigma(a)] = sigma(a) (1 + a (1 - sigma(a))), times dout (kernels.silu_bwd)."""
    a, s = cache
    da = np.empty_like(a)
    kernels.silu_bwd(
        np.ascontiguousarray(dout).reshape(-1), a.reshape(-1), s.reshape(-1), da.reshape(-1)
    )
    return da


ACTIVATIONS = {
    "silu": (_silu_forward, _silu_backward),  # == layers.silu_forward / silu_backward
    "gelu": (gelu_forward, gelu_backward),
}


@dataclass
class MLPConfig:
    x_dim: int = 2  # D, dimension of a data point
    hidden: int = 128  # width of every hidden layer
    depth: int = 3  # number of hidden [Linear, activation] layers
    t_dim: int = 32  # width of the sinusoidal embedding of t (even, >= 4)
    fourier_freqs: int = 8  # F, Fourier frequencies per coordinate of x; 0 feeds x in raw
    fourier_max_freq: float = 8.0  # frequencies run geometrically from 1 to this
    activation: str = "silu"  # "silu" or "gelu"
    out_mult: int = 1  # 2 doubles the output for learned variances (mean half, v half)

    def __post_init__(self):
        for name in ("x_dim", "hidden", "depth", "t_dim", "out_mult"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        if self.t_dim < 4 or self.t_dim % 2:
            raise ValueError(f"t_dim: expected an even integer >= 4, got {self.t_dim}")
        if not isinstance(self.fourier_freqs, (int, np.integer)) or self.fourier_freqs < 0:
            raise ValueError(f"fourier_freqs: expected an integer >= 0, got {self.fourier_freqs!r}")
        if not self.fourier_max_freq >= 1.0:
            raise ValueError(
                f"fourier_max_freq: expected a number >= 1, got {self.fourier_max_freq}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.out_mult not in (1, 2):
            raise ValueError(f"out_mult: expected 1 or 2 (learned variances), got {self.out_mult}")


def reference_mlp_config() -> dict:
    """Keyword arguments for BENCHMARKS.md's reference MLP (37,762 parameters): x (B, 2),
    t embedded in 32 dims, no Fourier features, 3 hidden layers of 128 with SiLU."""
    return dict(x_dim=2, hidden=128, depth=3, t_dim=32, fourier_freqs=0, activation="silu")


class MLP(EpsNetwork):
    """ε-network for points x of shape (B, x_dim); see the module docstring for the layers.

    Parameter keys: ``hidden.<l>.w`` (Din, hidden), ``hidden.<l>.b`` (hidden,) for l = 0..depth-1,
    ``out.w`` (hidden, x_dim * out_mult), ``out.b``.
    """

    def __init__(self, **config):
        self.config = MLPConfig(**config)
        c = self.config
        self.x_shape = (c.x_dim,)
        # fixed (not learned) Fourier frequencies 1 .. fourier_max_freq, geometric
        F = c.fourier_freqs
        self.freqs = np.geomspace(1.0, c.fourier_max_freq, F) if F > 0 else None  # (F,)
        self.in_dim = c.x_dim * (1 + 2 * F) + c.t_dim  # width of h_0
        self._act_fwd, self._act_bwd = ACTIVATIONS[c.activation]

    def param_shapes(self) -> dict:
        c = self.config
        shapes, din = {}, self.in_dim
        for l in range(c.depth):
            shapes[f"hidden.{l}.w"] = (din, c.hidden)
            shapes[f"hidden.{l}.b"] = (c.hidden,)
            din = c.hidden
        shapes["out.w"] = (c.hidden, c.x_dim * c.out_mult)
        shapes["out.b"] = (c.x_dim * c.out_mult,)
        return shapes

    def init(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        """Glorot-uniform weights (Ho et al.'s default_init), zero biases, zero output layer."""
        params = {}
        for k, shape in self.param_shapes().items():
            if k.endswith(".b"):
                params[k] = np.zeros(shape, dtype=dtype)
            else:
                scale = 0.0 if k == "out.w" else 1.0  # the output starts at eps_theta = 0
                params[k] = fan_avg_uniform(rng, shape[0], shape[1], shape, dtype, scale)
        return params

    def forward(self, params, x, t, rng=None):
        r"""eps_theta(x_t, t) for a batch.

        The hidden layers are :func:`~ddpm_ref.nn.layers.linear_forward` and the activation's
        forward, written inline: at batch 256 a whole training step takes about a millisecond,
        so per-call argument checks would cost more than a layer's arithmetic. The network's
        inputs are checked once, here.

        Args:
            params: from :meth:`init` (float32 or float64; x must share the dtype).
            x: (B, x_dim) noisy points x_t.
            t: (B,) integer timesteps >= 0.
            rng: unused (the MLP has no dropout); accepted for the common contract.
        Returns:
            eps_theta: (B, x_dim * out_mult).
            cache: what :meth:`backward` reads.
        """
        self.check_inputs(params, x, t)
        c = self.config
        B = x.shape[0]
        ff_cache = None
        if self.freqs is not None:
            feats, ff_cache = fourier_features_forward(x, self.freqs)  # (B, D + 2DF)
        else:
            feats = x
        n_feats = feats.shape[1]
        h = np.empty((B, self.in_dim), dtype=x.dtype)  # h_0 = concat(features, t-embedding)
        h[:, :n_feats] = feats
        h[:, n_feats:] = self.time_embedding(t, c.t_dim, x.dtype)
        caches = []
        for l in range(c.depth):
            a = h @ params[f"hidden.{l}.w"]  # (B, hidden): linear_forward
            a += params[f"hidden.{l}.b"]
            h_next, act_cache = self._act_fwd(a)  # (B, hidden)
            caches.append((h, params[f"hidden.{l}.w"], act_cache))
            h = h_next
        eps_theta = h @ params["out.w"]  # (B, D * out_mult)
        eps_theta += params["out.b"]
        return eps_theta, (ff_cache, n_feats, caches, (h, params["out.w"]))

    def backward(self, d_eps_theta, cache):
        """Gradients of a scalar loss w.r.t. every parameter, given dL/d eps_theta.

        Returns:
            grads: dict with the keys and shapes of params. (The gradient w.r.t. x is not
            needed for training and is not returned; see :meth:`input_grad`.)
        """
        _, _, caches, (h, w_out) = cache
        want = (h.shape[0], w_out.shape[1])
        if not isinstance(d_eps_theta, np.ndarray) or d_eps_theta.shape != want:
            got = getattr(d_eps_theta, "shape", type(d_eps_theta).__name__)
            raise ValueError(f"d_eps_theta: expected shape {want}, got {got}")
        grads = {}
        # bias gradients sum dout over the batch: ones @ dout is one BLAS call, several times
        # faster than dout.sum(axis=0) for (256, 128) float32
        ones = np.ones(h.shape[0], dtype=h.dtype)  # (B,)
        # linear_backward of the output layer
        grads["out.w"] = h.T @ d_eps_theta  # (hidden, D * out_mult)
        grads["out.b"] = ones @ d_eps_theta  # (D * out_mult,)
        dh = d_eps_theta @ w_out.T  # (B, hidden)
        for l in range(len(caches) - 1, -1, -1):
            h_in, w, act_cache = caches[l]
            da = self._act_bwd(dh, act_cache)  # (B, hidden)
            grads[f"hidden.{l}.w"] = h_in.T @ da  # (Din, hidden)
            grads[f"hidden.{l}.b"] = ones @ da  # (hidden,)
            if l > 0:  # d h_0 (features and t-embedding) is not needed for training
                dh = da @ w.T  # (B, Din)
        return {k: grads[k] for k in self.param_shapes()}  # params' key order

    def input_grad(self, d_eps_theta, cache):
        """dL/dx through the whole network (Fourier features included), for checks."""
        ff_cache, n_feats, caches, (h, w_out) = cache
        dh = d_eps_theta @ w_out.T
        for _, w, act_cache in reversed(caches):
            dh = self._act_bwd(dh, act_cache) @ w.T
        dfeats = dh[:, :n_feats]  # the t-embedding columns get no gradient: t is an integer
        return dfeats if ff_cache is None else fourier_features_backward(dfeats, ff_cache)

    def config_dict(self) -> dict:
        return asdict(self.config)
