r"""Single-head self-attention over the pixels of a feature map, with its backward pass.

Paper: Ho et al. (2020), Appendix B: "self-attention blocks at the 16 x 16 resolution" (the
PixelCNN++ / Transformer block of Vaswani et al. 2017). For x (N, C, H, W), P = H W positions:

    [q; k; v] = w_qkv x + b_qkv                 (a 1x1 convolution, each (N, C, P))
    S = q^T k / sqrt(C),  A = softmax over keys  (N, P, P): A[n, i, j] = attention of i on j
    h = v A^T                                   (N, C, P): h[:, :, i] = sum_j A[i, j] v[:, :, j]
    out = w_out h + b_out                       (a 1x1 convolution)

The residual and the GroupNorm before it belong to the caller. Backward, with dS from the softmax
Jacobian dS = A * (dA - sum_j dA A):

    dh = w_out^T dout,  dv = dh A,  dA = dh^T v,  dq = k dS^T / sqrt(C),  dk = q dS / sqrt(C).
"""

from __future__ import annotations

import numpy as np

from ddpm_ref.nn._checks import check_array, check_same_dtype
from ddpm_ref.nn.conv import conv2d_backward, conv2d_forward


def attention_forward(x, w_qkv, b_qkv, w_out, b_out):
    """Single-head self-attention (no residual).

    Args:
        x: (N, C, H, W) float32 or float64 (already group-normalised by the caller).
        w_qkv: (3C, C), rows [query; key; value]. b_qkv: (3C,).
        w_out: (C, C). b_out: (C,).
    Returns:
        out: (N, C, H, W).
        cache: (q, k, v, A, h, c_qkv, c_out) with q, k, v, h (N, C, P), A (N, P, P) and the
        caches of the two 1x1 convolutions.
    """
    check_array("x", x, ndim=4)
    N, C, H, W = x.shape
    check_array("w_qkv", w_qkv, shape=(3 * C, C))
    check_array("b_qkv", b_qkv, shape=(3 * C,))
    check_array("w_out", w_out, shape=(C, C))
    check_array("b_out", b_out, shape=(C,))
    check_same_dtype(x, w_qkv=w_qkv, b_qkv=b_qkv, w_out=w_out, b_out=b_out)
    P = H * W
    # the projections are 1x1 convolutions (one large matmul, not N small ones)
    qkv, c_qkv = conv2d_forward(x, w_qkv.reshape(3 * C, C, 1, 1), b_qkv, pad=0)  # (N, 3C, H, W)
    qkv = qkv.reshape(N, 3 * C, P)
    q, k, v = qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :]  # (N, C, P) each
    scale = x.dtype.type(1.0 / np.sqrt(C))
    S = np.matmul(q.transpose(0, 2, 1), k) * scale  # (N, P, P): S[n, i, j] = q_i . k_j / sqrt(C)
    S -= S.max(axis=2, keepdims=True)  # softmax is shift invariant; avoids overflow
    A = np.exp(S)
    A /= A.sum(axis=2, keepdims=True)  # (N, P, P), rows sum to 1
    h = np.matmul(v, A.transpose(0, 2, 1))  # (N, C, P)
    out, c_out = conv2d_forward(h.reshape(N, C, H, W), w_out.reshape(C, C, 1, 1), b_out, pad=0)
    return out, (q, k, v, A, h, c_qkv, c_out)


def attention_backward(dout, cache):
    """Backward of :func:`attention_forward`.

    Args:
        dout: (N, C, H, W) upstream gradient.
        cache: from the forward pass.
    Returns:
        dx (N, C, H, W), dw_qkv (3C, C), db_qkv (3C,), dw_out (C, C), db_out (C,).
    """
    q, k, v, A, h, c_qkv, c_out = cache
    N, C, P = h.shape
    check_array("dout", dout, shape=c_out[0].shape)
    check_same_dtype(h, dout=dout)
    scale = h.dtype.type(1.0 / np.sqrt(C))
    dh, dw_out, db_out = conv2d_backward(dout, c_out)
    dh = dh.reshape(N, C, P)  # (N, C, P)
    dv = np.matmul(dh, A)  # (N, C, P): dv_j = sum_i A[i, j] dh_i
    dA = np.matmul(dh.transpose(0, 2, 1), v)  # (N, P, P): dA[i, j] = dh_i . v_j
    # softmax backward, row by row: dS = A (dA - sum_j dA A)
    dS = A * (dA - (dA * A).sum(axis=2, keepdims=True))  # (N, P, P)
    dq = np.matmul(k, dS.transpose(0, 2, 1)) * scale  # (N, C, P)
    dk = np.matmul(q, dS) * scale  # (N, C, P)
    dqkv = np.concatenate([dq, dk, dv], axis=1)  # (N, 3C, P)
    x_shape = c_qkv[0].shape  # (N, C, H, W)
    dqkv = dqkv.reshape(N, 3 * C, x_shape[2], x_shape[3])
    dx, dw_qkv, db_qkv = conv2d_backward(dqkv, c_qkv)
    return dx, dw_qkv.reshape(3 * C, C), db_qkv, dw_out.reshape(C, C), db_out
