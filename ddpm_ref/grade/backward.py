r"""Assignment "backward": a layer's backward pass, checked by centred finite differences.

Paper: Ho, Jain, Abbeel (2020), Algorithm 1, line 5 (the gradient step) needs d L / d theta of
the network eps_theta; here its pieces: an affine layer, SiLU, and a residual block in which x
feeds two branches (their gradients add), each as a pair forward -> (out, cache), backward.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref.grade._common import rng
from ddpm_ref.grade._core import Assignment, Check, close, student_fn
from ddpm_ref.nn.gradcheck import check_layer

# centred differences with h = 1e-5 in float64: truncation ~h^2 = 1e-10, rounding ~1e-16 / h =
# 1e-11, so a right backward is below 1e-7; a wrong one (a sign, a transpose) is ~1e-1 or worse.
GRAD_TOL = 1e-6


def _gradcheck(m, fwd, bwd, args, names):
    errs = check_layer(student_fn(m, fwd), student_fn(m, bwd), args, rng=rng(20))
    for name, e in zip(names, errs, strict=True):
        if not e < GRAD_TOL:
            raise AssertionError(f"{bwd}: d{name} has relative error {e:.2g} against finite "
                                 f"differences (expected < {GRAD_TOL:g})")


def _linear_args(square=False):
    g = rng(21)
    x = g.standard_normal((6, 4))
    w = g.standard_normal((4, 4 if square else 5))
    return [x, w, g.standard_normal(w.shape[1])]


def _linear_fwd(m):
    x, w, b = _linear_args()
    out, _ = student_fn(m, "linear_forward")(x, w, b)
    close("linear_forward: x w + b", out, x @ w + b)


def _linear_bwd(m):
    _gradcheck(m, "linear_forward", "linear_backward", _linear_args(), ("x", "w", "b"))


def _silu_fwd(m):
    x = rng(22).standard_normal((5, 7))
    out, _ = student_fn(m, "silu_forward")(x)
    close("silu_forward: x sigma(x)", out, x / (1.0 + np.exp(-x)))


def _silu_bwd(m):
    _gradcheck(m, "silu_forward", "silu_backward", [rng(23).standard_normal((5, 7))], ("x",))


def _residual(m):
    x, w, b = _linear_args(square=True)
    out, _ = student_fn(m, "residual_forward")(x, w, b)
    close("residual_forward: x + silu(x) w + b", out, x + (x / (1.0 + np.exp(-x))) @ w + b)
    _gradcheck(m, "residual_forward", "residual_backward", [x, w, b], ("x", "w", "b"))


ASSIGNMENT = Assignment(
    name="backward",
    title="a layer's backward pass and its gradient check (lecture 8)",
    skeleton="backward.py",
    checks=(
        Check("linear_forward: out = x w + b", 1, _linear_fwd),
        Check("linear_backward: dx, dw, db against finite differences", 3, _linear_bwd),
        Check("silu_forward: out = x sigma(x)", 1, _silu_fwd),
        Check("silu_backward: dx against finite differences", 2, _silu_bwd),
        Check("residual block x + silu(x) w + b: the two branches' gradients add", 3, _residual),
    ),
)
