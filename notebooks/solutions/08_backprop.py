"""Solutions to the exercises of notebooks/08_backprop.ipynb. Run: python 08_backprop.py"""

import numpy as np

from ddpm_ref.nn.gradcheck import check_layer
from ddpm_ref.nn.layers import (
    conv2d_backward,
    conv2d_forward,
    linear_backward,
    linear_forward,
    silu_backward,
    silu_forward,
)

rng = np.random.default_rng(0)


# 8.1 softplus y = log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}) (no overflow); dy/dx = sigma(x)
def softplus_forward(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))), x


def softplus_backward(dout, cache):
    return dout * 0.5 * (1 + np.tanh(0.5 * cache))


x = rng.standard_normal((5, 4)) * 5
err = check_layer(
    softplus_forward, softplus_backward, [x], rng=rng, normwise=True
)  # tiny gradients at x << 0
assert max(err) < 1e-6
assert np.isfinite(softplus_forward(np.array([1000.0, -1000.0]))[0]).all()
print(f"8.1: softplus gradient check {max(err):.1e}")


# 8.2 y = layer2(SiLU(layer1(x))) + x Ws: x feeds two branches, so dx is the SUM of both branches'
# dx.
def fwd(x, w1, b1, w2, b2, ws, bs):
    h, c1 = linear_forward(x, w1, b1)
    a, c2 = silu_forward(h)
    y, c3 = linear_forward(a, w2, b2)
    s, c4 = linear_forward(x, ws, bs)
    return y + s, (c1, c2, c3, c4)


def bwd(dy, cache, forget=False):
    c1, c2, c3, c4 = cache
    da, dw2, db2 = linear_backward(dy, c3)
    dx1, dw1, db1 = linear_backward(silu_backward(da, c2), c1)
    dx2, dws, dbs = linear_backward(dy, c4)
    return (dx1 if forget else dx1 + dx2), dw1, db1, dw2, db2, dws, dbs


args = [
    rng.standard_normal((6, 5)),
    rng.standard_normal((5, 4)),
    rng.standard_normal(4),
    rng.standard_normal((4, 3)),
    rng.standard_normal(3),
    rng.standard_normal((5, 3)),
    rng.standard_normal(3),
]
right = check_layer(fwd, bwd, args, rng=rng)
wrong = check_layer(fwd, lambda d, c: bwd(d, c, forget=True), args, rng=rng)
assert max(right) < 1e-6 and wrong[0] > 0.1
print(f"8.2: dx error with the sum {right[0]:.1e}, with one branch only {wrong[0]:.2f}")

# 8.3 float32 (check_layer refuses it: gradient checks mean something only in float64).
# Rounding of f is ~1e-7 |f|, so the difference quotient carries an error ~1e-7 |f| / h, which
# falls as h grows; the truncation error grows like h^2 |f'''| for a nonlinear f. The convolution
# is *linear* in x (no truncation error: the bigger h the better), SiLU is not (the best h balances
# the two, near (1e-7)^(1/3)).
x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
b = np.zeros(3, np.float32)
g = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
_, cache = conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
layers = {
    "conv2d": (
        lambda xx: np.sum(conv2d_forward(xx, w, b)[0] * g[:, :3], dtype=np.float32),
        conv2d_backward(g.astype(np.float64), cache)[0],
    ),
    "SiLU": (
        lambda xx: np.sum(silu_forward(xx)[0] * g[:, :2], dtype=np.float32),
        silu_backward(g[:, :2].astype(np.float64), silu_forward(x.astype(np.float64))[1]),
    ),
}
for name, (f, d_true) in layers.items():
    errs = {}
    for h in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5):
        num = np.empty_like(d_true)
        flat = x.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + np.float32(h)
            fp = f(x)
            flat[i] = old - np.float32(h)
            fm = f(x)
            flat[i] = old
            num.reshape(-1)[i] = (fp - fm) / (2 * h)
        errs[h] = np.max(np.abs(num - d_true)) / np.max(np.abs(d_true))
    best = min(errs, key=errs.get)
    print(
        f"8.3: {name}, float32: errors {', '.join(f'h={h:g}: {e:.0e}' for h, e in errs.items())}; "
        f"best h = {best:g}"
    )
