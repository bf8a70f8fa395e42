"""Argument checks shared by the layers: ValueErrors that name the argument (architecture.md)."""

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
    want = ""
    if shape is not None:
        ndim = len(shape)
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims {want}, got shape {a.shape}")
    if shape is not None and any(s not in (None, d) for s, d in zip(shape, a.shape, strict=True)):
        raise ValueError(f"{name}: expected shape {want}, got {a.shape}")


def check_same_dtype(x, **others):
    """Raise ValueError unless every keyword array has x's dtype (no silent float64 upcast)."""
    for name, a in others.items():
        if a.dtype != x.dtype:
            raise ValueError(f"{name}: expected dtype {x.dtype} (that of the input), got {a.dtype}")
