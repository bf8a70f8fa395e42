r"""Assignment "backward" (lecture 8): backward passes by hand, checked by finite differences.

Fill in the bodies, then grade your file:

    python -m ddpm_ref.grade backward backward.py

Each layer is a pair: ``*_forward(...) -> (out, cache)`` and ``*_backward(dout, cache)`` that
returns the gradient of L with respect to each input, where dout = dL/dout. The backward reads
what it needs from the cache; it never recomputes the forward. NumPy only (not ddpm_ref.nn).
The grader checks your gradients against centred finite differences
(ddpm_ref.nn.gradcheck.check_layer): a right backward has relative error ~1e-9, a wrong one ~1.
"""

import numpy as np  # noqa: F401 (you will need it)


def linear_forward(x, w, b):
    r"""out = x w + b.

    Args:
        x: (N, Din). w: (Din, Dout). b: (Dout,).
    Returns:
        out (N, Dout), cache (whatever backward needs).
    """
    raise NotImplementedError


def linear_backward(dout, cache):
    r"""Gradients of linear_forward.

    Args:
        dout: (N, Dout).
    Returns:
        dx (N, Din), dw (Din, Dout), db (Dout,).

    Hint: write out[n, j] = sum_i x[n, i] w[i, j] + b[j] and differentiate one entry; check
    every shape against the input's.
    """
    raise NotImplementedError


def silu_forward(x):
    r"""out = x sigma(x) with the logistic sigma(x) = 1 / (1 + e^{-x}); any shape.

    Returns:
        out (shape of x), cache.
    """
    raise NotImplementedError


def silu_backward(dout, cache):
    r"""dx for silu_forward. Hint: sigma'(x) = sigma(x) (1 - sigma(x)); use the product rule."""
    raise NotImplementedError


def residual_forward(x, w, b):
    r"""A residual block out = x + silu(x) w + b (w square: (D, D)), built from your two layers.

    Returns:
        out (N, D), cache (the two layers' caches).
    """
    raise NotImplementedError


def residual_backward(dout, cache):
    r"""dx, dw, db of residual_forward.

    Hint: x feeds two branches (the skip and the layers), so its gradient is the SUM of the
    gradients that come back along each one.
    """
    raise NotImplementedError
