r"""Gradient checking: centred finite differences against hand-written backward passes.

Every backward pass in ddpm_ref (layers, networks, the ELBO terms) is held to

    df/dx_i ~= (f(x + h e_i) - f(x - h e_i)) / (2h),

whose error is O(h^2) truncation plus O(eps_machine / h) rounding: with h = 1e-5 in float64 both
are around 1e-10 relative to the scale of f, so a correct gradient shows a relative error below
1e-7 or so and a wrong one shows errors near 1. Checks are meaningful only in float64.
"""

from __future__ import annotations

import numpy as np


def rel_error(a, b, normwise=False):
    """Relative error between two arrays of the same shape.

    Elementwise (default, CS231n style): max_i |a_i - b_i| / max(1e-8, |a_i| + |b_i|). Strict:
    a coordinate whose true gradient is tiny (at the level of the finite-difference noise, about
    1e-10 times the scale of the loss) shows a large error although nothing is wrong.

    Normwise (``normwise=True``): max_i |a_i - b_i| / max(1e-8, max_i |a_i| + max_i |b_i|), the
    error relative to the array's scale; use it for gradients with exact or near zeros (a bias
    the softmax is invariant to, a 1-channel GroupNorm group, coordinates sampled from big nets).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"b: expected shape {a.shape} (that of a), got {b.shape}")
    if a.size == 0:
        return 0.0
    diff = np.abs(a - b)
    if normwise:
        return float(diff.max() / max(1e-8, np.abs(a).max() + np.abs(b).max()))
    return float(np.max(diff / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def _check_float64(name, x):
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{name}: expected a float64 array for gradient checking, got {got}")


def numerical_grad(f, x, h=1e-5, idx=None):
    r"""Centred-difference gradient of a scalar function f at x.

    x is perturbed in place (and restored), so f may read x through a closure or its argument.

    Args:
        f: callable f(x) -> scalar.
        x: float64 array.
        h: step size.
        idx: optional 1-D integer array of flat indices into x: only those coordinates are
            differenced (for big networks).
    Returns:
        grad: array shaped like x if idx is None, else (len(idx),) values at the flat indices.
    """
    _check_float64("x", x)
    flat = x.reshape(-1)  # a view: writes reach x
    if not np.shares_memory(flat, x):
        raise ValueError("x: expected a contiguous array (it is perturbed in place)")
    coords = np.arange(x.size) if idx is None else np.asarray(idx).reshape(-1)
    grad = np.empty(coords.shape[0], dtype=np.float64)
    for n, i in enumerate(coords):
        old = flat[i]
        flat[i] = old + h
        f_plus = float(f(x))
        flat[i] = old - h
        f_minus = float(f(x))
        flat[i] = old
        # df/dx_i ~= (f(x + h e_i) - f(x - h e_i)) / 2h
        grad[n] = (f_plus - f_minus) / (2.0 * h)
    return grad.reshape(x.shape) if idx is None else grad


def _pick_coords(size, n_coords, rng):
    if n_coords is None or n_coords >= size:
        return np.arange(size)
    if rng is None:
        # deterministic, evenly spread coordinates (no hidden randomness)
        return np.unique(np.linspace(0, size - 1, n_coords).round().astype(np.int64))
    return rng.choice(size, size=n_coords, replace=False)


def grad_check(f, params, grads, keys=None, n_coords=None, rng=None, h=1e-5, normwise=False):
    """Compare analytic gradients with centred differences, parameter by parameter.

    Args:
        f: callable f(params) -> scalar loss; reads the float64 arrays of ``params``.
        params: dict name -> float64 array (perturbed in place, restored).
        grads: dict name -> analytic gradient, same shapes.
        keys: names to check (default all of params).
        n_coords: check at most this many coordinates per key (default: all).
        rng: np.random.Generator choosing the coordinates; None -> evenly spaced ones.
        h: finite-difference step.
        normwise: passed to :func:`rel_error`.
    Returns:
        dict name -> worst relative error (:func:`rel_error`) over the checked coordinates.
    """
    keys = list(params) if keys is None else list(keys)
    errors = {}
    for k in keys:
        if k not in params or k not in grads:
            raise ValueError(f"keys: {k!r} missing from params or grads")
        p, g = params[k], np.asarray(grads[k])
        _check_float64(f"params[{k!r}]", p)
        if g.shape != p.shape:
            raise ValueError(f"grads[{k!r}]: expected shape {p.shape}, got {g.shape}")
        idx = _pick_coords(p.size, n_coords, rng)
        num = numerical_grad(lambda _: f(params), p, h=h, idx=idx)
        errors[k] = rel_error(g.reshape(-1)[idx], num, normwise=normwise)
    return errors


def check_layer(
    forward, backward, args, wrt=None, rng=None, h=1e-5, n_coords=None, normwise=False, **kwargs
):
    """Gradient-check a layer pair ``forward(*args, **kwargs) -> (out, cache)``, ``backward``.

    The scalar is L = sum(out * g) for a fixed random g (so every output coordinate matters);
    backward(g, cache) must return the gradients of the arguments listed in ``wrt``, in order.

    Args:
        forward, backward: the layer pair.
        args: list of positional arguments; those in ``wrt`` must be float64 arrays.
        wrt: indices into args that backward returns gradients for (default: all of them).
        rng: np.random.Generator for g (and coordinates when n_coords is set); default seed 0.
        n_coords: at most this many coordinates per argument.
        normwise: passed to :func:`rel_error`.
        kwargs: keyword arguments of forward (stride=2, ...).
    Returns:
        list of worst relative errors, one per index in ``wrt``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    args = list(args)
    wrt = list(range(len(args))) if wrt is None else list(wrt)
    out, cache = forward(*args, **kwargs)
    g = rng.standard_normal(out.shape)
    grads = backward(g, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) != len(wrt):
        raise ValueError(f"wrt: backward returned {len(grads)} gradients, wrt lists {len(wrt)}")
    loss = lambda: float(np.sum(forward(*args, **kwargs)[0] * g))
    params = {str(i): args[i] for i in wrt}
    named = {str(i): gi for i, gi in zip(wrt, grads, strict=True)}
    errs = grad_check(
        lambda _: loss(), params, named, n_coords=n_coords, rng=rng, h=h, normwise=normwise
    )
    return [errs[str(i)] for i in wrt]
