r"""2D convolution by im2col + BLAS matmul, with its hand-written backward pass.

Paper: Ho et al. (2020), Appendix B: the U-Net's 3x3 convolutions, stride-2 downsampling
convolutions and 1x1 skip projections are all :func:`conv2d_forward`.

For a chunk of m images the input is unrolled into cols (C k k, m Ho Wo) (:func:`kernels.im2col`),
so the convolution is one matmul

    out[f, (n, i, j)] = sum_r w2[f, r] cols[r, (n, i, j)] + b[f],   w2 = w.reshape(F, C k k),

and the backward pass is two matmuls and the adjoint of im2col:

    dw2 = dout2 @ cols^T,   dcols = w2^T @ dout2,   dx = col2im(dcols),   db = sum of dout.

Images are processed in chunks sized so that cols stays in cache (about ``CHUNK_BYTES``); the
whole-batch cols would be 9x the input and cost more memory traffic than the matmul itself.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref.nn import kernels
from ddpm_ref.nn._checks import check_array, check_same_dtype

CHUNK_BYTES = 4 << 20  # target size of one chunk's cols buffer


def _chunk_size(N, bytes_per_image):
    return int(max(1, min(N, CHUNK_BYTES // max(1, bytes_per_image))))


def conv_out_size(n, k, stride, pad):
    """Output length along one spatial axis: floor((n + 2 pad - k) / stride) + 1."""
    return (n + 2 * pad - k) // stride + 1


def conv2d_forward(x, w, b, stride=1, pad=None):
    """2D convolution (cross-correlation, as in every deep-learning library).

    out[n, f, i, j] = b[f] + sum_{c, di, dj} w[f, c, di, dj] x_pad[n, c, i s + di, j s + dj].

    Args:
        x: (N, C, H, W) float32 or float64.
        w: (F, C, k, k) same dtype, square odd or even k.
        b: (F,) same dtype.
        stride: s >= 1 (stride 2 with pad 1 halves even sizes: the U-Net's downsampling).
        pad: zero padding on every side; default k // 2 ("same" size for stride 1, odd k).
    Returns:
        out: (N, F, Ho, Wo), Ho = (H + 2 pad - k) // s + 1.
        cache: (x, w, stride, pad).
    """
    check_array("x", x, ndim=4)
    check_array("w", w, ndim=4)
    N, C, H, W = x.shape
    F, Cw, k, k2 = w.shape
    if Cw != C or k2 != k:
        raise ValueError(
            f"w: expected shape (F, {C}, k, k) for x of shape {x.shape}, got {w.shape}"
        )
    check_array("b", b, shape=(F,))
    check_same_dtype(x, w=w, b=b)
    pad = k // 2 if pad is None else pad
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, got {stride}")
    if int(pad) != pad or pad < 0:
        raise ValueError(f"pad: expected an integer >= 0, got {pad}")
    Ho, Wo = conv_out_size(H, k, stride, pad), conv_out_size(W, k, stride, pad)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"x: spatial size {(H, W)} too small for k={k}, pad={pad}")

    x = np.ascontiguousarray(x)
    K, P = C * k * k, Ho * Wo
    w2 = w.reshape(F, K)  # (F, C k k)
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)  # (N, F, Ho, Wo)
    out3 = out.reshape(N, F, P)
    nb = _chunk_size(N, K * P * x.itemsize)
    cols_buf = np.empty(K * nb * P, dtype=x.dtype)
    res_buf = np.empty(F * nb * P, dtype=x.dtype)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        cols = cols_buf[: K * m * P].reshape(K, m, P)  # (C k k, m, Ho Wo)
        kernels.im2col(x[n0 : n0 + m], k, stride, pad, cols)
        res = res_buf[: F * m * P].reshape(F, m * P)  # (F, m Ho Wo)
        np.matmul(w2, cols.reshape(K, m * P), out=res)
        kernels.fm_to_mf_bias(res.reshape(F, m, P), b, out3[n0 : n0 + m])
    return out, (x, w, stride, pad)


def conv2d_backward(dout, cache):
    """Backward of :func:`conv2d_forward`.

    Args:
        dout: (N, F, Ho, Wo) upstream gradient.
        cache: (x, w, stride, pad) from the forward pass.
    Returns:
        dx (N, C, H, W), dw (F, C, k, k), db (F,).
    """
    x, w, stride, pad = cache
    N, C, H, W = x.shape
    F, _, k, _ = w.shape
    Ho, Wo = conv_out_size(H, k, stride, pad), conv_out_size(W, k, stride, pad)
    check_array("dout", dout, shape=(N, F, Ho, Wo))
    check_same_dtype(x, dout=dout)
    dout = np.ascontiguousarray(dout)
    K, P = C * k * k, Ho * Wo
    w2 = w.reshape(F, K)  # (F, C k k)
    dout3 = dout.reshape(N, F, P)
    db = dout3.sum(axis=(0, 2))  # (F,)
    dw2 = np.zeros((F, K), dtype=x.dtype)  # (F, C k k)
    dw_part = np.empty((F, K), dtype=x.dtype)
    dx = np.empty_like(x)  # (N, C, H, W)
    nb = _chunk_size(N, K * P * x.itemsize)
    cols_buf = np.empty(K * nb * P, dtype=x.dtype)
    d_buf = np.empty(F * nb * P, dtype=x.dtype)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        d2 = d_buf[: F * m * P].reshape(F, m, P)  # (F, m, Ho Wo)
        kernels.mf_to_fm(dout3[n0 : n0 + m], d2)
        cols = cols_buf[: K * m * P].reshape(K, m, P)  # (C k k, m, Ho Wo)
        kernels.im2col(x[n0 : n0 + m], k, stride, pad, cols)
        # dw2 += dout2 @ cols^T, summed over chunks
        np.matmul(d2.reshape(F, m * P), cols.reshape(K, m * P).T, out=dw_part)
        dw2 += dw_part
        # dcols = w2^T @ dout2, written over cols (no longer needed)
        np.matmul(w2.T, d2.reshape(F, m * P), out=cols.reshape(K, m * P))
        kernels.col2im(cols, k, stride, pad, dx[n0 : n0 + m])
    return dx, dw2.reshape(w.shape), db
