r"""An MLP ε-network for low-dimensional (2D toy) data.

Paper: Ho, Jain, Abbeel (2020), §3.2 (eps_theta(x_t, t), Eq. 11) and §4 / Appendix B (the
timestep enters through the Transformer sinusoidal embedding). The toy-data recipe, with Fourier
features of x as well as of t, follows tanelp's tiny-diffusion.

    h_0 = concat(fourier(x), sinusoidal(t))          # (B, D + 2 D F + t_dim)
    h_l = act(h_{l-1} W_l + b_l),  l = 1..depth      # (B, hidden)
    eps_theta = h_depth W_out + b_out                # (B, D * out_mult), W_out starts at zero

Every line is a layer pair of the network's tier (``config.fast``: :mod:`ddpm_ref.nn.fast`, else
:mod:`ddpm_ref.nn.layers`). ``MLP(**reference_mlp_config())`` is the reference MLP of
docs/benchmarks.md (37,762 parameters). Fourier features of x matter for 2D data (the measurements
are in docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddpm_ref.nn.base import EmbeddingTable, EpsNetwork, fan_avg_uniform, pick_tier

ACTIVATIONS = ("silu", "gelu")  # the (out, cache) pairs <name>_forward / <name>_backward


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
    fast: bool = True  # layers from the engine room nn.fast; False: the plain nn.layers

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
        pick_tier(self.fast)  # ValueError unless a bool


def reference_mlp_config() -> dict:
    """Keyword arguments for the reference MLP of docs/benchmarks.md (37,762 parameters): x (B, 2),
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
        self.layers = pick_tier(c.fast)
        self.temb_table = EmbeddingTable(c.t_dim)
        # fixed (not learned) Fourier frequencies 1 .. fourier_max_freq, geometric
        F = c.fourier_freqs
        self.freqs = np.geomspace(1.0, c.fourier_max_freq, F) if F > 0 else None  # (F,)
        self.in_dim = c.x_dim * (1 + 2 * F) + c.t_dim  # width of h_0
        L = self.layers
        act = {"silu": (L.silu_forward, L.silu_backward), "gelu": (L.gelu_forward, L.gelu_backward)}
        self._act_fwd, self._act_bwd = act[c.activation]

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
        L, c = self.layers, self.config
        c_ff, feats = None, x
        if self.freqs is not None:
            feats, c_ff = L.fourier_features_forward(x, self.freqs)  # (B, D + 2DF)
        emb = self.time_embedding(t, c.t_dim, x.dtype)  # (B, t_dim)
        h, _ = L.concat_forward(feats, emb)  # h_0 (B, in_dim); t gets no gradient
        caches = []
        for l in range(c.depth):
            a, c_lin = L.linear_forward(h, params[f"hidden.{l}.w"], params[f"hidden.{l}.b"])
            h, c_act = self._act_fwd(a)  # (B, hidden)
            caches.append((c_lin, c_act))
        eps_theta, c_out = L.linear_forward(h, params["out.w"], params["out.b"])  # (B, D out_mult)
        return eps_theta, (c_ff, feats.shape[1], caches, c_out)

    def backward(self, d_eps_theta, cache):
        """Gradients of a scalar loss w.r.t. every parameter, given dL/d eps_theta.

        Returns:
            grads: dict with the keys and shapes of params. (The gradient w.r.t. x is not
            needed for training and is not returned; see :meth:`input_grad`.)
        """
        return self._backward(d_eps_theta, cache, need_dh0=False)[1]

    def _backward(self, d_eps_theta, cache, need_dh0):
        L = self.layers
        _, _, caches, c_out = cache
        h, w_out = c_out
        want = (h.shape[0], w_out.shape[1])
        if not isinstance(d_eps_theta, np.ndarray) or d_eps_theta.shape != want:
            got = getattr(d_eps_theta, "shape", type(d_eps_theta).__name__)
            raise ValueError(f"d_eps_theta: expected shape {want}, got {got}")
        g = {}
        dh, g["out.w"], g["out.b"] = L.linear_backward(d_eps_theta, c_out)
        for l in reversed(range(len(caches))):
            c_lin, c_act = caches[l]
            da = self._act_bwd(dh, c_act)  # (B, hidden)
            need_dx = l > 0 or need_dh0  # training needs no gradient w.r.t. h_0
            dh, g[f"hidden.{l}.w"], g[f"hidden.{l}.b"] = L.linear_backward(
                da, c_lin, need_dx=need_dx
            )
        return dh, {k: g[k] for k in self.param_shapes()}  # dL/dh_0 (or None), params' key order

    def input_grad(self, d_eps_theta, cache):
        """dL/dx through the whole network (Fourier features included), for checks."""
        c_ff, n_feats = cache[:2]
        dh0, _ = self._backward(d_eps_theta, cache, need_dh0=True)
        dfeats = dh0[:, :n_feats]  # the t-embedding columns get no gradient: t is an integer
        return dfeats if c_ff is None else self.layers.fourier_features_backward(dfeats, c_ff)
