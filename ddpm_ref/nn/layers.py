r"""Stateless network layers with hand-written backward passes (CS231n style).

Paper: Ho, Jain, Abbeel (2020), §4 and Appendix B: the ε-network is a U-Net (PixelCNN++ backbone)
with GroupNorm, sinusoidal timestep embeddings (as in the Transformer) and self-attention at low
resolution; for 2D toy data an MLP of the same ingredients.

Every layer is a pair

    out, cache = *_forward(inputs..., params...)
    grads      = *_backward(dout, cache)

where the cache holds exactly what the backward pass reads (it never recomputes the forward). All
layers work in float32 and float64: the output dtype is the input dtype, and parameters must share
it (a float64 weight would silently upcast a float32 network, which costs speed).

This module holds the elementwise and dense layers; the convolution, normalisation and attention
layers live in :mod:`ddpm_ref.nn.conv`, :mod:`ddpm_ref.nn.norm` and :mod:`ddpm_ref.nn.attention`
and are re-exported here, so ``from ddpm_ref.nn.layers import X`` works for every layer.
"""

from __future__ import annotations

import math

import numpy as np

from ddpm_ref.nn import _parallel, kernels
from ddpm_ref.nn._checks import check_array, check_same_dtype

_GRAIN = 1 << 16  # elements per worker below which a hand-off (~30 us) costs more than it saves

# ----------------------------------------------------------------------------------------------
# Linear


def linear_forward(x, w, b):
    """Affine layer out = x w + b.

    Args:
        x: (N, Din) float32 or float64.
        w: (Din, Dout), same dtype as x.
        b: (Dout,), same dtype as x.
    Returns:
        out: (N, Dout).
        cache: (x, w).
    """
    check_array("x", x, ndim=2)
    check_array("w", w, shape=(x.shape[1], None))
    check_array("b", b, shape=(w.shape[1],))
    check_same_dtype(x, w=w, b=b)
    out = x @ w + b  # (N, Dout)
    return out, (x, w)


def linear_backward(dout, cache):
    """Backward of :func:`linear_forward`.

    Args:
        dout: (N, Dout) upstream gradient.
        cache: (x, w) from the forward pass.
    Returns:
        dx (N, Din), dw (Din, Dout), db (Dout,).
    """
    x, w = cache
    check_array("dout", dout, shape=(x.shape[0], w.shape[1]))
    dx = dout @ w.T  # (N, Din)
    dw = x.T @ dout  # (Din, Dout)
    db = dout.sum(axis=0)  # (Dout,)
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# Activations


def silu_forward(x):
    r"""SiLU (swish) activation, out = x sigma(x), with sigma(x) = (1 + tanh(x/2)) / 2.

    Args:
        x: any shape, float32 or float64.
    Returns:
        out: shape of x.
        cache: (x, sigma(x)).
    """
    check_array("x", x)
    x = np.ascontiguousarray(x)
    t, out = np.empty_like(x), np.empty_like(x)
    xf, tf, of = x.reshape(-1), t.reshape(-1), out.reshape(-1)

    def run(a, z):  # elements a..z-1, in a worker thread
        np.multiply(xf[a:z], 0.5, out=tf[a:z])
        np.tanh(tf[a:z], out=tf[a:z])  # NumPy's SIMD tanh; the kernel makes it sigma(x)
        kernels.silu_fwd(xf[a:z], tf[a:z], of[a:z])

    _parallel.map_ranges(run, x.size, grain=_GRAIN)
    return out, (x, t)


def silu_backward(dout, cache):
    r"""Backward of :func:`silu_forward`: d/dx [x sigma(x)] = sigma(x) (1 + x (1 - sigma(x))).

    Returns:
        dx: shape of x.
    """
    x, sig = cache
    check_array("dout", dout, shape=x.shape)
    check_same_dtype(x, dout=dout)
    d, xf, sf = np.ascontiguousarray(dout).reshape(-1), x.reshape(-1), sig.reshape(-1)
    dx = np.empty_like(x)
    dxf = dx.reshape(-1)
    _parallel.map_ranges(
        lambda a, z: kernels.silu_bwd(d[a:z], xf[a:z], sf[a:z], dxf[a:z]), x.size, grain=_GRAIN
    )
    return dx


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu_forward(x):
    r"""GELU activation, tanh form (Hendrycks & Gimpel 2016):
    out = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).

    Args:
        x: any shape, float32 or float64.
    Returns:
        out: shape of x.
        cache: (x, tanh(u)).
    """
    check_array("x", x)
    th = np.tanh(_GELU_C * (x + 0.044715 * x**3))
    return 0.5 * x * (1.0 + th), (x, th)


def gelu_backward(dout, cache):
    r"""Backward of :func:`gelu_forward`:
    d/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    """
    x, th = cache
    check_array("dout", dout, shape=x.shape)
    du = _GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du)


# ----------------------------------------------------------------------------------------------
# Embeddings


def timestep_embedding(t, dim, dtype=np.float64):
    r"""Sinusoidal embedding of integer timesteps (Transformer style, paper §4).

    half = dim // 2, f_k = exp(-ln(10000) k / (half - 1)) for k = 0..half-1,
    emb = [sin(t f_0..f_{half-1}), cos(t f_0..f_{half-1})].

    Args:
        t: (B,) integer timesteps (the paper's t, 1..T).
        dim: even embedding width, at least 4.
        dtype: output dtype (float64 default; float32 for training).
    Returns:
        emb: (B, dim). No backward: t is an integer input.
    """
    t = np.asarray(t)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"t: expected a 1-D integer array, got dtype {t.dtype}, shape {t.shape}")
    if int(dim) != dim or dim < 4 or dim % 2:
        raise ValueError(f"dim: expected an even integer >= 4, got {dim}")
    half = dim // 2
    # f_k = exp(-ln(10000) k / (half - 1)), computed in float64 then cast once
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / (half - 1))  # (half,)
    arg = t.astype(np.float64)[:, None] * freqs[None, :]  # (B, half)
    emb = np.concatenate([np.sin(arg), np.cos(arg)], axis=1)  # (B, dim)
    return emb.astype(dtype, copy=False)


def fourier_features_forward(x, freqs):
    r"""Fourier features of low-dimensional inputs (tiny-diffusion style).

    out = [x, sin(x_d f_k), cos(x_d f_k)] with the sin and cos blocks ordered d-major
    (column D + d F + k holds sin(x_d f_k), column D + D F + d F + k holds cos(x_d f_k)).

    Args:
        x: (N, D) float32 or float64.
        freqs: (F,) fixed (not learned) frequencies; cast to x's dtype.
    Returns:
        out: (N, D + 2 D F).
        cache: (x, f, sin(x f), cos(x f)) with f the cast freqs and the sin/cos (N, D, F).
    """
    check_array("x", x, ndim=2)
    freqs = np.asarray(freqs)
    if freqs.ndim != 1 or not np.all(np.isfinite(freqs)):
        raise ValueError(f"freqs: expected a finite 1-D array, got shape {freqs.shape}")
    f = freqs.astype(x.dtype)
    N, D = x.shape
    arg = x[:, :, None] * f  # (N, D, F)
    s, c = np.sin(arg), np.cos(arg)
    out = np.concatenate([x, s.reshape(N, -1), c.reshape(N, -1)], axis=1)  # (N, D + 2DF)
    return out, (x, f, s, c)


def fourier_features_backward(dout, cache):
    r"""Backward of :func:`fourier_features_forward`:
    dx_d = dout_x_d + sum_k f_k (dsin_dk cos(x_d f_k) - dcos_dk sin(x_d f_k)).

    Returns:
        dx: (N, D).
    """
    x, f, s, c = cache
    N, D = x.shape
    F = f.shape[0]
    check_array("dout", dout, shape=(N, D + 2 * D * F))
    ds = dout[:, D : D + D * F].reshape(N, D, F)
    dc = dout[:, D + D * F :].reshape(N, D, F)
    return dout[:, :D] + ((ds * c - dc * s) * f).sum(axis=2)


# ----------------------------------------------------------------------------------------------
# Plumbing: residual add, channel concat, nearest upsampling, dropout


def add_forward(a, b):
    """Residual add out = a + b (same shapes). Cache: None. Present so the U-Net reads uniformly."""
    check_array("a", a)
    check_array("b", b, shape=a.shape)
    check_same_dtype(a, b=b)
    return a + b, None


def add_backward(dout, cache):
    """Backward of :func:`add_forward`: both inputs receive dout. Returns (da, db)."""
    return dout, dout


def concat_forward(a, b):
    """Concatenate along channels (axis 1), as for the U-Net skip connections.

    Args:
        a: (N, Ca, ...), b: (N, Cb, ...) with equal trailing dims and dtype.
    Returns:
        out: (N, Ca + Cb, ...).
        cache: Ca (the split point).
    """
    check_array("a", a)
    if a.ndim < 2:
        raise ValueError(f"a: expected at least 2 dims (N, C, ...), got shape {a.shape}")
    check_array("b", b, shape=(a.shape[0], None) + a.shape[2:])
    check_same_dtype(a, b=b)
    N, Ca = a.shape[:2]
    out = np.empty((N, Ca + b.shape[1]) + a.shape[2:], dtype=a.dtype)

    def run(n0, n1):  # images n0..n1-1, in a worker thread
        out[n0:n1, :Ca] = a[n0:n1]
        out[n0:n1, Ca:] = b[n0:n1]

    _parallel.map_ranges(run, N, grain=_parallel.image_grain(out))
    return out, Ca


def concat_backward(dout, cache):
    """Backward of :func:`concat_forward`. Returns (da, db): dout split at Ca, as contiguous
    copies (the layers they flow into would each copy a view)."""
    Ca = cache
    return _parallel.copy(dout[:, :Ca]), _parallel.copy(dout[:, Ca:])


def upsample2x_forward(x):
    """Nearest-neighbour 2x upsampling: out[n, c, i, j] = x[n, c, i // 2, j // 2].

    Args:
        x: (N, C, H, W).
    Returns:
        out: (N, C, 2H, 2W).
        cache: x.shape.
    """
    check_array("x", x, ndim=4)
    N, C, H, W = x.shape
    x = np.ascontiguousarray(x)
    out = np.empty((N, C, 2 * H, 2 * W), dtype=x.dtype)
    run = lambda n0, n1: kernels.upsample2x_fwd(x[n0:n1], out[n0:n1])  # images n0..n1-1
    _parallel.map_ranges(run, N, grain=_parallel.image_grain(x))
    return out, x.shape


def upsample2x_backward(dout, cache):
    """Backward of :func:`upsample2x_forward`: each input pixel sums its 2x2 block of dout.

    Returns:
        dx: (N, C, H, W).
    """
    N, C, H, W = cache
    check_array("dout", dout, shape=(N, C, 2 * H, 2 * W))
    dx = np.empty((N, C, H, W), dtype=dout.dtype)
    run = lambda n0, n1: kernels.upsample2x_bwd(dout[n0:n1], dx[n0:n1])  # images n0..n1-1
    _parallel.map_ranges(run, N, grain=_parallel.image_grain(dx))
    return dx


def dropout_forward(x, p, rng):
    """Inverted dropout: keep each unit with probability 1 - p and scale kept units by 1/(1 - p).

    Args:
        x: any shape.
        p: drop probability in [0, 1).
        rng: np.random.Generator, or None for evaluation (identity).
    Returns:
        out: shape of x.
        cache: the scaled mask (shape of x, dtype of x), or None for the identity.
    """
    check_array("x", x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: expected a drop probability in [0, 1), got {p}")
    if rng is None or p == 0.0:
        return x, None
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1.0 - p)
    return x * mask, mask


def dropout_backward(dout, cache):
    """Backward of :func:`dropout_forward`. Returns dx = dout * mask (dout itself if identity)."""
    mask = cache
    if mask is None:
        return dout
    check_array("dout", dout, shape=mask.shape)
    return dout * mask


# ----------------------------------------------------------------------------------------------
# Layers defined in their own modules, re-exported so every layer imports from here

from ddpm_ref.nn.attention import attention_backward, attention_forward  # noqa: E402
from ddpm_ref.nn.conv import conv2d_backward, conv2d_forward  # noqa: E402
from ddpm_ref.nn.norm import (  # noqa: E402
    groupnorm_backward,
    groupnorm_forward,
    groupnorm_silu_backward,
    groupnorm_silu_forward,
)

__all__ = [
    "linear_forward",
    "linear_backward",
    "silu_forward",
    "silu_backward",
    "gelu_forward",
    "gelu_backward",
    "timestep_embedding",
    "fourier_features_forward",
    "fourier_features_backward",
    "add_forward",
    "add_backward",
    "concat_forward",
    "concat_backward",
    "upsample2x_forward",
    "upsample2x_backward",
    "dropout_forward",
    "dropout_backward",
    "conv2d_forward",
    "conv2d_backward",
    "groupnorm_forward",
    "groupnorm_backward",
    "groupnorm_silu_forward",
    "groupnorm_silu_backward",
    "attention_forward",
    "attention_backward",
]
