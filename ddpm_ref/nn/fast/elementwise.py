r"""The fast tier's dense and elementwise layers: linear, SiLU, concat, nearest upsampling, the
residual sum, and the fused Adam step; the same names, signatures and results as their plain twins
in :mod:`ddpm_ref.nn.layers`, to rounding (SiLU bit for bit in float64; in float32 its kernel keeps
the intermediate sigma(x) in float64, so the last bit of a result can differ).

Large arrays are split into contiguous ranges over the worker threads (:mod:`.threads`); small ones
(an MLP's (256, 128) activations) run on the calling thread, where a hand-off would cost more.
"""

from __future__ import annotations

import math

import numpy as np

from ddpm_ref.nn._checks import check_array, check_same_dtype
from ddpm_ref.nn.fast import kernels, threads

_GRAIN = 1 << 16  # elements per worker below which a hand-off costs more than it saves


def linear_forward(x, w, b):
    """As :func:`ddpm_ref.nn.layers.linear_forward` (out = x w + b, bias added in place)."""
    check_array("x", x, ndim=2)
    check_array("w", w, shape=(x.shape[1], None))
    check_array("b", b, shape=(w.shape[1],))
    check_same_dtype(x, w=w, b=b)
    out = x @ w  # (N, Dout)
    out += b
    return out, (x, w)


def linear_backward(dout, cache, *, need_dx=True):
    """As :func:`ddpm_ref.nn.layers.linear_backward`; db = ones @ dout is one BLAS call, faster
    than dout.sum(axis=0) at the MLP's (256, 128) float32."""
    x, w = cache
    check_array("dout", dout, shape=(x.shape[0], w.shape[1]))
    dx = dout @ w.T if need_dx else None  # (N, Din)
    return dx, x.T @ dout, np.ones(x.shape[0], dtype=dout.dtype) @ dout


def silu_forward(x):
    r"""As :func:`ddpm_ref.nn.layers.silu_forward`: t = tanh(x/2) by NumPy (SIMD), then one
    kernel pass makes it sigma(x) = (1 + t)/2 and out = x sigma(x). Cache: (x, sigma(x))."""
    check_array("x", x)
    x = np.ascontiguousarray(x)
    t, out = np.empty_like(x), np.empty_like(x)
    xf, tf, of = x.reshape(-1), t.reshape(-1), out.reshape(-1)

    def run(a, z):  # elements a..z-1, in a worker thread
        np.multiply(xf[a:z], 0.5, out=tf[a:z])
        np.tanh(tf[a:z], out=tf[a:z])
        kernels.silu_fwd(xf[a:z], tf[a:z], of[a:z])

    threads.map_ranges(run, x.size, grain=_GRAIN)
    return out, (x, t)


def silu_backward(dout, cache):
    r"""As :func:`ddpm_ref.nn.layers.silu_backward`: dx = dout sigma (1 + x (1 - sigma))."""
    x, sig = cache
    check_array("dout", dout, shape=x.shape)
    check_same_dtype(x, dout=dout)
    d, xf, sf = np.ascontiguousarray(dout).reshape(-1), x.reshape(-1), sig.reshape(-1)
    dx = np.empty_like(x)
    dxf = dx.reshape(-1)
    threads.map_ranges(
        lambda a, z: kernels.silu_bwd(d[a:z], xf[a:z], sf[a:z], dxf[a:z]), x.size, grain=_GRAIN
    )
    return dx


def add(a, b):
    """As :func:`ddpm_ref.nn.layers.add`: a + b, image ranges on the worker threads."""
    return threads.add(a, b)


def sum_hw(x):
    """As :func:`ddpm_ref.nn.layers.sum_hw`: x (N, C, H, W) summed over H, W, image ranges."""
    return threads.sum_hw(x)


def concat_forward(a, b):
    """As :func:`ddpm_ref.nn.layers.concat_forward` (along channels); cache: Ca."""
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

    threads.map_ranges(run, N, grain=threads.image_grain(out))
    return out, Ca


def concat_backward(dout, cache):
    """As :func:`ddpm_ref.nn.layers.concat_backward`, as contiguous copies (the layers they flow
    into would each copy a view)."""
    Ca = cache
    return threads.copy(dout[:, :Ca]), threads.copy(dout[:, Ca:])


def upsample2x_forward(x):
    """As :func:`ddpm_ref.nn.layers.upsample2x_forward`: (N, C, H, W) -> (N, C, 2H, 2W)."""
    check_array("x", x, ndim=4)
    N, C, H, W = x.shape
    x = np.ascontiguousarray(x)
    out = np.empty((N, C, 2 * H, 2 * W), dtype=x.dtype)
    run = lambda n0, n1: kernels.upsample2x_fwd(x[n0:n1], out[n0:n1])  # images n0..n1-1
    threads.map_ranges(run, N, grain=threads.image_grain(x))
    return out, x.shape


def upsample2x_backward(dout, cache):
    """As :func:`ddpm_ref.nn.layers.upsample2x_backward`: each pixel sums its 2x2 block."""
    N, C, H, W = cache
    check_array("dout", dout, shape=(N, C, 2 * H, 2 * W))
    dout = np.ascontiguousarray(dout)
    dx = np.empty((N, C, H, W), dtype=dout.dtype)
    run = lambda n0, n1: kernels.upsample2x_bwd(dout[n0:n1], dx[n0:n1])  # images n0..n1-1
    threads.map_ranges(run, N, grain=threads.image_grain(dx))
    return dx


def adam_step(p, g, m, v, lr, beta1, beta2, eps, step):
    r"""As :func:`ddpm_ref.optim.adam_step` (one bias-corrected Adam step on one array), in one
    fused kernel pass that reads p, g, m, v and writes the new p, m, v (NumPy needs about twelve),
    using sqrt(v / bias2) + eps = (sqrt(v) + eps sqrt(bias2)) / sqrt(bias2). Returns (p, m, v)."""
    bias1, bias2 = 1.0 - beta1**step, 1.0 - beta2**step
    step_size = lr * math.sqrt(bias2) / bias1
    eps_hat = eps * math.sqrt(bias2)
    dt = p.dtype.type  # the scalars in the arrays' dtype: float32 stays float32
    p_new, m_new, v_new = (np.empty(p.shape, dtype=p.dtype) for _ in range(3))
    flat = lambda a: np.ascontiguousarray(a).reshape(-1)  # a 1-D view (a copy if not contiguous)
    outs = (p_new.reshape(-1), m_new.reshape(-1), v_new.reshape(-1))
    kernels.adam(flat(p), flat(g), flat(m), flat(v), dt(1.0 - beta1), dt(1.0 - beta2),
                 dt(step_size), dt(eps_hat), *outs)  # fmt: skip
    return p_new, m_new, v_new
