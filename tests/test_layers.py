"""Tests for both tiers of layers, ddpm_ref.nn.layers (plain) and ddpm_ref.nn.fast (the engine
room): every backward against centred differences (float64), forward passes against naive
definitions, dtypes, gradient accumulation and bad-input errors. (tests/test_fast.py holds the two
tiers equal to each other and tests the engine's own machinery.)"""

import math

import numpy as np
import pytest

from ddpm_ref.nn import fast, layers
from ddpm_ref.nn.gradcheck import check_layer, numerical_grad, rel_error

TOL = 1e-6  # gradient checks in float64 with h = 1e-5: correct gradients give ~1e-8


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(params=["plain", "fast"])
def L(request):
    """Each test runs on both tiers: the same names and signatures, the same maths."""
    return layers if request.param == "plain" else fast


def _naive_conv(x, w, b, s, p):
    N, C, H, W = x.shape
    F, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    out = np.empty((N, F, Ho, Wo))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    patch = xp[n, :, i * s : i * s + k, j * s : j * s + k]
                    out[n, f, i, j] = np.sum(patch * w[f]) + b[f]
    return out


# ---------------------------------------------------------------------------------------------
# Gradient checks


def test_linear_grad(rng, L):
    args = [rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)]
    assert max(check_layer(L.linear_forward, L.linear_backward, args, rng=rng)) < TOL


def test_linear_backward_without_dx(rng, L):
    # a network's first layer asks for no input gradient: the same dw, db, and no dx
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    out, cache = L.linear_forward(x, w, b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = L.linear_backward(dout, cache)
    none, dw2, db2 = L.linear_backward(dout, cache, need_dx=False)
    assert none is None and dx.shape == x.shape
    np.testing.assert_array_equal(dw, dw2)
    np.testing.assert_array_equal(db, db2)


@pytest.mark.parametrize("name", ["silu", "gelu"])
def test_activation_grad(rng, name, L):
    fwd, bwd = getattr(L, f"{name}_forward"), getattr(L, f"{name}_backward")
    # |x| <= 4: far enough into the tails to test them, while GELU's gradient (which falls like
    # a Gaussian density) stays well above the finite-difference noise
    x = rng.uniform(-4, 4, size=(3, 7))
    assert check_layer(fwd, bwd, [x], rng=rng)[0] < TOL


def test_fourier_features_grad(rng, L):
    x = rng.standard_normal((5, 2))
    freqs = np.array([1.0, 2.0, 4.0])
    errs = check_layer(
        L.fourier_features_forward, L.fourier_features_backward, [x, freqs], wrt=[0], rng=rng
    )
    assert errs[0] < TOL


def test_plumbing_grads(rng, L):
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 2, 4, 5))
    assert max(check_layer(L.concat_forward, L.concat_backward, [a, b], rng=rng)) < TOL
    assert check_layer(L.upsample2x_forward, L.upsample2x_backward, [b], rng=rng)[0] < TOL


def test_dropout_grad(rng, L):
    # a fresh generator per call so every evaluation draws the same mask
    fwd = lambda x: L.dropout_forward(x, 0.3, np.random.default_rng(5))
    assert check_layer(fwd, L.dropout_backward, [rng.standard_normal((6, 7))], rng=rng)[0] < TOL


CONV_CASES = [  # (N, C, H, W, F, k, stride, pad)
    (2, 3, 5, 7, 4, 3, 1, None),  # "same" 3x3, odd non-square sizes
    (2, 3, 6, 6, 2, 3, 2, 1),  # the U-Net's stride-2 downsampling
    (2, 2, 7, 5, 3, 3, 2, 1),  # stride 2 on odd sizes
    (2, 4, 5, 5, 3, 1, 1, 0),  # 1x1 skip projection
    (1, 2, 6, 5, 3, 4, 3, 2),  # even kernel, stride 3, pad 2
    (2, 5, 6, 5, 2, 3, 1, None),  # F < C: dx by the transposed convolution
    (1, 3, 5, 6, 2, 4, 1, 1),  # F < C with an even kernel, output smaller than input
    (2, 3, 5, 5, 2, 1, 2, 0),  # strided 1x1 (not the 1x1 fast path)
    (2, 8, 6, 4, 9, 3, 1, None),  # 3x3 "same", even sizes, >= 8 channels: Winograd F(2x2, 3x3)
    (3, 10, 4, 6, 8, 3, 1, 1),  # Winograd, F < C
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_matches_naive(rng, case, L):
    N, C, H, W, F, k, s, p = case
    x, w, b = (
        rng.standard_normal((N, C, H, W)),
        rng.standard_normal((F, C, k, k)),
        rng.standard_normal(F),
    )
    out, _ = L.conv2d_forward(x, w, b, stride=s, pad=p)
    assert rel_error(out, _naive_conv(x, w, b, s, k // 2 if p is None else p)) < 1e-12


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_grad(rng, case, L):
    N, C, H, W, F, k, s, p = case
    args = [
        rng.standard_normal((N, C, H, W)),
        rng.standard_normal((F, C, k, k)),
        rng.standard_normal(F),
    ]
    # 60 random coordinates per argument keep this fast (each costs two forward passes)
    errs = check_layer(
        L.conv2d_forward, L.conv2d_backward, args, rng=rng, n_coords=60, stride=s, pad=p
    )
    assert max(errs) < TOL


def test_groupnorm_silu_grad(rng, L):
    x = rng.standard_normal((3, 6, 3, 4)) * 2 + 1
    args = [x, rng.standard_normal(6), rng.standard_normal(6), 3]
    errs = check_layer(
        L.groupnorm_silu_forward, L.groupnorm_silu_backward, args, wrt=[0, 1, 2], rng=rng
    )
    assert max(errs) < TOL


def test_groupnorm_forward_normalises_groups(rng, L):
    x = rng.standard_normal((3, 8, 4, 5)) * 3 + 2
    out, _ = L.groupnorm_forward(x, np.ones(8), np.zeros(8), G=4, eps=1e-12)
    g = out.reshape(3, 4, -1)  # (N, G, C/G H W)
    np.testing.assert_allclose(g.mean(axis=2), 0.0, atol=1e-12)
    np.testing.assert_allclose(g.var(axis=2), 1.0, rtol=1e-10)


@pytest.mark.parametrize("G", [1, 2, 4])
def test_groupnorm_grad(rng, G, L):
    x = rng.standard_normal((2, 8, 3, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(8), rng.standard_normal(8)
    errs = check_layer(
        L.groupnorm_forward, L.groupnorm_backward, [x, gamma, beta, G], wrt=[0, 1, 2], rng=rng
    )
    assert max(errs) < TOL


def test_groupnorm_grad_one_channel_groups(rng, L):
    # G = C: each group is one channel; dx sums to zero per group, so some entries are tiny and
    # only the normwise error is meaningful (see rel_error)
    x = rng.standard_normal((2, 4, 3, 5))
    args = [x, rng.standard_normal(4), rng.standard_normal(4), 4]
    errs = check_layer(
        L.groupnorm_forward, L.groupnorm_backward, args, wrt=[0, 1, 2], rng=rng, normwise=True
    )
    assert max(errs) < TOL


def _attention_args(rng, C=4, H=3, W=2):
    return [
        rng.standard_normal((2, C, H, W)),
        rng.standard_normal((3 * C, C)) / math.sqrt(C),
        rng.standard_normal(3 * C),
        rng.standard_normal((C, C)),
        rng.standard_normal(C),
    ]


def test_attention_forward_matches_naive(rng, L):
    x, w_qkv, b_qkv, w_out, b_out = args = _attention_args(rng)
    out, _ = L.attention_forward(*args)
    C = x.shape[1]
    for n in range(x.shape[0]):
        X = x[n].reshape(C, -1)  # (C, P)
        q, k, v = np.split(w_qkv @ X + b_qkv[:, None], 3)
        S = q.T @ k / math.sqrt(C)
        A = np.exp(S) / np.exp(S).sum(axis=1, keepdims=True)
        ref = w_out @ (v @ A.T) + b_out[:, None]
        assert rel_error(out[n].reshape(C, -1), ref) < 1e-12


def test_attention_grad(rng, L):
    args = _attention_args(rng)
    errs = check_layer(L.attention_forward, L.attention_backward, args, rng=rng)
    assert max(errs[:2] + errs[3:]) < TOL
    # db_qkv has exact zeros (the key bias, next test): only its normwise error is meaningful
    errs = check_layer(L.attention_forward, L.attention_backward, args, rng=rng, normwise=True)
    assert errs[2] < TOL


def test_attention_key_bias_gets_zero_gradient(rng, L):
    # softmax is shift invariant and q.b_k is constant over keys: dL/db_k = 0 exactly
    args = _attention_args(rng)
    out, cache = L.attention_forward(*args)
    db_qkv = L.attention_backward(rng.standard_normal(out.shape), cache)[2]
    C = args[0].shape[1]
    assert np.max(np.abs(db_qkv[C : 2 * C])) < 1e-12 * np.max(np.abs(db_qkv))


def test_gradients_add_when_a_tensor_feeds_two_branches(rng, L):
    # h = SiLU(x) feeds a conv and (via concat) a skip; dL/dh must be the sum of both branches
    x = rng.standard_normal((2, 3, 4, 4))
    w, b = rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    g = rng.standard_normal((2, 5, 4, 4))

    def loss(x):
        h, _ = L.silu_forward(x)
        y, _ = L.conv2d_forward(h, w, b)
        z, _ = L.concat_forward(y, h)
        return np.sum(z * g)

    h, c_h = L.silu_forward(x)
    y, c_y = L.conv2d_forward(h, w, b)
    z, c_z = L.concat_forward(y, h)
    dy, dh_skip = L.concat_backward(g, c_z)
    dh_conv = L.conv2d_backward(dy, c_y)[0]
    dx = L.silu_backward(dh_conv + dh_skip, c_h)
    assert rel_error(dx, numerical_grad(loss, x)) < TOL
    # and neither branch alone is the gradient
    assert rel_error(L.silu_backward(dh_conv, c_h), numerical_grad(loss, x)) > 1e-2


# ---------------------------------------------------------------------------------------------
# Forward values and dtypes


def test_timestep_embedding_formula(L):
    t = np.array([1, 7, 1000])
    emb = L.timestep_embedding(t, 32)
    half = 16
    f = np.exp(-math.log(10000) * np.arange(half) / (half - 1))  # f_0 = 1, f_15 = 1e-4
    np.testing.assert_allclose(emb[:, 0], np.sin(t), rtol=1e-12)
    np.testing.assert_allclose(emb[:, half], np.cos(t), rtol=1e-12)
    np.testing.assert_allclose(emb[:, half - 1], np.sin(t * 1e-4), rtol=1e-12)
    np.testing.assert_allclose(emb[:, half:] ** 2 + emb[:, :half] ** 2, 1.0, rtol=1e-12)
    assert f[-1] == pytest.approx(1e-4, rel=1e-12)
    assert L.timestep_embedding(t, 32, dtype=np.float32).dtype == np.float32


def test_fourier_features_layout(L):
    x = np.array([[0.5, -1.0]])
    out, _ = L.fourier_features_forward(x, np.array([1.0, 3.0]))
    expect = [0.5, -1.0, np.sin(0.5), np.sin(1.5), np.sin(-1), np.sin(-3)]
    expect += [np.cos(0.5), np.cos(1.5), np.cos(-1), np.cos(-3)]
    np.testing.assert_allclose(out[0], expect, rtol=1e-12)


def test_upsample_and_dropout_values(rng, L):
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    up, _ = L.upsample2x_forward(x)
    np.testing.assert_array_equal(
        up[0, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    )
    x = np.ones((50, 40))
    out, mask = L.dropout_forward(x, 0.25, rng)
    assert set(np.unique(out)) <= {0.0, 1 / 0.75}
    assert L.dropout_forward(x, 0.25, None)[0] is x  # evaluation: identity


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng, dtype, L):
    r = lambda *s: rng.standard_normal(s).astype(dtype)
    x4 = r(2, 8, 4, 4)
    outs = [
        L.linear_forward(r(3, 4), r(4, 2), r(2))[0],
        L.silu_forward(x4)[0],
        L.gelu_forward(x4)[0],
        L.fourier_features_forward(r(3, 2), np.array([1.0, 2.0]))[0],
        L.conv2d_forward(x4, r(3, 8, 3, 3), r(3), stride=2, pad=1)[0],
        L.groupnorm_forward(x4, r(8), r(8), 4)[0],
        L.attention_forward(x4, r(24, 8), r(24), r(8, 8), r(8))[0],
        L.upsample2x_forward(x4)[0],
        L.dropout_forward(x4, 0.5, rng)[0],
    ]
    assert all(o.dtype == dtype for o in outs)
    _, cache = L.conv2d_forward(x4, r(3, 8, 3, 3), r(3))
    assert all(g.dtype == dtype for g in L.conv2d_backward(r(2, 3, 4, 4), cache))
    _, cache = L.groupnorm_forward(x4, r(8), r(8), 4)
    assert all(g.dtype == dtype for g in L.groupnorm_backward(x4, cache))


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_raise(rng, L):
    x4 = rng.standard_normal((2, 4, 5, 5))
    with pytest.raises(ValueError, match="^w:"):
        L.linear_forward(np.ones((3, 4)), np.ones((5, 2)), np.ones(2))
    with pytest.raises(ValueError, match="^b:"):
        L.linear_forward(np.ones((3, 4)), np.ones((4, 2)), np.ones(3))
    with pytest.raises(ValueError, match="^w: expected dtype float64"):
        L.linear_forward(np.ones((3, 4)), np.ones((4, 2), np.float32), np.ones(2))
    with pytest.raises(ValueError, match="^x: expected dtype float32 or float64"):
        L.silu_forward(np.ones((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="^x:"):
        L.conv2d_forward(np.ones((4, 5, 5)), np.ones((2, 4, 3, 3)), np.ones(2))
    with pytest.raises(ValueError, match="^w:"):
        L.conv2d_forward(x4, np.ones((2, 3, 3, 3)), np.ones(2))
    with pytest.raises(ValueError, match="^stride:"):
        L.conv2d_forward(x4, np.ones((2, 4, 3, 3)), np.ones(2), stride=0)
    with pytest.raises(ValueError, match="^G:"):
        L.groupnorm_forward(x4, np.ones(4), np.zeros(4), G=3)
    with pytest.raises(ValueError, match="^gamma:"):
        L.groupnorm_forward(x4, np.ones(5), np.zeros(4), G=2)
    with pytest.raises(ValueError, match="^G:"):
        L.groupnorm_silu_forward(x4, np.ones(4), np.zeros(4), G=3)
    with pytest.raises(ValueError, match="^beta:"):
        L.groupnorm_silu_forward(x4, np.ones(4), np.zeros(3), G=2)
    _, cache = L.groupnorm_silu_forward(x4, np.ones(4), np.zeros(4), G=2)
    with pytest.raises(ValueError, match="^dout:"):
        L.groupnorm_silu_backward(x4[:1], cache)
    with pytest.raises(ValueError, match="^w_qkv:"):
        L.attention_forward(x4, np.ones((4, 4)), np.ones(12), np.ones((4, 4)), np.ones(4))
    with pytest.raises(ValueError, match="^p:"):
        L.dropout_forward(x4, 1.0, rng)
    with pytest.raises(ValueError, match="^t:"):
        L.timestep_embedding(np.array([1.5]), 32)
    with pytest.raises(ValueError, match="^dim:"):
        L.timestep_embedding(np.array([1]), 31)
    with pytest.raises(ValueError, match="^b:"):
        L.concat_forward(x4, np.ones((2, 4, 5, 4)))
    _, cache = L.conv2d_forward(x4, np.ones((2, 4, 3, 3)), np.ones(2))
    with pytest.raises(ValueError, match="^dout:"):
        L.conv2d_backward(np.ones((2, 2, 4, 4)), cache)


