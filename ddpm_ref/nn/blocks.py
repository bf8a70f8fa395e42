r"""The U-Net's building blocks: the residual block and the self-attention block.

Paper: Ho, Jain, Abbeel (2020), Appendix B: "Our neural network architecture follows the backbone
of PixelCNN++, which is a U-Net based on a Wide ResNet. We replaced weight normalization with
group normalization ... Our 32x32 models use four feature map resolutions ... two convolutional
residual blocks per resolution level and self-attention blocks at the 16x16 resolution between
the convolutional blocks. Diffusion time t is specified by adding the Transformer sinusoidal
position embedding into each residual block." (As ``resnet_block`` / ``attn_block`` in Ho et
al.'s ``diffusion_tf/models/unet.py``.)

Each block is a pair of functions over the flat parameter dict, keyed by a dotted prefix:

    *_shapes(prefix, ...) -> {prefix + ".conv1.w": (F, C, 3, 3), ...}
    *_forward(params, prefix, x, ..., layers=L) -> (out, cache)
    *_backward(dout, cache) -> (dx, ..., grads)      # grads: {full key: array}

``layers`` is the tier the block is composed from: :mod:`ddpm_ref.nn.layers` (the default, plain
NumPy) or :mod:`ddpm_ref.nn.fast` (the same names, fast); the cache remembers it for the backward.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref.nn import layers as plain
from ddpm_ref.nn.base import fan_avg_uniform


def conv_shapes(prefix, cin, cout, k):
    """{prefix.w: (cout, cin, k, k), prefix.b: (cout,)}."""
    return {prefix + ".w": (cout, cin, k, k), prefix + ".b": (cout,)}


def norm_shapes(prefix, c):
    """GroupNorm scale and shift: {prefix.gamma: (c,), prefix.beta: (c,)}."""
    return {prefix + ".gamma": (c,), prefix + ".beta": (c,)}


def resblock_shapes(prefix, cin, cout, temb_dim):
    """Parameter shapes of :func:`resblock_forward`; ``.skip`` (1x1 conv) only if cin != cout."""
    shapes = {}
    shapes.update(norm_shapes(prefix + ".norm1", cin))
    shapes.update(conv_shapes(prefix + ".conv1", cin, cout, 3))
    shapes.update({prefix + ".temb.w": (temb_dim, cout), prefix + ".temb.b": (cout,)})
    shapes.update(norm_shapes(prefix + ".norm2", cout))
    shapes.update(conv_shapes(prefix + ".conv2", cout, cout, 3))
    if cin != cout:
        shapes.update(conv_shapes(prefix + ".skip", cin, cout, 1))
    return shapes


def attnblock_shapes(prefix, c):
    """Parameter shapes of :func:`attnblock_forward`: the q, k, v and output 1x1 convolutions
    as (C_out, C_in) matrices, q, k, v stacked in the rows of ``qkv.w``."""
    shapes = norm_shapes(prefix + ".norm", c)
    shapes.update({prefix + ".qkv.w": (3 * c, c), prefix + ".qkv.b": (3 * c,)})
    shapes.update({prefix + ".out.w": (c, c), prefix + ".out.b": (c,)})
    return shapes


def init_param(rng, key, shape, dtype, zero=False):
    """One parameter as Ho et al. initialise it: GroupNorm gamma = 1, beta = 0, biases 0,
    weights Glorot-uniform (``default_init``), and ``zero=True`` for the layers their code
    initialises at scale 1e-10 ~ 0 (the last conv of each block and of the network)."""
    if key.endswith(".gamma"):
        return np.ones(shape, dtype=dtype)
    if key.endswith(".beta") or key.endswith(".b"):
        return np.zeros(shape, dtype=dtype)
    if len(shape) == 4:  # conv (F, C, k, k): fans count the receptive field
        rf = shape[2] * shape[3]
        fan_in, fan_out = shape[1] * rf, shape[0] * rf
    else:  # dense (Din, Dout) or 1x1 conv (C_out, C_in): fan_avg is the same either way
        fan_in, fan_out = shape
    return fan_avg_uniform(rng, fan_in, fan_out, shape, dtype, scale=0.0 if zero else 1.0)


# ----------------------------------------------------------------------------------------------
# Residual block


def resblock_forward(params, prefix, x, temb_act, groups, dropout=0.0, rng=None, *, layers=plain):
    r"""Residual block with time conditioning (Ho et al.'s resnet_block).

        h = Conv3x3(SiLU(GN(x)))
        h = h + Linear(SiLU(temb))          broadcast over H, W
        h = Conv3x3(Dropout(SiLU(GN(h))))
        out = skip(x) + h                   skip = Conv1x1 if C_in != C_out else identity

    Args:
        params: the network's parameter dict; this block reads the keys under ``prefix``.
        x: (N, C_in, H, W).
        temb_act: (N, temb_dim), SiLU(temb), computed once and shared by every block.
        groups: GroupNorm groups. dropout: drop probability, active only when rng is given.
        layers: the tier (module) whose layer pairs the block calls.
    Returns:
        out: (N, C_out, H, W); cache for :func:`resblock_backward`.
    """
    p = lambda name: params[prefix + "." + name]
    h, c_gn1 = layers.groupnorm_silu_forward(x, p("norm1.gamma"), p("norm1.beta"), groups)
    h, c_conv1 = layers.conv2d_forward(h, p("conv1.w"), p("conv1.b"))  # (N, Cout, H, W)
    tproj, c_temb = layers.linear_forward(temb_act, p("temb.w"), p("temb.b"))  # (N, Cout)
    h = layers.add(h, tproj[:, :, None, None])  # h + tproj, broadcast over H, W
    h, c_gn2 = layers.groupnorm_silu_forward(h, p("norm2.gamma"), p("norm2.beta"), groups)
    h, c_drop = layers.dropout_forward(h, dropout, rng)
    h, c_conv2 = layers.conv2d_forward(h, p("conv2.w"), p("conv2.b"))  # (N, Cout, H, W)
    skip, c_skip = x, None  # the identity skip ...
    if prefix + ".skip.w" in params:  # ... or a 1x1 convolution when C_in != C_out
        skip, c_skip = layers.conv2d_forward(x, p("skip.w"), p("skip.b"))  # (N, Cout, H, W)
    h = layers.add(h, skip)  # (N, Cout, H, W)
    return h, (layers, prefix, c_gn1, c_conv1, c_temb, c_gn2, c_drop, c_conv2, c_skip)


def resblock_backward(dout, cache):
    """Backward of :func:`resblock_forward`.

    Returns:
        dx: (N, C_in, H, W); dtemb_act: (N, temb_dim), this block's share of the gradient of
        SiLU(temb) (the caller sums the shares of all blocks); grads: {key: array}.
    """
    layers, prefix, c_gn1, c_conv1, c_temb, c_gn2, c_drop, c_conv2, c_skip = cache
    k = lambda name: prefix + "." + name
    g = {}
    # out = skip(x) + h: dout flows into both branches
    dx_skip = dout  # identity skip
    if c_skip is not None:
        dx_skip, g[k("skip.w")], g[k("skip.b")] = layers.conv2d_backward(dout, c_skip)
    dh, g[k("conv2.w")], g[k("conv2.b")] = layers.conv2d_backward(dout, c_conv2)
    dh = layers.dropout_backward(dh, c_drop)
    dh, g[k("norm2.gamma")], g[k("norm2.beta")] = layers.groupnorm_silu_backward(dh, c_gn2)
    # h + tproj[:, :, None, None]: the projection's gradient sums over H, W
    dtproj = layers.sum_hw(dh)  # (N, Cout)
    dtemb_act, g[k("temb.w")], g[k("temb.b")] = layers.linear_backward(dtproj, c_temb)
    dh, g[k("conv1.w")], g[k("conv1.b")] = layers.conv2d_backward(dh, c_conv1)
    dx, g[k("norm1.gamma")], g[k("norm1.beta")] = layers.groupnorm_silu_backward(dh, c_gn1)
    dx = layers.add(dx, dx_skip)  # both branches read x: their gradients add
    return dx, dtemb_act, g


# ----------------------------------------------------------------------------------------------
# Self-attention block


def attnblock_forward(params, prefix, x, groups, *, layers=plain):
    r"""Single-head self-attention over the H W positions, with GroupNorm and a residual:

        out = x + Attention(GN(x)),   Attention = Conv1x1 -> softmax(q^T k / sqrt(C)) v -> Conv1x1

    Args:
        x: (N, C, H, W). Returns out: (N, C, H, W) and the cache.
    """
    p = lambda name: params[prefix + "." + name]
    h, c_gn = layers.groupnorm_forward(x, p("norm.gamma"), p("norm.beta"), groups)  # (N, C, H, W)
    h, c_attn = layers.attention_forward(h, p("qkv.w"), p("qkv.b"), p("out.w"), p("out.b"))
    h = layers.add(h, x)  # the residual
    return h, (layers, prefix, c_gn, c_attn)


def attnblock_backward(dout, cache):
    """Backward of :func:`attnblock_forward`. Returns (dx, grads)."""
    layers, prefix, c_gn, c_attn = cache
    k = lambda name: prefix + "." + name
    g = {}
    dh, g[k("qkv.w")], g[k("qkv.b")], g[k("out.w")], g[k("out.b")] = layers.attention_backward(
        dout, c_attn
    )
    dh, g[k("norm.gamma")], g[k("norm.beta")] = layers.groupnorm_backward(dh, c_gn)
    dh = layers.add(dh, dout)  # the residual branch: gradients add
    return dh, g
