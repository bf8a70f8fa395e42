r"""The engine room: the layers of :mod:`ddpm_ref.nn.layers` with the same names and signatures,
made fast (CS231n's ``fast_layers.py``, lifted to a folder).

    kernels.py      every Numba kernel, each next to its NumPy twin, and one dispatch table
    threads.py      worker threads (one range of images per core) and per-thread BLAS control
    conv.py         conv2d by im2col or Winograd: ``conv2d_forward(..., method="auto")``
    winograd.py     Winograd's F(2x2, 3x3) for the 3x3 "same" convolutions
    norm.py         GroupNorm, and GroupNorm + SiLU fused block by block
    attention.py    self-attention with the fast 1x1 convolutions as its projections
    elementwise.py  linear, SiLU, concat, upsampling, the residual sum, the fused Adam step

A network built with ``fast=True`` (the default) calls this namespace where a ``fast=False``
network calls :mod:`ddpm_ref.nn.layers`; ``tests/test_fast.py`` holds every pair equal to its
plain twin in float64. Layers whose plain body is already as fast as it gets (GELU, the
embeddings, dropout) are the plain functions themselves.
"""

from ddpm_ref.nn.fast.attention import attention_backward, attention_forward
from ddpm_ref.nn.fast.conv import conv2d_backward, conv2d_forward
from ddpm_ref.nn.fast.elementwise import (
    adam_step,
    add,
    concat_backward,
    concat_forward,
    linear_backward,
    linear_forward,
    silu_backward,
    silu_forward,
    sum_hw,
    upsample2x_backward,
    upsample2x_forward,
)
from ddpm_ref.nn.fast.norm import (
    groupnorm_backward,
    groupnorm_forward,
    groupnorm_silu_backward,
    groupnorm_silu_forward,
)
from ddpm_ref.nn.layers import (
    dot_product_attention_backward,
    dot_product_attention_forward,
    dropout_backward,
    dropout_forward,
    fourier_features_backward,
    fourier_features_forward,
    gelu_backward,
    gelu_forward,
    timestep_embedding,
)

__all__ = [
    "linear_forward", "linear_backward", "silu_forward", "silu_backward",
    "gelu_forward", "gelu_backward", "timestep_embedding",
    "fourier_features_forward", "fourier_features_backward", "add", "sum_hw",
    "concat_forward", "concat_backward", "upsample2x_forward", "upsample2x_backward",
    "dropout_forward", "dropout_backward", "conv2d_forward", "conv2d_backward",
    "groupnorm_forward", "groupnorm_backward", "groupnorm_silu_forward", "groupnorm_silu_backward",
    "dot_product_attention_forward", "dot_product_attention_backward",
    "attention_forward", "attention_backward", "adam_step",
]  # fmt: skip
