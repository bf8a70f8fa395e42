r"""GroupNorm (Wu & He 2018), fast: Numba kernels on worker threads, and GroupNorm + SiLU fused.

Paper: Ho et al. (2020), Appendix B: "We replaced weight normalization with group normalization".
For each image n and group g of C/G channels, with statistics over the group's channels and pixels,

    mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps),
    out[c] = gamma[c] xhat[c] + beta[c].

Backward (per group, L = C/G H W elements, dxhat = dout gamma):

    dgamma[c] = sum_{n,p} dout xhat,   dbeta[c] = sum_{n,p} dout,
    dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(var + eps).
"""

from __future__ import annotations

import numpy as np

from ddpm_ref.nn._checks import check_array, check_groupnorm, check_same_dtype
from ddpm_ref.nn.fast import kernels, threads

_BLOCK = 1 << 16  # elements per block of groupnorm_silu_*: a block's arrays stay in L2 cache


def _grad_arrays(dout, x):
    """dout checked and C-contiguous, and the arrays a backward pass fills: dx (N, C, H, W) and
    the per-image sums dgamma_n, dbeta_n (N, C) in float64, reduced over n by the caller."""
    check_array("dout", dout, shape=x.shape)
    check_same_dtype(x, dout=dout)
    N, C = x.shape[:2]
    sums = np.empty((2, N, C), dtype=np.float64)
    return np.ascontiguousarray(dout), np.empty_like(x), sums[0], sums[1]


def groupnorm_forward(x, gamma, beta, G, eps=1e-5):
    """GroupNorm with a learned per-channel scale gamma and shift beta.

    Args:
        x: (N, C, H, W) float32 or float64.
        gamma, beta: (C,) same dtype.
        G: number of groups; must divide C.
        eps: added to the variance.
    Returns:
        out: (N, C, H, W).
        cache: (x, gamma, mean, rstd, G) with mean, rstd = 1/sqrt(var + eps) of shape (N, G).
    """
    check_groupnorm(x, gamma, beta, G, eps)
    N, C, H, W = x.shape
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)  # (N, C, H, W)
    mean = np.empty((N, G), dtype=x.dtype)
    rstd = np.empty((N, G), dtype=x.dtype)
    x3, out3 = x.reshape(N, C, H * W), out.reshape(N, C, H * W)
    # images in parallel: each worker normalises its own range
    threads.map_ranges(
        lambda a, z: kernels.groupnorm_fwd(
            x3[a:z], gamma, beta, G, eps, out3[a:z], mean[a:z], rstd[a:z]
        ),
        N,
        grain=threads.image_grain(x),
    )
    return out, (x, gamma, mean, rstd, G)


def groupnorm_backward(dout, cache):
    """Backward of :func:`groupnorm_forward`.

    Args:
        dout: (N, C, H, W) upstream gradient.
        cache: (x, gamma, mean, rstd, G) from the forward pass.
    Returns:
        dx (N, C, H, W), dgamma (C,), dbeta (C,).
    """
    x, gamma, mean, rstd, G = cache
    N, C, H, W = x.shape
    dout, dx, dgamma_n, dbeta_n = _grad_arrays(dout, x)
    d3, x3, dx3 = dout.reshape(N, C, -1), x.reshape(N, C, -1), dx.reshape(N, C, -1)
    threads.map_ranges(
        lambda a, z: kernels.groupnorm_bwd(
            d3[a:z], x3[a:z], gamma, mean[a:z], rstd[a:z], G, dx3[a:z], dgamma_n[a:z], dbeta_n[a:z]
        ),
        N,
        grain=threads.image_grain(x),
    )

    return dx, dgamma_n.sum(axis=0).astype(x.dtype), dbeta_n.sum(axis=0).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# GroupNorm followed by SiLU, as every residual block and the output head apply them


def groupnorm_silu_forward(x, gamma, beta, G, eps=1e-5):
    """out = SiLU(GroupNorm(x)): the same arithmetic, and bitwise the same result, as

        y, gn_cache = groupnorm_forward(x, gamma, beta, G, eps)
        out, silu_cache = silu_forward(y)

    but one block of a few images at a time, so that the SiLU reads the normalised block while
    it is still in cache (run separately, the two layers stream the whole batch through main
    memory about three more times).

    Args and shapes: as :func:`groupnorm_forward`.
    Returns:
        out: (N, C, H, W).
        cache: (gn_cache, silu_cache), the caches the two layers would return.
    """
    check_groupnorm(x, gamma, beta, G, eps)
    N, C, H, W = x.shape
    x = np.ascontiguousarray(x)
    y, t, out = np.empty_like(x), np.empty_like(x), np.empty_like(x)  # (N, C, H, W) each
    mean = np.empty((N, G), dtype=x.dtype)
    rstd = np.empty((N, G), dtype=x.dtype)
    x3, y3 = x.reshape(N, C, H * W), y.reshape(N, C, H * W)
    nb = max(1, _BLOCK // (C * H * W))  # images per block

    def run(a, z):  # images a..z-1, in a worker thread
        for n0 in range(a, z, nb):
            n1 = min(z, n0 + nb)
            kernels.groupnorm_fwd(
                x3[n0:n1], gamma, beta, G, eps, y3[n0:n1], mean[n0:n1], rstd[n0:n1]
            )
            yf, tf, of = y[n0:n1].reshape(-1), t[n0:n1].reshape(-1), out[n0:n1].reshape(-1)
            np.multiply(yf, 0.5, out=tf)  # then as silu_forward: t = tanh(y / 2) ...
            np.tanh(tf, out=tf)
            kernels.silu_fwd(yf, tf, of)  # ... becomes sigma(y), and out = y sigma(y)

    threads.map_ranges(run, N, grain=threads.image_grain(x))
    return out, ((x, gamma, mean, rstd, G), (y, t))


def groupnorm_silu_backward(dout, cache):
    """Backward of :func:`groupnorm_silu_forward`, block by block as the forward (bitwise the
    same as silu_backward followed by groupnorm_backward).

    Returns:
        dx (N, C, H, W), dgamma (C,), dbeta (C,).
    """
    (x, gamma, mean, rstd, G), (y, sig) = cache
    N, C, H, W = x.shape
    dout, dx, dgamma_n, dbeta_n = _grad_arrays(dout, x)
    x3, dx3 = x.reshape(N, C, -1), dx.reshape(N, C, -1)
    nb = max(1, _BLOCK // (C * H * W))

    def run(a, z):
        dy = np.empty((min(nb, z - a), C, H * W), dtype=x.dtype)  # this worker's scratch
        for n0 in range(a, z, nb):
            n1 = min(z, n0 + nb)
            d = dy[: n1 - n0]  # dL/dy of the block, y = GroupNorm(x)
            kernels.silu_bwd(
                dout[n0:n1].reshape(-1), y[n0:n1].reshape(-1), sig[n0:n1].reshape(-1), d.reshape(-1)
            )
            kernels.groupnorm_bwd(
                d, x3[n0:n1], gamma, mean[n0:n1], rstd[n0:n1], G,
                dx3[n0:n1], dgamma_n[n0:n1], dbeta_n[n0:n1],
            )  # fmt: skip

    threads.map_ranges(run, N, grain=threads.image_grain(x))
    return dx, dgamma_n.sum(axis=0).astype(x.dtype), dbeta_n.sum(axis=0).astype(x.dtype)
