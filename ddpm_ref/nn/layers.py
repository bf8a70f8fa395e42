r"""Every layer of the ε-networks as a pair of plain NumPy functions (CS231n's ``layers.py``).

Paper: Ho, Jain, Abbeel (2020), Appendix B: the ε-network is a U-Net on a PixelCNN++ backbone
with group normalisation, the Transformer's sinusoidal embedding of t added into every residual
block, and self-attention at low resolution; for 2D toy data an MLP of the same ingredients.

Every layer is a pair

    out, cache = *_forward(inputs..., params...)
    grads      = *_backward(dout, cache)

where the cache holds exactly what the backward pass reads (it never recomputes the forward).
Output dtype = input dtype; parameters must share it. These bodies are written to be read; the
engine room :mod:`ddpm_ref.nn.fast` has the same names and signatures and computes the same
functions (up to rounding) with Numba kernels, worker threads and Winograd convolutions. A network
picks its tier with the config field ``fast``; ``tests/test_fast.py`` holds the two tiers equal.
"""

from __future__ import annotations

import math

import numpy as np

from ddpm_ref.nn._checks import (
    check_array,
    check_attention,
    check_conv,
    check_groupnorm,
    check_same_dtype,
    conv_out_size,
)

# ----------------------------------------------------------------------------------------------
# Linear and activations


def linear_forward(x, w, b):
    """Affine layer out = x w + b.

    Args:
        x: (N, Din) float32 or float64. w: (Din, Dout), b: (Dout,), the dtype of x.
    Returns:
        out: (N, Dout); cache: (x, w).
    """
    check_array("x", x, ndim=2)
    check_array("w", w, shape=(x.shape[1], None))
    check_array("b", b, shape=(w.shape[1],))
    check_same_dtype(x, w=w, b=b)
    return x @ w + b, (x, w)  # (N, Dout)


def linear_backward(dout, cache, *, need_dx=True):
    """Backward of :func:`linear_forward`. Returns dx (N, Din), dw (Din, Dout), db (Dout,);
    dx is None with ``need_dx=False`` (a network's first layer: its input needs no gradient)."""
    x, w = cache
    check_array("dout", dout, shape=(x.shape[0], w.shape[1]))
    dx = dout @ w.T if need_dx else None  # (N, Din)
    return dx, x.T @ dout, dout.sum(axis=0)


def silu_forward(x):
    r"""SiLU (swish), out = x sigma(x), with sigma(x) = (1 + tanh(x/2)) / 2 (no overflow).

    Args:
        x: any shape. Returns out (shape of x); cache: (x, sigma(x)).
    """
    check_array("x", x)
    sig = 0.5 + 0.5 * np.tanh(0.5 * x)  # sigma(x)
    return x * sig, (x, sig)


def silu_backward(dout, cache):
    r"""Backward of :func:`silu_forward`: d/dx [x sigma(x)] = sigma(x) (1 + x (1 - sigma(x)))."""
    x, sig = cache
    check_array("dout", dout, shape=x.shape)
    return dout * (sig * (1.0 + x * (1.0 - sig)))


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu_forward(x):
    r"""GELU, tanh form (Hendrycks & Gimpel 2016): out = x/2 (1 + tanh(u)),
    u = sqrt(2/pi) (x + 0.044715 x^3). Cache: (x, tanh(u))."""
    check_array("x", x)
    th = np.tanh(_GELU_C * (x + 0.044715 * x**3))
    return 0.5 * x * (1.0 + th), (x, th)


def gelu_backward(dout, cache):
    r"""Backward of :func:`gelu_forward`:
    d/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    x, th = cache
    check_array("dout", dout, shape=x.shape)
    du = _GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du)


# ----------------------------------------------------------------------------------------------
# Embeddings


def timestep_embedding(t, dim, dtype=np.float64):
    r"""Sinusoidal embedding of integer timesteps (the Transformer's, paper §3.2 / Appendix B).

    half = dim // 2, f_k = exp(-ln(10000) k / (half - 1)) for k = 0..half-1,
    emb = [sin(t f_0..f_{half-1}), cos(t f_0..f_{half-1})].

    Args:
        t: (B,) integer timesteps (the paper's t, 1..T). dim: even width >= 4.
        dtype: output dtype (computed in float64, cast once).
    Returns:
        emb: (B, dim). No backward: t is an integer input.
    """
    t = np.asarray(t)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"t: expected a 1-D integer array, got dtype {t.dtype}, shape {t.shape}")
    if int(dim) != dim or dim < 4 or dim % 2:
        raise ValueError(f"dim: expected an even integer >= 4, got {dim}")
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / (half - 1))  # (half,)
    arg = t.astype(np.float64)[:, None] * freqs[None, :]  # (B, half)
    emb = np.concatenate([np.sin(arg), np.cos(arg)], axis=1)  # (B, dim)
    return emb.astype(dtype, copy=False)


def fourier_features_forward(x, freqs):
    r"""Fourier features of low-dimensional inputs (tiny-diffusion style).

    out = [x, sin(x_d f_k), cos(x_d f_k)], sin and cos blocks d-major (column D + d F + k holds
    sin(x_d f_k), column D + D F + d F + k holds cos(x_d f_k)).

    Args:
        x: (N, D). freqs: (F,) fixed frequencies, cast to x's dtype.
    Returns:
        out: (N, D + 2 D F); cache: (x, f, sin(x f), cos(x f)), the last two (N, D, F).
    """
    check_array("x", x, ndim=2)
    freqs = np.asarray(freqs)
    if freqs.ndim != 1 or not np.all(np.isfinite(freqs)):
        raise ValueError(f"freqs: expected a finite 1-D array, got shape {freqs.shape}")
    f = freqs.astype(x.dtype)
    N = x.shape[0]
    arg = x[:, :, None] * f  # (N, D, F)
    s, c = np.sin(arg), np.cos(arg)
    out = np.concatenate([x, s.reshape(N, -1), c.reshape(N, -1)], axis=1)  # (N, D + 2DF)
    return out, (x, f, s, c)


def fourier_features_backward(dout, cache):
    r"""Backward of :func:`fourier_features_forward`:
    dx_d = dout_x_d + sum_k f_k (dsin_dk cos(x_d f_k) - dcos_dk sin(x_d f_k)). Returns dx (N, D)."""
    x, f, s, c = cache
    N, D = x.shape
    F = f.shape[0]
    check_array("dout", dout, shape=(N, D + 2 * D * F))
    ds = dout[:, D : D + D * F].reshape(N, D, F)
    dc = dout[:, D + D * F :].reshape(N, D, F)
    return dout[:, :D] + ((ds * c - dc * s) * f).sum(axis=2)


# ----------------------------------------------------------------------------------------------
# Plumbing: the residual sum, channel concat, nearest upsampling, dropout


def add(a, b):
    """a + b (b broadcasting against a): a residual sum or the time projection added over H, W.
    Its backward is the identity for each input (and :func:`sum_hw` for a broadcast one)."""
    return a + b


def sum_hw(x):
    """x (N, C, H, W) summed over H and W: (N, C), the gradient of a (N, C) term broadcast."""
    return x.sum(axis=(2, 3))


def concat_forward(a, b):
    """Concatenate along channels (axis 1), as the U-Net's skip connections do.

    Args:
        a: (N, Ca, ...), b: (N, Cb, ...) with equal trailing dims and dtype.
    Returns:
        out: (N, Ca + Cb, ...); cache: Ca (the split point).
    """
    check_array("a", a)
    if a.ndim < 2:
        raise ValueError(f"a: expected at least 2 dims (N, C, ...), got shape {a.shape}")
    check_array("b", b, shape=(a.shape[0], None) + a.shape[2:])
    check_same_dtype(a, b=b)
    return np.concatenate([a, b], axis=1), a.shape[1]


def concat_backward(dout, cache):
    """Backward of :func:`concat_forward`. Returns (da, db): dout split at Ca."""
    Ca = cache
    return dout[:, :Ca], dout[:, Ca:]


def upsample2x_forward(x):
    """Nearest-neighbour 2x upsampling: out[n, c, i, j] = x[n, c, i // 2, j // 2].

    Args:
        x: (N, C, H, W). Returns out (N, C, 2H, 2W); cache: x.shape.
    """
    check_array("x", x, ndim=4)
    return x.repeat(2, axis=2).repeat(2, axis=3), x.shape


def upsample2x_backward(dout, cache):
    """Backward of :func:`upsample2x_forward`: each input pixel sums its 2x2 block of dout."""
    N, C, H, W = cache
    check_array("dout", dout, shape=(N, C, 2 * H, 2 * W))
    return dout.reshape(N, C, H, 2, W, 2).sum(axis=(3, 5))  # (N, C, H, W)


def dropout_forward(x, p, rng):
    """Inverted dropout: keep each unit with probability 1 - p, scale kept units by 1/(1 - p).

    Args:
        x: any shape. p: drop probability in [0, 1).
        rng: np.random.Generator, or None for evaluation (the identity).
    Returns:
        out: shape of x; cache: the scaled mask (dtype of x), or None for the identity.
    """
    check_array("x", x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: expected a drop probability in [0, 1), got {p}")
    if rng is None or p == 0.0:
        return x, None
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1.0 - p)
    return x * mask, mask


def dropout_backward(dout, cache):
    """Backward of :func:`dropout_forward`: dx = dout * mask (dout itself for the identity)."""
    mask = cache
    if mask is None:
        return dout
    check_array("dout", dout, shape=mask.shape)
    return dout * mask


# ----------------------------------------------------------------------------------------------
# Convolution: im2col + one matmul; its backward: two matmuls and col2im, the adjoint of im2col


def im2col(x, k, stride, pad):
    """Unroll x (N, C, H, W) into cols (C k k, N Ho Wo): row (c k + di) k + dj holds channel c
    shifted by (di, dj), so cols[r, (n, i, j)] = x_pad[n, c, i s + di, j s + dj]."""
    N, C, H, W = x.shape
    Ho, Wo = conv_out_size(H, k, stride, pad), conv_out_size(W, k, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))  # (N, C, H + 2p, W + 2p)
    cols = np.empty((C, k, k, N, Ho, Wo), dtype=x.dtype)
    for di in range(k):
        for dj in range(k):
            tap = xp[:, :, di : di + stride * Ho : stride, dj : dj + stride * Wo : stride]
            cols[:, di, dj] = tap.transpose(1, 0, 2, 3)  # (C, N, Ho, Wo)
    return cols.reshape(C * k * k, N * Ho * Wo)


def col2im(dcols, x_shape, k, stride, pad):
    """The adjoint of :func:`im2col`: scatter dcols (C k k, N Ho Wo) back onto (N, C, H, W),
    summing where the taps overlap."""
    N, C, H, W = x_shape
    Ho, Wo = conv_out_size(H, k, stride, pad), conv_out_size(W, k, stride, pad)
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=dcols.dtype)
    d6 = dcols.reshape(C, k, k, N, Ho, Wo)
    for di in range(k):
        for dj in range(k):
            tap = d6[:, di, dj].transpose(1, 0, 2, 3)  # (N, C, Ho, Wo)
            dxp[:, :, di : di + stride * Ho : stride, dj : dj + stride * Wo : stride] += tap
    return dxp[:, :, pad : pad + H, pad : pad + W]


def conv2d_forward(x, w, b, stride=1, pad=None):
    """2D convolution (cross-correlation, as in every deep-learning library):

        out[n, f, i, j] = b[f] + sum_{c, di, dj} w[f, c, di, dj] x_pad[n, c, i s + di, j s + dj]
                        = (w2 @ cols)[f, (n, i, j)] + b[f],   w2 = w.reshape(F, C k k).

    Args:
        x: (N, C, H, W). w: (F, C, k, k). b: (F,). Same dtype.
        stride: s >= 1 (stride 2, pad 1 halves even sizes: the U-Net's downsampling).
        pad: zeros on every side; default k // 2 ("same" size for stride 1 and odd k).
    Returns:
        out: (N, F, Ho, Wo), Ho = (H + 2 pad - k) // s + 1; cache: (x.shape, cols, w, stride, pad).
    """
    stride, pad = check_conv(x, w, b, stride, pad)
    N, C, H, W = x.shape
    F, k = w.shape[0], w.shape[2]
    Ho, Wo = conv_out_size(H, k, stride, pad), conv_out_size(W, k, stride, pad)
    cols = im2col(x, k, stride, pad)  # (C k k, N Ho Wo)
    out = w.reshape(F, -1) @ cols + b[:, None]  # (F, N Ho Wo)
    out = out.reshape(F, N, Ho, Wo).transpose(1, 0, 2, 3)  # (N, F, Ho, Wo)
    return np.ascontiguousarray(out), (x.shape, cols, w, stride, pad)


def conv2d_backward(dout, cache):
    """Backward of :func:`conv2d_forward`:

        dw2 = dout2 @ cols^T,   db = sum of dout,   dx = col2im(w2^T @ dout2),

    with dout2 = dout as (F, N Ho Wo). Returns dx (N, C, H, W), dw (F, C, k, k), db (F,)."""
    x_shape, cols, w, stride, pad = cache
    N, _, H, W = x_shape
    F, k = w.shape[0], w.shape[2]
    Ho, Wo = conv_out_size(H, k, stride, pad), conv_out_size(W, k, stride, pad)
    check_array("dout", dout, shape=(N, F, Ho, Wo))
    dout2 = dout.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N Ho Wo)
    dw = (dout2 @ cols.T).reshape(w.shape)  # (F, C, k, k)
    dx = col2im(w.reshape(F, -1).T @ dout2, x_shape, k, stride, pad)  # (N, C, H, W)
    return dx, dw, dout2.sum(axis=1)


# ----------------------------------------------------------------------------------------------
# Group normalisation (Wu & He 2018), and GroupNorm then SiLU as the blocks apply them


def groupnorm_forward(x, gamma, beta, G, eps=1e-5):
    r"""GroupNorm: per image n and group g of C/G channels, over the group's channels and pixels,

        xhat = (x - mean) / sqrt(var + eps),   out[c] = gamma[c] xhat[c] + beta[c].

    Args:
        x: (N, C, H, W). gamma, beta: (C,). G: groups, a divisor of C. eps: added to var.
    Returns:
        out: (N, C, H, W); cache: (xhat, gamma, rstd, G), rstd = 1/sqrt(var + eps) (N, G, 1).
    """
    check_groupnorm(x, gamma, beta, G, eps)
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)  # (N, G, C/G H W)
    rstd = 1.0 / np.sqrt(xg.var(axis=2, keepdims=True) + eps)  # (N, G, 1)
    xhat = ((xg - xg.mean(axis=2, keepdims=True)) * rstd).reshape(x.shape)  # (N, C, H, W)
    out = gamma[:, None, None] * xhat + beta[:, None, None]
    return out, (xhat, gamma, rstd, G)


def groupnorm_backward(dout, cache):
    r"""Backward of :func:`groupnorm_forward` (per group, dxhat = dout gamma):

        dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(var + eps),
        dgamma[c] = sum_{n,p} dout xhat,   dbeta[c] = sum_{n,p} dout.

    Returns dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    xhat, gamma, rstd, G = cache
    check_array("dout", dout, shape=xhat.shape)
    N = xhat.shape[0]
    dxhat = (dout * gamma[:, None, None]).reshape(N, G, -1)  # (N, G, C/G H W)
    xh = xhat.reshape(N, G, -1)
    m1 = dxhat.mean(axis=2, keepdims=True)
    m2 = (dxhat * xh).mean(axis=2, keepdims=True)
    dx = (rstd * (dxhat - m1 - xh * m2)).reshape(xhat.shape)
    return dx, (dout * xhat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))


def groupnorm_silu_forward(x, gamma, beta, G, eps=1e-5):
    """out = SiLU(GroupNorm(x)), the pair every residual block and the output head apply.
    Cache: (groupnorm cache, silu cache)."""
    y, c_gn = groupnorm_forward(x, gamma, beta, G, eps)
    out, c_silu = silu_forward(y)
    return out, (c_gn, c_silu)


def groupnorm_silu_backward(dout, cache):
    """Backward of :func:`groupnorm_silu_forward`. Returns dx, dgamma, dbeta."""
    c_gn, c_silu = cache
    return groupnorm_backward(silu_backward(dout, c_silu), c_gn)


# ----------------------------------------------------------------------------------------------
# Single-head self-attention over the H W positions (PixelCNN++ / Transformer block)


def dot_product_attention_forward(q, k, v):
    r"""h_i = sum_j A[i, j] v_j with A = softmax_j(q_i . k_j / sqrt(C)).

    Args:
        q, k, v: (N, C, P) queries, keys, values at P positions.
    Returns:
        h: (N, C, P); cache: (q, k, v, A) with A (N, P, P), rows summing to 1.
    """
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[1]))
    S = np.matmul(q.transpose(0, 2, 1), k) * scale  # (N, P, P): S[n, i, j] = q_i . k_j / sqrt(C)
    S -= S.max(axis=2, keepdims=True)  # softmax is shift invariant; avoids overflow
    A = np.exp(S)
    A /= A.sum(axis=2, keepdims=True)  # (N, P, P)
    return np.matmul(v, A.transpose(0, 2, 1)), (q, k, v, A)  # (N, C, P)


def dot_product_attention_backward(dh, cache):
    r"""Backward of :func:`dot_product_attention_forward`, with the softmax Jacobian
    dS = A * (dA - sum_j dA A):  dv = dh A,  dA = dh^T v,  dq = k dS^T / sqrt(C),  dk = q dS /
    sqrt(C). Returns dq, dk, dv (N, C, P)."""
    q, k, v, A = cache
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[1]))
    dv = np.matmul(dh, A)  # (N, C, P): dv_j = sum_i A[i, j] dh_i
    dA = np.matmul(dh.transpose(0, 2, 1), v)  # (N, P, P): dA[i, j] = dh_i . v_j
    dS = A * (dA - (dA * A).sum(axis=2, keepdims=True))  # (N, P, P)
    return np.matmul(k, dS.transpose(0, 2, 1)) * scale, np.matmul(q, dS) * scale, dv


def attention_forward(x, w_qkv, b_qkv, w_out, b_out):
    """Self-attention over the pixels (no residual; the block adds it):

        [q; k; v] = w_qkv x + b_qkv,   h = attention(q, k, v),   out = w_out h + b_out,

    the projections being 1x1 convolutions (matrices over the channels).

    Args:
        x: (N, C, H, W), already group-normalised. w_qkv: (3C, C), rows [query; key; value];
        b_qkv: (3C,). w_out: (C, C); b_out: (C,).
    Returns:
        out: (N, C, H, W); cache: (x, w_qkv, w_out, h, attention cache).
    """
    check_attention(x, w_qkv, b_qkv, w_out, b_out)
    N, C, H, W = x.shape
    x3 = x.reshape(N, C, H * W)  # (N, C, P)
    qkv = w_qkv @ x3 + b_qkv[:, None]  # (N, 3C, P)
    h, c_att = dot_product_attention_forward(qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :])
    out = w_out @ h + b_out[:, None]  # (N, C, P)
    return out.reshape(x.shape), (x3, w_qkv, w_out, h, c_att)


def attention_backward(dout, cache):
    """Backward of :func:`attention_forward`.
    Returns dx (N, C, H, W), dw_qkv (3C, C), db_qkv (3C,), dw_out (C, C), db_out (C,)."""
    x3, w_qkv, w_out, h, c_att = cache
    N, C, P = x3.shape
    check_array("dout", dout, shape=(N, C, None, None))
    d3 = dout.reshape(N, C, P)
    dw_out, db_out = (d3 @ h.transpose(0, 2, 1)).sum(axis=0), d3.sum(axis=(0, 2))
    dq, dk, dv = dot_product_attention_backward(w_out.T @ d3, c_att)
    dqkv = np.concatenate([dq, dk, dv], axis=1)  # (N, 3C, P)
    dw_qkv, db_qkv = (dqkv @ x3.transpose(0, 2, 1)).sum(axis=0), dqkv.sum(axis=(0, 2))
    return (w_qkv.T @ dqkv).reshape(dout.shape), dw_qkv, db_qkv, dw_out, db_out


__all__ = [
    "linear_forward", "linear_backward", "silu_forward", "silu_backward",
    "gelu_forward", "gelu_backward", "timestep_embedding",
    "fourier_features_forward", "fourier_features_backward", "add", "sum_hw",
    "concat_forward", "concat_backward", "upsample2x_forward", "upsample2x_backward",
    "dropout_forward", "dropout_backward", "conv2d_forward", "conv2d_backward",
    "groupnorm_forward", "groupnorm_backward", "groupnorm_silu_forward", "groupnorm_silu_backward",
    "dot_product_attention_forward", "dot_product_attention_backward",
    "attention_forward", "attention_backward",
]  # fmt: skip
