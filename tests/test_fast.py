"""Tests for the engine room ddpm_ref.nn.fast: every fast layer pair equal to its plain twin in
ddpm_ref.nn.layers (float64, forward and backward), the conv routes chosen by ``method=``, and the
machinery (chunking, worker threads, fused GroupNorm + SiLU, fork safety) changing nothing."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ddpm_ref.nn import fast as F
from ddpm_ref.nn import layers
from ddpm_ref.nn.fast import conv, elementwise, norm, threads, winograd
from ddpm_ref.nn.gradcheck import rel_error

# Two tiers compute the same function by different sums (im2col vs Winograd, Numba vs NumPy
# reductions, BLAS blockings): in float64 each output differs by a few roundings of its terms,
# relative error ~1e-15 for these O(1) inputs. 1e-12 leaves three orders of margin and still
# fails for any wrong index, sign or missing term (those give errors near 1).
TWIN_TOL = 1e-12


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _both_tiers(name, args, dout_fn, rng, **kw):
    """Forward and backward of layer `name` in both tiers; returns the worst relative error over
    the output and every gradient."""
    outs, dout = {}, None
    for tier in (layers, F):
        out, cache = getattr(tier, name + "_forward")(*args, **kw)
        dout = dout_fn(out.shape) if dout is None else dout  # the same dout for both
        grads = getattr(tier, name + "_backward")(dout, cache)
        outs[tier] = (out,) + (grads if isinstance(grads, tuple) else (grads,))
    return max(rel_error(a, b, normwise=True) for a, b in zip(outs[layers], outs[F], strict=True))


def test_the_tiers_have_the_same_names():
    assert set(layers.__all__) == set(F.__all__) - {"adam_step"}
    for name in layers.__all__:
        assert callable(getattr(F, name))


CONV_CASES = [  # (N, C, H, W, F, k, stride, pad, method)
    (3, 3, 5, 7, 4, 3, 1, None, "im2col"),
    (2, 3, 6, 6, 2, 3, 2, 1, "auto"),  # the U-Net's downsampling (im2col)
    (2, 4, 5, 5, 3, 1, 1, 0, "auto"),  # 1x1 skip projection
    (2, 5, 6, 5, 2, 3, 1, None, "im2col"),  # F < C: dx by the transposed convolution
    (1, 2, 6, 5, 3, 4, 3, 2, "auto"),  # even kernel, stride 3
    (2, 8, 6, 4, 9, 3, 1, None, "winograd"),
    (3, 10, 4, 6, 8, 3, 1, 1, "auto"),  # Winograd, F < C
    (3, 10, 4, 6, 8, 3, 1, 1, "im2col"),  # ... the same convolution by im2col
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_twins(rng, case):
    N, C, H, W, Fo, k, s, p, method = case
    args = [rng.standard_normal((N, C, H, W)), rng.standard_normal((Fo, C, k, k)),
            rng.standard_normal(Fo), s, p]  # fmt: skip
    x = args[0]
    plain_out = layers.conv2d_forward(*args)[0]
    fast_out, cache = F.conv2d_forward(*args, method=method)
    assert rel_error(plain_out, fast_out, normwise=True) < TWIN_TOL
    wino = method == "winograd" or (method == "auto" and min(C, Fo) >= 8 and k == 3 and s == 1)
    assert cache[-1] == ("winograd" if wino else "im2col")
    dout = rng.standard_normal(fast_out.shape)
    ref = layers.conv2d_backward(dout, layers.conv2d_forward(*args)[1])
    got = F.conv2d_backward(dout, cache)
    for a, b in zip(ref, got, strict=True):
        assert rel_error(a, b, normwise=True) < TWIN_TOL
    assert got[0].shape == x.shape


def test_conv2d_method_is_checked(rng):
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), np.zeros(4)
    with pytest.raises(ValueError, match="^method:"):
        F.conv2d_forward(x, w, b, method="fft")
    with pytest.raises(ValueError, match="^method: 'winograd' needs"):
        F.conv2d_forward(x, w, b, method="winograd")  # 3 channels: Winograd does not apply


@pytest.mark.parametrize("G", [1, 2, 4])
def test_groupnorm_twins(rng, G):
    x = rng.standard_normal((3, 8, 4, 5)) * 2 + 1
    args = [x, rng.standard_normal(8), rng.standard_normal(8), G]
    for name in ("groupnorm", "groupnorm_silu"):
        assert _both_tiers(name, args, rng.standard_normal, rng) < TWIN_TOL


def test_elementwise_and_dense_twins(rng):
    r = rng.standard_normal
    assert _both_tiers("linear", [r((6, 5)), r((5, 3)), r(3)], r, rng) < TWIN_TOL
    # SiLU is the same arithmetic in both tiers: bit for bit in float64, also split over workers
    assert _both_tiers("silu", [r((4, 70_000)) * 4], r, rng) == 0.0
    # (upsampling's backward adds each 2x2 block in another order)
    assert _both_tiers("upsample2x", [r((3, 2, 5, 4))], r, rng) < TWIN_TOL
    assert _both_tiers("concat", [r((3, 2, 5, 4)), r((3, 3, 5, 4))], r, rng) == 0.0
    a, b = r((3, 4, 5, 5)), r((3, 4, 1, 1))
    np.testing.assert_array_equal(F.add(a, b), layers.add(a, b))
    assert rel_error(F.sum_hw(a), layers.sum_hw(a)) < TWIN_TOL


def test_attention_twins(rng):
    C = 8
    r = rng.standard_normal
    args = [r((2, C, 4, 3)), r((3 * C, C)) / math.sqrt(C), r(3 * C), r((C, C)), r(C)]
    assert _both_tiers("attention", args, rng.standard_normal, rng) < TWIN_TOL


def test_fast_adam_step_is_the_textbook_step(rng):
    from ddpm_ref.optim import adam_step

    p, g, m = rng.standard_normal(103), rng.standard_normal(103), rng.standard_normal(103)
    v = rng.random(103)
    for step in (1, 2, 1000):
        ref = adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, step)
        got = F.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, step)
        for a, b in zip(ref, got, strict=True):
            assert rel_error(a, b) < TWIN_TOL


# ---------------------------------------------------------------------------------------------
# The engine's machinery changes nothing


def test_conv2d_chunking_changes_nothing(rng, monkeypatch):
    x, w, b = (
        rng.standard_normal((5, 3, 6, 6)),
        rng.standard_normal((4, 3, 3, 3)),
        rng.standard_normal(4),
    )
    dout = rng.standard_normal((5, 4, 6, 6))
    out, cache = F.conv2d_forward(x, w, b)
    grads = F.conv2d_backward(dout, cache)
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)  # one image per chunk
    out1, cache1 = F.conv2d_forward(x, w, b)
    grads1 = F.conv2d_backward(dout, cache1)
    assert rel_error(out, out1) < 1e-12
    assert max(rel_error(g, g1) for g, g1 in zip(grads, grads1, strict=True)) < 1e-12
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1 << 30)  # ... or all of them in one
    monkeypatch.setitem(threads._state, "n", 1)  # in the calling thread, no workers
    out1, cache1 = F.conv2d_forward(x, w, b)
    grads1 = F.conv2d_backward(dout, cache1)
    assert rel_error(out, out1) < 1e-12
    assert max(rel_error(g, g1) for g, g1 in zip(grads, grads1, strict=True)) < 1e-12


def test_winograd_applies_to_the_unets_same_convolutions():
    assert winograd.applies((2, 32, 28, 28), (32, 32, 3, 3), 1, 1)
    assert winograd.applies((2, 64, 14, 14), (64, 128, 3, 3), 1, 1)
    assert not winograd.applies((2, 64, 7, 7), (64, 64, 3, 3), 1, 1)  # odd size
    assert not winograd.applies((2, 32, 28, 28), (32, 32, 3, 3), 2, 1)  # downsampling
    assert not winograd.applies((2, 32, 28, 28), (64, 32, 1, 1), 1, 0)  # 1x1 skip
    assert not winograd.applies((2, 1, 28, 28), (32, 1, 3, 3), 1, 1)  # conv_in: one channel
    assert not winograd.applies((2, 32, 28, 28), (1, 32, 3, 3), 1, 1)  # the output conv


def test_winograd_weight_transform_and_its_adjoint(rng):
    w, dU = rng.standard_normal((5, 3, 3, 3)), rng.standard_normal((16, 5, 3))
    G = winograd._G
    U = winograd.weight_transform(w)
    np.testing.assert_allclose(U[4 * 2 + 1, 4, 0], (G @ w[4, 0] @ G.T)[2, 1], rtol=1e-12)
    assert rel_error(U, np.einsum("ai,fcij,bj->abfc", G, w, G).reshape(16, 5, 3)) < 1e-12
    dw = winograd.weight_transform_adjoint(dU)
    # <G w G^T, dU> = <w, G^T dU G>
    np.testing.assert_allclose(np.sum(U * dU), np.sum(w * dw), rtol=1e-12)


def test_winograd_matches_im2col_in_any_chunking(rng, monkeypatch):
    x, w, b = (
        rng.standard_normal((5, 8, 6, 6)),
        rng.standard_normal((9, 8, 3, 3)),
        rng.standard_normal(9),
    )
    dout = rng.standard_normal((5, 9, 6, 6))
    out, cache = F.conv2d_forward(x, w, b, method="im2col")
    ref = (out,) + F.conv2d_backward(dout, cache)
    monkeypatch.setitem(threads._state, "n", 2)
    monkeypatch.setitem(threads._state, "pool", ThreadPoolExecutor(2))
    for chunk in (1, 1 << 30):  # one image per chunk, or each worker's range in one
        monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk)
        out, cache = F.conv2d_forward(x, w, b, method="winograd")
        got = (out,) + F.conv2d_backward(dout, cache)
        for a, b_ in zip(ref, got, strict=True):
            assert rel_error(a, b_) < 1e-12


def test_winograd_float32_error_is_float32_rounding(rng):
    # F(2x2, 3x3) adds a few roundings per output (its transforms only add and halve): its float32
    # result stays within a few float32 epsilons of the exact one, like the direct sum's
    x, w, b = rng.standard_normal((2, 32, 8, 8)), rng.standard_normal((16, 32, 3, 3)), np.zeros(16)
    exact = layers.conv2d_forward(x, w, b)[0]  # float64, plain im2col
    f32 = [a.astype(np.float32) for a in (x, w, b)]
    out = F.conv2d_forward(*f32)[0]
    err = np.abs(out - exact).max() / np.abs(exact).max()
    assert err < 20 * np.finfo(np.float32).eps  # measured: about 2 eps (im2col: about 5)


def test_groupnorm_and_silu_split_over_workers_change_nothing(rng, monkeypatch):
    x = rng.standard_normal((5, 4, 3, 3))
    g, b, dout = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(x.shape)

    def both():
        y, c_gn = F.groupnorm_forward(x, g, b, 2)
        z, c_act = F.silu_forward(y)
        dy = F.silu_backward(dout, c_act)
        return (z, dy) + F.groupnorm_backward(dy, c_gn)

    monkeypatch.setitem(threads._state, "n", 1)
    ref = both()  # in the calling thread
    monkeypatch.setitem(threads._state, "n", 2)
    monkeypatch.setitem(threads._state, "pool", ThreadPoolExecutor(2))
    monkeypatch.setattr(threads, "_GRAIN", 1)  # split even these tiny arrays
    monkeypatch.setattr(elementwise, "_GRAIN", 1)
    for a, b_ in zip(ref, both(), strict=True):
        assert rel_error(a, b_) < 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_groupnorm_silu_is_groupnorm_then_silu_bitwise(rng, monkeypatch, dtype):
    x = (rng.standard_normal((7, 4, 3, 3)) * 2 + 1).astype(dtype)
    g, b = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    y, c_gn = F.groupnorm_forward(x, g, b, 2)
    z, c_act = F.silu_forward(y)
    ref = (z,) + F.groupnorm_backward(F.silu_backward(dout, c_act), c_gn)
    monkeypatch.setitem(threads._state, "n", 2)
    monkeypatch.setitem(threads._state, "pool", ThreadPoolExecutor(2))
    monkeypatch.setattr(threads, "_GRAIN", 1)  # two workers ...
    monkeypatch.setattr(norm, "_BLOCK", 2 * 4 * 9)  # ... each with blocks of 2 images and a rest
    z2, cache = F.groupnorm_silu_forward(x, g, b, 2)
    got = (z2,) + F.groupnorm_silu_backward(dout, cache)
    for a, b_ in zip(ref, got, strict=True):
        assert a.dtype == b_.dtype == dtype
        np.testing.assert_array_equal(a, b_)


def test_parallel_ranges_cover_the_batch(monkeypatch):
    monkeypatch.setitem(threads._state, "n", 3)
    monkeypatch.setitem(threads._state, "pool", ThreadPoolExecutor(3))
    for N, n_ranges in [(7, 3), (9, 3), (2, 2), (1, 1)]:  # N < 3: one image per range
        ranges = threads.map_ranges(lambda a, z: (a, z), N)
        assert len(ranges) == n_ranges
        assert ranges[0][0] == 0 and ranges[-1][1] == N
        assert all(r[1] == s[0] for r, s in zip(ranges[:-1], ranges[1:], strict=True))
        sizes = [z - a for a, z in ranges]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1  # balanced


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # 3.12+
def test_layers_work_in_a_forked_child(rng):
    # worker threads do not survive fork(); the child must build its own pool, not hang
    import multiprocessing as mp

    x, w, b = rng.standard_normal((4, 3, 5, 5)), rng.standard_normal((2, 3, 3, 3)), np.zeros(2)
    ref = F.conv2d_forward(x, w, b)[0]  # the parent's pool exists from here on
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=lambda: q.put(F.conv2d_forward(x, w, b)[0]))
    p.start()
    out = q.get(timeout=60)
    p.join(timeout=60)
    assert rel_error(out, ref) < 1e-12

