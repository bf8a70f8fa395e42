r"""2D convolution, fast: im2col or Winograd, image ranges on worker threads.

Paper: Ho et al. (2020), Appendix B: the U-Net's 3x3 convolutions, stride-2 downsampling
convolutions and 1x1 skip projections are all :func:`conv2d_forward`. The same function as
:func:`ddpm_ref.nn.layers.conv2d_forward` (the plain twin it is tested against), by two routes:

- ``method="im2col"``: for a chunk of m images the input is unrolled into cols (C k k, m Ho Wo)
  (:func:`kernels.im2col`), so the convolution is one matmul

      out[f, (n, i, j)] = sum_r w2[f, r] cols[r, (n, i, j)] + b[f],   w2 = w.reshape(F, C k k),

  and the backward pass is two matmuls and the adjoint of im2col:

      dw2 = dout2 @ cols^T,   dcols = w2^T @ dout2,   dx = col2im(dcols),   db = sum of dout.

- ``method="winograd"``: Winograd's F(2x2, 3x3) (:mod:`.winograd`: 16 multiplications per output
  tile and channel pair where im2col takes 36), for 3x3 "same" convolutions on even-sized images
  with at least 8 channels (:func:`winograd.applies`).
- ``method="auto"`` (the default): Winograd where it applies, im2col elsewhere.

The batch is split into one contiguous range of images per core (:mod:`.threads`); each worker
thread processes its range in chunks of about ``CHUNK_BYTES`` of cols, small enough to stay in its
core's cache, with single-threaded matmuls.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref.nn._checks import check_array, check_conv, check_same_dtype, conv_out_size
from ddpm_ref.nn.fast import kernels, threads, winograd

CHUNK_BYTES = 2 << 20  # target size of one chunk's cols buffer, per worker thread
METHODS = ("auto", "im2col", "winograd")


def _chunk_size(N, bytes_per_image):
    return int(max(1, min(N, CHUNK_BYTES // max(1, bytes_per_image))))


def _route(method, x_shape, w_shape, stride, pad):
    """The route, "winograd" or "im2col"; ValueError for an unknown or inapplicable method."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    fits = winograd.applies(x_shape, w_shape, stride, pad)
    if method == "winograd" and not fits:
        raise ValueError(
            "method: 'winograd' needs a 3x3 kernel, stride 1, pad 1, even H and W and at least 8 "
            f"channels in and out; got x {x_shape}, w {w_shape}, stride {stride}, pad {pad}"
        )
    return "winograd" if (fits and method != "im2col") else "im2col"


def conv2d_forward(x, w, b, stride=1, pad=None, *, method="auto"):
    """2D convolution; arguments, shapes and result as :func:`ddpm_ref.nn.layers.conv2d_forward`,
    plus ``method`` ("auto", "im2col" or "winograd", see the module docstring).

    Returns:
        out: (N, F, Ho, Wo); cache: (x, w, stride, pad, route), route the method taken.
    """
    stride, pad = check_conv(x, w, b, stride, pad)
    route = _route(method, x.shape, w.shape, stride, pad)
    x = np.ascontiguousarray(x)
    if route == "winograd":
        return winograd.conv3x3_forward(x, w, b), (x, w, stride, pad, route)
    # (1x1 convolutions too: it beats np.matmul(w, x), N small multithreaded BLAS calls)
    return _forward_im2col(x, w, b, stride, pad), (x, w, stride, pad, route)


def _forward_im2col(x, w, b, stride, pad):
    """The convolution of :func:`conv2d_forward`, image ranges in parallel."""
    N, C, H, W = x.shape
    F, _, k, _ = w.shape
    Ho, Wo = conv_out_size(H, k, stride, pad), conv_out_size(W, k, stride, pad)
    w2 = w.reshape(F, C * k * k)  # (F, C k k)
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)  # (N, F, Ho, Wo)
    out3 = out.reshape(N, F, Ho * Wo)
    threads.map_ranges(lambda a, z: _forward_range(x, w2, b, k, stride, pad, out3, a, z), N)
    return out


def _forward_range(x, w2, b, k, stride, pad, out3, a, z):
    """Images a..z-1 of the forward pass, by chunks of im2col + one matmul each."""
    (F, K), P = w2.shape, out3.shape[2]
    nb = _chunk_size(z - a, K * P * x.itemsize)
    cols_buf = np.empty(K * nb * P, dtype=x.dtype)
    res_buf = np.empty(F * nb * P, dtype=x.dtype)
    for n0 in range(a, z, nb):
        m = min(nb, z - n0)
        cols = cols_buf[: K * m * P].reshape(K, m, P)  # (C k k, m, Ho Wo)
        kernels.im2col(x[n0 : n0 + m], k, stride, pad, cols)
        if m == 1:  # (F, 1 Ho Wo) is already the layout of out[n0]
            np.matmul(w2, cols.reshape(K, P), out=out3[n0])
            out3[n0] += b[:, None]
            continue
        res = res_buf[: F * m * P].reshape(F, m * P)  # (F, m Ho Wo)
        np.matmul(w2, cols.reshape(K, m * P), out=res)
        kernels.fm_to_mf_bias(res.reshape(F, m, P), b, out3[n0 : n0 + m])


def conv2d_backward(dout, cache):
    """Backward of :func:`conv2d_forward`.

    For stride 1 with fewer output than input channels, dx is computed as the forward
    convolution of dout with the flipped, transposed kernel (the "transposed convolution"):

        dx = conv2d(dout, w_t, pad = k - 1 - pad),  w_t[c, f, di, dj] = w[f, c, k-1-di, k-1-dj],

    which unrolls F rather than C channels; otherwise dx = col2im(w2^T @ dout2).

    Args:
        dout: (N, F, Ho, Wo) upstream gradient.
        cache: (x, w, stride, pad, route) from the forward pass (the backward takes its route).
    Returns:
        dx (N, C, H, W), dw (F, C, k, k), db (F,).
    """
    x, w, stride, pad, route = cache
    N, C, H, W = x.shape
    F, _, k, _ = w.shape
    Ho, Wo = conv_out_size(H, k, stride, pad), conv_out_size(W, k, stride, pad)
    check_array("dout", dout, shape=(N, F, Ho, Wo))
    check_same_dtype(x, dout=dout)
    dout = np.ascontiguousarray(dout)
    if route == "winograd":
        return winograd.conv3x3_backward(dout, x, w)
    dout3 = dout.reshape(N, F, Ho * Wo)  # (N, F, P)
    transposed = stride == 1 and F < C and pad <= k - 1
    dx, dw, db = _backward_im2col(x, w, dout3, stride, pad, want_dx=not transposed)
    if transposed:
        w_t = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # (C, F, k, k)
        dx = _forward_im2col(dout, w_t, np.zeros(C, dtype=x.dtype), 1, k - 1 - pad)
    return dx, dw, db


def _backward_im2col(x, w, dout3, stride, pad, want_dx):
    """dx by col2im (if want_dx, else None), dw and db, image ranges in parallel."""
    F, C, k, _ = w.shape
    w2 = w.reshape(F, C * k * k)  # (F, C k k)
    dx = np.empty_like(x) if want_dx else None  # (N, C, H, W)
    parts = threads.map_ranges(
        lambda a, z: _backward_range(x, w2, dout3, k, stride, pad, dx, a, z), x.shape[0]
    )
    dw2t, db = threads.sum_parts(parts)  # (C k k, F), (F,)
    return dx, np.ascontiguousarray(dw2t.T).reshape(w.shape), db


def _backward_range(x, w2, dout3, k, stride, pad, dx, a, z):
    """Images a..z-1 of the backward pass: returns their dw2^T and db, writes their dx (if
    dx given)."""
    (F, K), P = w2.shape, dout3.shape[2]
    dw2t = np.zeros((K, F), dtype=x.dtype)  # (C k k, F), dw2 transposed
    db = np.zeros(F, dtype=x.dtype)  # (F,), db = sum of dout over images and positions
    dw_part = np.empty((K, F), dtype=x.dtype)
    nb = _chunk_size(z - a, K * P * x.itemsize)
    cols_buf = np.empty(K * nb * P, dtype=x.dtype)
    d_buf = np.empty(F * nb * P, dtype=x.dtype)
    for n0 in range(a, z, nb):
        m = min(nb, z - n0)
        if m == 1:  # dout[n0] (F, Ho Wo) is already in the layout the matmuls want
            d2 = dout3[n0]
        else:
            d2 = d_buf[: F * m * P].reshape(F, m * P)  # (F, m Ho Wo)
            kernels.mf_to_fm(dout3[n0 : n0 + m], d2.reshape(F, m, P))
        cols = cols_buf[: K * m * P].reshape(K, m, P)  # (C k k, m, Ho Wo)
        kernels.im2col(x[n0 : n0 + m], k, stride, pad, cols)
        # dw2^T += cols @ dout2^T, summed over chunks (BLAS runs this form faster than
        # dout2 @ cols^T at these shapes)
        np.matmul(cols.reshape(K, m * P), d2.T, out=dw_part)
        dw2t += dw_part
        db += d2.sum(axis=1)
        if dx is not None:
            # dcols = w2^T @ dout2, written over cols (no longer needed)
            np.matmul(w2.T, d2, out=cols.reshape(K, m * P))
            kernels.col2im(cols, k, stride, pad, dx[n0 : n0 + m])
    return dw2t, db
