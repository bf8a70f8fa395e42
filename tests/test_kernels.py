"""Tests for ddpm_ref.nn.fast.kernels: every Numba kernel against its NumPy twin in float64
(relative error < 1e-10), adjoint identities, and the Numba/NumPy switch."""

import numpy as np
import pytest

from ddpm_ref.nn import fast as L
from ddpm_ref.nn.fast import kernels as K
from ddpm_ref.nn.gradcheck import rel_error

TWIN_TOL = 1e-10  # same arithmetic up to summation order: agreement near machine precision


@pytest.fixture
def rng():
    return np.random.default_rng(1)


IM2COL_CASES = [  # (m, C, H, W, k, stride, pad)
    (2, 3, 5, 7, 3, 1, 1),
    (3, 2, 6, 6, 3, 2, 1),
    (2, 2, 7, 5, 3, 2, 1),
    (2, 4, 5, 5, 1, 1, 0),
    (1, 2, 6, 5, 4, 3, 2),
    (2, 1, 3, 3, 3, 1, 2),  # padding wider than needed: whole rows of zeros
]


def _out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


@pytest.mark.parametrize("case", IM2COL_CASES)
def test_im2col_and_col2im_match_twins(rng, case):
    m, C, H, W, k, s, p = case
    P = _out_size(H, k, s, p) * _out_size(W, k, s, p)
    x = rng.standard_normal((m, C, H, W))
    cols_nb, cols_np = np.full((C * k * k, m, P), np.nan), np.full((C * k * k, m, P), np.nan)
    K.im2col_numba(x, k, s, p, cols_nb)
    K.im2col_numpy(x, k, s, p, cols_np)
    assert not np.isnan(cols_nb).any()  # every entry written, padding included
    assert rel_error(cols_nb, cols_np) < TWIN_TOL

    dcols = rng.standard_normal(cols_nb.shape)
    dx_nb, dx_np = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    K.col2im_numba(dcols, k, s, p, dx_nb)
    K.col2im_numpy(dcols, k, s, p, dx_np)
    assert rel_error(dx_nb, dx_np, normwise=True) < TWIN_TOL
    # entries never read by im2col (stride 3) get exactly zero from both
    np.testing.assert_array_equal(dx_nb == 0, dx_np == 0)


@pytest.mark.parametrize("case", IM2COL_CASES[:3])
def test_col2im_is_the_adjoint_of_im2col(rng, case):
    # <im2col(x), c> = <x, col2im(c)>: what makes dcols -> dx the exact gradient
    m, C, H, W, k, s, p = case
    P = _out_size(H, k, s, p) * _out_size(W, k, s, p)
    x, c = rng.standard_normal((m, C, H, W)), rng.standard_normal((C * k * k, m, P))
    cols, dx = np.empty_like(c), np.empty_like(x)
    K.im2col(x, k, s, p, cols)
    K.col2im(c, k, s, p, dx)
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * dx), rtol=1e-12)


def test_layout_copies_match_twins(rng):
    res, b = rng.standard_normal((3, 4, 5)), rng.standard_normal(3)
    out_nb, out_np = np.empty((4, 3, 5)), np.empty((4, 3, 5))
    K.fm_to_mf_bias_numba(res, b, out_nb)
    K.fm_to_mf_bias_numpy(res, b, out_np)
    assert rel_error(out_nb, out_np) < TWIN_TOL
    a = rng.standard_normal((4, 3, 5))
    t_nb, t_np = np.empty((3, 4, 5)), np.empty((3, 4, 5))
    K.mf_to_fm_numba(a, t_nb)
    K.mf_to_fm_numpy(a, t_np)
    np.testing.assert_array_equal(t_nb, t_np)


def test_upsample_kernels_match_twins_and_are_adjoint(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    up_nb, up_np = np.empty((2, 3, 8, 10)), np.empty((2, 3, 8, 10))
    K.upsample2x_fwd_numba(x, up_nb)
    K.upsample2x_fwd_numpy(x, up_np)
    np.testing.assert_array_equal(up_nb, up_np)
    np.testing.assert_array_equal(up_nb[:, :, 7, 9], x[:, :, 3, 4])  # out[2i+1, 2j+1] = x[i, j]
    d = rng.standard_normal((2, 3, 8, 10))
    dx_nb, dx_np = np.empty_like(x), np.empty_like(x)
    K.upsample2x_bwd_numba(d, dx_nb)
    K.upsample2x_bwd_numpy(d, dx_np)
    np.testing.assert_array_equal(dx_nb, dx_np)  # same summation order: bitwise equal
    # the backward is the adjoint of the forward: <up(x), d> = <x, up^T(d)>
    np.testing.assert_allclose(np.sum(up_nb * d), np.sum(x * dx_nb), rtol=1e-12)
    with pytest.raises(ValueError, match="shapes do not match"):
        K.upsample2x_bwd_numba(d, np.empty((2, 3, 4, 4)))


def test_winograd_kernels_match_twins_and_are_adjoint(rng):
    m, C, F, H, W = 2, 3, 5, 6, 4  # 3 x 2 tiles per image, 4 x 3 slots with the padding
    Tp = (H // 2 + 1) * (W // 2 + 1)
    real = (..., slice(0, H // 2), slice(0, W // 2))  # the real tiles of a (16, X, m, 4, 3) view
    tiles = lambda A: A.reshape(16, A.shape[1], m, H // 2 + 1, W // 2 + 1)
    x = rng.standard_normal((m, C, H, W))
    V = {}
    for k in ("numba", "numpy"):
        V[k] = np.full((16, C, m * Tp), np.nan)  # every slot must be written
        getattr(K, f"wino_in_{k}")(x, V[k])
    assert rel_error(tiles(V["numba"])[real], tiles(V["numpy"])[real]) < TWIN_TOL
    assert np.isfinite(V["numba"]).all()  # padding slots: finite values no output reads
    dV = rng.standard_normal(V["numba"].shape)
    dx_nb, dx_np = np.empty_like(x), np.empty_like(x)
    K.wino_in_adj_numba(dV, dx_nb)  # each is the exact adjoint of its own wino_in ...
    K.wino_in_adj_numpy(dV, dx_np)
    np.testing.assert_allclose(np.sum(V["numba"] * dV), np.sum(x * dx_nb), rtol=1e-12)
    np.testing.assert_allclose(np.sum(V["numpy"] * dV), np.sum(x * dx_np), rtol=1e-12)
    pad = np.ones(tiles(dV).shape, dtype=bool)
    pad[real] = False
    tiles(dV)[pad] = 0.0  # ... and they agree where a backward pass has gradients
    K.wino_in_adj_numba(dV, dx_nb)
    K.wino_in_adj_numpy(dV, dx_np)
    assert rel_error(dx_nb, dx_np) < TWIN_TOL

    M, b = rng.standard_normal((16, F, m * Tp)), np.zeros(F)
    out_nb, out_np = np.empty((m, F, H, W)), np.empty((m, F, H, W))
    K.wino_out_numba(M, b, out_nb)
    K.wino_out_numpy(M, b, out_np)
    assert rel_error(out_nb, out_np) < TWIN_TOL
    d = rng.standard_normal(out_nb.shape)
    dM_nb, dM_np = rng.standard_normal(M.shape), rng.standard_normal(M.shape)
    K.wino_out_adj_numba(d, dM_nb)
    K.wino_out_adj_numpy(d, dM_np)
    assert rel_error(dM_nb, dM_np) < TWIN_TOL
    pad = np.ones(tiles(dM_nb).shape, dtype=bool)
    pad[real] = False
    np.testing.assert_array_equal(tiles(dM_nb)[pad], 0.0)  # no gradient on padding
    np.testing.assert_allclose(np.sum(out_nb * d), np.sum(M * dM_nb), rtol=1e-12)
    with pytest.raises(ValueError, match="shapes do not match"):
        K.wino_in_numba(x, np.empty((16, C, m * Tp - 1)))
    with pytest.raises(ValueError, match="shapes do not match"):
        K.wino_out_numba(M, b, np.empty((m, F, H + 1, W)))


@pytest.mark.parametrize("shape,G", [((2, 8, 15), 4), ((3, 6, 7), 6), ((1, 4, 9), 1)])
def test_groupnorm_kernels_match_twins(rng, shape, G):
    N, C, P = shape
    x = rng.standard_normal(shape) * 3 + 1
    gamma, beta, dout = rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal(shape)
    res = {}
    for name, fwd, bwd in [
        ("nb", K.groupnorm_fwd_numba, K.groupnorm_bwd_numba),
        ("np", K.groupnorm_fwd_numpy, K.groupnorm_bwd_numpy),
    ]:
        out, mean, rstd = np.empty(shape), np.empty((N, G)), np.empty((N, G))
        fwd(x, gamma, beta, G, 1e-5, out, mean, rstd)
        dx, dg, db = np.empty(shape), np.empty((N, C)), np.empty((N, C))
        bwd(dout, x, gamma, mean, rstd, G, dx, dg, db)
        res[name] = (out, mean, rstd, dx, dg, db)
    for a, b in zip(res["nb"], res["np"], strict=True):
        # dx sums to zero over each group, so its entries cancel: compare it normwise
        assert rel_error(a, b, normwise=a is res["nb"][3]) < TWIN_TOL


def test_switch_selects_twins(rng, monkeypatch):
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), np.zeros(4)
    calls = []

    def spy(name):
        real = getattr(K, name)
        return lambda *args: calls.append(name) or real(*args)

    # the dispatch table holds the (kernel, twin) pair each dispatcher chooses from
    monkeypatch.setitem(K._KERNELS, "im2col", (spy("im2col_numba"), spy("im2col_numpy")))
    was = K.numba_enabled()
    try:
        K.use_numba(True)
        out_nb, _ = L.conv2d_forward(x, w, b, method="im2col")
        assert calls and set(calls) == {"im2col_numba"}  # once per worker thread
        calls.clear()
        K.use_numba(False)
        assert not K.numba_enabled()
        out_np, _ = L.conv2d_forward(x, w, b, method="im2col")
        assert calls and set(calls) == {"im2col_numpy"}
    finally:
        K.use_numba(was)
    assert rel_error(out_nb, out_np) < TWIN_TOL


def test_silu_kernels_match_twins(rng):
    x, dout = rng.standard_normal(101) * 4, rng.standard_normal(101)
    res = {}
    for name, fwd, bwd in [
        ("nb", K.silu_fwd_numba, K.silu_bwd_numba),
        ("np", K.silu_fwd_numpy, K.silu_bwd_numpy),
    ]:
        t, out, dx = np.tanh(x / 2), np.empty(101), np.empty(101)
        fwd(x, t, out)
        bwd(dout, x, t, dx)
        res[name] = (t, out, dx)
    for a, b in zip(res["nb"], res["np"], strict=True):
        assert rel_error(a, b) < TWIN_TOL
    # and the forward is x sigma(x)
    assert rel_error(res["nb"][1], x / (1 + np.exp(-x))) < 1e-12


def test_adam_kernels_match_twins_and_the_update_rule(rng):
    p, g, m = rng.standard_normal(103), rng.standard_normal(103), rng.standard_normal(103)
    v = rng.random(103)
    c1, c2, step_size, eps_hat = 0.1, 0.001, 0.003, 1e-8
    res = {}
    for name, fn in [("nb", K.adam_numba), ("np", K.adam_numpy)]:
        outs = (np.empty(103), np.empty(103), np.empty(103))
        fn(p, g, m, v, c1, c2, step_size, eps_hat, *outs)
        res[name] = outs
    for a, b in zip(res["nb"], res["np"], strict=True):
        assert rel_error(a, b) < TWIN_TOL
    m_new = (1 - c1) * m + c1 * g  # written as Adam states it
    v_new = (1 - c2) * v + c2 * g**2
    assert rel_error(res["nb"][1], m_new) < 1e-12
    assert rel_error(res["nb"][2], v_new) < 1e-12
    assert rel_error(res["nb"][0], p - step_size * m_new / (np.sqrt(v_new) + eps_hat)) < 1e-12


def test_kernels_reject_mismatched_shapes():
    # kernels run without bounds checks, so each checks its shapes before writing
    x = np.ones((2, 3, 5, 5))
    with pytest.raises(ValueError, match="shapes do not match"):
        K.im2col_numba(x, 3, 1, 1, np.empty((27, 3, 25)))  # m = 3 != 2
    with pytest.raises(ValueError, match="shapes do not match"):
        K.fm_to_mf_bias_numba(np.ones((3, 4, 5)), np.ones(3), np.empty((3, 3, 5)))
    with pytest.raises(ValueError, match="shapes do not match"):
        K.silu_fwd_numba(np.ones(5), np.ones(5), np.empty(4))
    with pytest.raises(ValueError, match="shapes do not match"):
        K.adam_numba(*([np.ones(5)] * 4), 0.1, 0.1, 0.1, 0.1, np.empty(5), np.empty(4), np.empty(5))


def test_dispatch_table_pairs_each_kernel_with_its_twin():
    for name, (kernel, twin) in K._KERNELS.items():
        assert kernel.__name__ == name + "_numba" and twin.__name__ == name + "_numpy"
        assert getattr(K, name).__name__ == name  # the dispatcher the engine room calls
