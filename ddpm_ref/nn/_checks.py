"""Argument checks shared by the layers of both tiers: ValueErrors that name the argument."""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_array(name, a, ndim=None, shape=None):
    """Raise ValueError unless ``a`` is a float32/float64 ndarray of the given ndim / shape.

    ``shape`` may contain None for "any size" along that axis; it implies ``ndim``.
    """
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims {_shape_str(shape)}, got shape {a.shape}")
    if shape is not None:
        for s, d in zip(shape, a.shape, strict=True):
            if s is not None and s != d:
                raise ValueError(f"{name}: expected shape {_shape_str(shape)}, got {a.shape}")


def _shape_str(shape):
    # "(3, ?, 5)" for (3, None, 5); built only for an error message (it costs more than a check)
    if shape is None:
        return ""
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


def check_same_dtype(x, **others):
    """Raise ValueError unless every keyword array has x's dtype (no silent float64 upcast)."""
    for name, a in others.items():
        if a.dtype != x.dtype:
            raise ValueError(f"{name}: expected dtype {x.dtype} (that of the input), got {a.dtype}")


def conv_out_size(n, k, stride, pad):
    """Output length along one spatial axis: floor((n + 2 pad - k) / stride) + 1."""
    return (n + 2 * pad - k) // stride + 1


def check_conv(x, w, b, stride, pad):
    """The checks of conv2d_forward (both tiers); returns (stride, pad), pad default k // 2."""
    check_array("x", x, ndim=4)
    check_array("w", w, ndim=4)
    F, Cw, k, k2 = w.shape
    if Cw != x.shape[1] or k2 != k:
        raise ValueError(
            f"w: expected shape (F, {x.shape[1]}, k, k) for x of shape {x.shape}, got {w.shape}"
        )
    check_array("b", b, shape=(F,))
    check_same_dtype(x, w=w, b=b)
    pad = k // 2 if pad is None else pad
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, got {stride}")
    if int(pad) != pad or pad < 0:
        raise ValueError(f"pad: expected an integer >= 0, got {pad}")
    H, W = x.shape[2:]
    if conv_out_size(H, k, stride, pad) < 1 or conv_out_size(W, k, stride, pad) < 1:
        raise ValueError(f"x: spatial size {(H, W)} too small for k={k}, pad={pad}")
    return int(stride), int(pad)


def check_groupnorm(x, gamma, beta, G, eps):
    """The checks of groupnorm_forward and groupnorm_silu_forward (both tiers)."""
    check_array("x", x, ndim=4)
    C = x.shape[1]
    check_array("gamma", gamma, shape=(C,))
    check_array("beta", beta, shape=(C,))
    check_same_dtype(x, gamma=gamma, beta=beta)
    if int(G) != G or G < 1 or C % G:
        raise ValueError(f"G: expected a positive divisor of C={C}, got {G}")
    if not eps > 0:
        raise ValueError(f"eps: expected a positive number, got {eps}")


def check_attention(x, w_qkv, b_qkv, w_out, b_out):
    """The checks of attention_forward (both tiers)."""
    check_array("x", x, ndim=4)
    C = x.shape[1]
    check_array("w_qkv", w_qkv, shape=(3 * C, C))
    check_array("b_qkv", b_qkv, shape=(3 * C,))
    check_array("w_out", w_out, shape=(C, C))
    check_array("b_out", b_out, shape=(C,))
    check_same_dtype(x, w_qkv=w_qkv, b_qkv=b_qkv, w_out=w_out, b_out=b_out)
