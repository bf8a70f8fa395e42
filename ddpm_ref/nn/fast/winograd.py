r"""3x3 convolutions by Winograd's minimal filtering, F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", CVPR 2016), with the backward pass through the same algorithm.

Used by :func:`ddpm_ref.nn.fast.conv.conv2d_forward` (``method="auto"`` or ``"winograd"``) for
the U-Net's 3x3, stride-1, "same" convolutions on even-sized images (28x28 and 14x14 for MNIST);
it computes the same function as the im2col path, up to rounding. Each 2x2 output tile of each
filter f is

    Y = A^T [ sum_c (G g_{f,c} G^T) * (B^T d_c B) ] A,        (* elementwise, 4x4)

with d_c the tile's 4x4 input patch of channel c and g_{f,c} the 3x3 kernel. Over the 16
positions xi of the 4x4 Winograd domain the channel sum is a matmul, so a convolution is

    V = wino_in(x)          (16, C, tiles)    B^T d B of every patch          (kernels.wino_in)
    U = G w G^T             (16, F, C)        once per call                   (weight_transform)
    M[xi] = U[xi] @ V[xi]   (16, F, tiles)    16 matmuls, K = C
    out = wino_out(M) + b                     A^T M A of every tile           (kernels.wino_out)

which takes 16 C F multiplications per 2x2 tile where the direct convolution takes 36 C F. The
backward pass is the chain rule through these four linear steps:

    dM = wino_out^T(dout),  dU[xi] = dM[xi] @ V[xi]^T,  dV[xi] = U[xi]^T @ dM[xi],
    dx = wino_in^T(dV),     dw = G^T dU G,               db = sum of dout.

As in :mod:`ddpm_ref.nn.fast.conv`, each worker thread takes one range of images and works
through it in chunks small enough for its cache.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref.nn.fast import kernels, threads

CHUNK_BYTES = 2 << 20  # target size of one chunk's V and M buffers, per worker thread

# F(2x2, 3x3) weight transform: U = G g G^T (B^T and A^T are written out in the kernels)
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def applies(x_shape, w_shape, stride, pad) -> bool:
    """True for the convolutions this module computes: 3x3 kernels, stride 1, padding 1, even H and
    W, and at least 8 input and output channels (below that the 16 matmuls are too small)."""
    _, C, H, W = x_shape
    F, _, k, _ = w_shape
    return k == 3 and stride == 1 and pad == 1 and H % 2 == 0 and W % 2 == 0 and min(C, F) >= 8


def weight_transform(w):
    """U[4a + b, f, c] = (G w[f, c] G^T)[a, b]: (F, C, 3, 3) -> (16, F, C).

    As two 2-D matmuls over all (f, c) at once (``np.einsum("ai,fcij,bj->abfc", G, w, G)`` is the
    same thing, slower: this runs on the calling thread twice per convolution and step)."""
    F, C = w.shape[:2]
    G = _G.astype(w.dtype)
    T = w.reshape(F * C * 3, 3) @ G.T  # (F C 3, 4): w G^T, row i of each kernel
    T = T.reshape(F * C, 3, 4).transpose(1, 0, 2).reshape(3, F * C * 4)  # [i, (f, c, b)]
    U = (G @ T).reshape(4, F, C, 4)  # [a, f, c, b] = (G w G^T)[a, b]
    return np.ascontiguousarray(U.transpose(0, 3, 1, 2)).reshape(16, F, C)


def weight_transform_adjoint(dU):
    """dw[f, c] = G^T dU[:, f, c] G (the adjoint of :func:`weight_transform`): (16, F, C) ->
    (F, C, 3, 3)."""
    _, F, C = dU.shape
    G = _G.astype(dU.dtype)
    return np.einsum("ai,abfc,bj->fcij", G, dU.reshape(4, 4, F, C), G, optimize=True)


def tiles_per_image(H, W):
    """Tp = (H/2 + 1)(W/2 + 1) tile slots: the kernels' layout pads each image with one tile row
    and one tile column (see kernels.py)."""
    return (H // 2 + 1) * (W // 2 + 1)


def _chunk(N, C, F, H, W, itemsize):
    per_image = 16 * (C + F) * tiles_per_image(H, W) * itemsize  # V and M of one image
    return int(max(1, min(N, CHUNK_BYTES // per_image)))


def conv3x3_forward(x, w, b):
    """out = conv2d(x, w, b, stride=1, pad=1) by F(2x2, 3x3).

    Args:
        x: (N, C, H, W) C-contiguous, H and W even. w: (F, C, 3, 3). b: (F,). Same dtype.
    Returns:
        out: (N, F, H, W).
    """
    N, C, H, W = x.shape
    F = w.shape[0]
    U = weight_transform(w)  # (16, F, C)
    out = np.empty((N, F, H, W), dtype=x.dtype)
    nb = _chunk(N, C, F, H, W, x.itemsize)
    T = tiles_per_image(H, W)

    def run(a, z):  # images a..z-1, in a worker thread
        V_buf = np.empty(16 * C * nb * T, dtype=x.dtype)
        M_buf = np.empty(16 * F * nb * T, dtype=x.dtype)
        for n0 in range(a, z, nb):
            m = min(nb, z - n0)
            V = V_buf[: 16 * C * m * T].reshape(16, C, m * T)
            M = M_buf[: 16 * F * m * T].reshape(16, F, m * T)
            kernels.wino_in(x[n0 : n0 + m], V)
            np.matmul(U, V, out=M)  # (16, F, m T): 16 matmuls over the channels
            kernels.wino_out(M, b, out[n0 : n0 + m])

    threads.map_ranges(run, N)
    return out


def conv3x3_backward(dout, x, w):
    """Backward of :func:`conv3x3_forward` (dout C-contiguous). Returns dx, dw, db."""
    N, C, H, W = x.shape
    F = w.shape[0]
    U = weight_transform(w)  # (16, F, C)
    Ut = np.ascontiguousarray(U.transpose(0, 2, 1))  # (16, C, F)
    dx = np.empty_like(x)
    nb = _chunk(N, C, F, H, W, x.itemsize)
    T = tiles_per_image(H, W)

    def run(a, z):  # images a..z-1: writes their dx, returns their share of dU and db
        dU = np.zeros((16, F, C), dtype=x.dtype)
        dU_part = np.empty((16, F, C), dtype=x.dtype)
        db = np.zeros(F, dtype=x.dtype)
        V_buf = np.empty(16 * C * nb * T, dtype=x.dtype)
        M_buf = np.empty(16 * F * nb * T, dtype=x.dtype)
        for n0 in range(a, z, nb):
            m = min(nb, z - n0)
            V = V_buf[: 16 * C * m * T].reshape(16, C, m * T)
            dM = M_buf[: 16 * F * m * T].reshape(16, F, m * T)
            kernels.wino_in(x[n0 : n0 + m], V)  # the forward's V, recomputed
            kernels.wino_out_adj(dout[n0 : n0 + m], dM)
            np.matmul(dM, V.transpose(0, 2, 1), out=dU_part)  # (16, F, C)
            dU += dU_part
            np.matmul(Ut, dM, out=V)  # dV (16, C, m T), over V (no longer needed)
            kernels.wino_in_adj(V, dx[n0 : n0 + m])
            db += dout[n0 : n0 + m].sum(axis=(0, 2, 3))
        return dU, db

    dU, db = threads.sum_parts(threads.map_ranges(run, N))
    return dx, weight_transform_adjoint(dU), db
