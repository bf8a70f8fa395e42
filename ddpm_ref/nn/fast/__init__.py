# ruff: noqa: F401  (this module is a namespace: its imports are its contents)
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
plain twin in float64. The namespace starts as every plain layer and replaces those the engine
room makes faster (imported below); the others (GELU, the embeddings, dropout, the attention
core) are the plain functions themselves, so a new plain layer is in both tiers at once.
"""

# every plain layer first; the engine room's versions below replace theirs (isort: keep the order)
from ddpm_ref.nn.layers import *  # noqa: F403
from ddpm_ref.nn.layers import __all__ as _plain_names

# isort: split
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

__all__ = [*_plain_names, "adam_step"]
