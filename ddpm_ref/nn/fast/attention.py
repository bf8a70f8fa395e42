r"""Single-head self-attention over the pixels of a feature map, fast: the q, k, v and output
projections are the fast 1x1 convolutions (one large matmul per range of images, not N small ones);
the softmax over positions is :func:`ddpm_ref.nn.layers.dot_product_attention_forward` itself.

Paper: Ho et al. (2020), Appendix B: "self-attention blocks at the 16 x 16 resolution". The maths,
and the plain twin this is tested against, are in :func:`ddpm_ref.nn.layers.attention_forward`.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref.nn._checks import check_array, check_attention
from ddpm_ref.nn.fast.conv import conv2d_backward, conv2d_forward
from ddpm_ref.nn.layers import dot_product_attention_backward, dot_product_attention_forward


def attention_forward(x, w_qkv, b_qkv, w_out, b_out):
    """As :func:`ddpm_ref.nn.layers.attention_forward`: x (N, C, H, W) -> out (N, C, H, W).

    Cache: (the attention cache, the caches of the two 1x1 convolutions)."""
    check_attention(x, w_qkv, b_qkv, w_out, b_out)
    N, C, H, W = x.shape
    qkv, c_qkv = conv2d_forward(x, w_qkv.reshape(3 * C, C, 1, 1), b_qkv, pad=0)  # (N, 3C, H, W)
    qkv = qkv.reshape(N, 3 * C, H * W)
    h, c_att = dot_product_attention_forward(qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :])
    out, c_out = conv2d_forward(h.reshape(x.shape), w_out.reshape(C, C, 1, 1), b_out, pad=0)
    return out, (c_att, c_qkv, c_out)


def attention_backward(dout, cache):
    """As :func:`ddpm_ref.nn.layers.attention_backward`.
    Returns dx (N, C, H, W), dw_qkv (3C, C), db_qkv (3C,), dw_out (C, C), db_out (C,)."""
    c_att, c_qkv, c_out = cache
    x_shape = c_qkv[0].shape  # (N, C, H, W)
    N, C = x_shape[:2]
    check_array("dout", dout, shape=x_shape)
    dh, dw_out, db_out = conv2d_backward(dout, c_out)
    dq, dk, dv = dot_product_attention_backward(dh.reshape(N, C, -1), c_att)
    dqkv = np.concatenate([dq, dk, dv], axis=1).reshape(N, 3 * C, *x_shape[2:])  # (N, 3C, H, W)
    dx, dw_qkv, db_qkv = conv2d_backward(dqkv, c_qkv)
    return dx, dw_qkv.reshape(3 * C, C), db_qkv, dw_out.reshape(C, C), db_out
