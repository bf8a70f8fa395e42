"""Tests for ddpm_ref.optim: Adam, clipping, warm-up and EMA against values worked out by hand."""

import math

import numpy as np
import pytest

from ddpm_ref.optim import (
    adam_init,
    adam_update,
    clip_grad_norm,
    cosine_lr,
    ema_update,
    warmup_lr,
)


def _copy(d):
    return {k: np.array(v, copy=True) for k, v in d.items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_adam_init_state_layout():
    params = {"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}
    state = adam_init(params)
    assert set(state) == {"step", "m.w", "v.w", "m.b", "v.b"}
    assert state["step"].shape == () and state["step"].dtype == np.int64 and state["step"] == 0
    assert state["m.w"].shape == (2, 3) and state["v.w"].dtype == np.float32
    assert not np.any(state["m.w"]) and not np.any(state["v.b"])


@pytest.mark.parametrize("fast", [True, False])
def test_adam_three_steps_by_hand(fast):
    # one scalar parameter, gradients 0.5, -1.0, 2.0, lr 0.1, default betas: worked out by hand
    # (fast: the fused kernel of nn.fast; else optim.adam_step, the textbook NumPy)
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    params = {"p": np.array([1.0])}
    state = adam_init(params)
    p, m, v = 1.0, 0.0, 0.0
    for s, g in enumerate([0.5, -1.0, 2.0], start=1):
        params, state = adam_update(params, {"p": np.array([g])}, state, lr, fast=fast)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**s)) / (math.sqrt(v / (1 - b2**s)) + eps)
        assert int(state["step"]) == s
        np.testing.assert_allclose(state["m.p"], [m], rtol=1e-12)
        np.testing.assert_allclose(state["v.p"], [v], rtol=1e-12)
        np.testing.assert_allclose(params["p"], [p], rtol=1e-12)
    # step 1 of Adam moves every coordinate by lr (times sign g) whatever |g|: m_hat/sqrt(v_hat)=1
    params, state = adam_update(
        {"p": np.array([0.0, 0.0])},
        {"p": np.array([3.0, -1e-3])},
        adam_init({"p": np.zeros(2)}),
        lr=0.01,
    )
    np.testing.assert_allclose(params["p"], [-0.01, 0.01], rtol=1e-4)


@pytest.mark.parametrize("fast", [True, False])
def test_adam_is_pure_and_keeps_dtype(fast):
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 5)).astype(np.float32), "b": np.zeros(5, np.float32)}
    grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    state = adam_init(params)
    state["m.w"] += 0.1
    p0, g0, s0 = _copy(params), _copy(grads), _copy(state)
    new_params, new_state = adam_update(params, grads, state, lr=1e-3, fast=fast)
    _assert_same(params, p0)
    _assert_same(grads, g0)
    _assert_same(state, s0)
    assert all(new_params[k].dtype == np.float32 for k in params)
    assert all(new_state[k].dtype == np.float32 for k in new_state if k != "step")
    assert not np.shares_memory(new_state["m.w"], state["m.w"])


def test_adam_on_non_contiguous_arrays_and_both_kernel_paths(monkeypatch):
    from ddpm_ref.nn.fast import kernels

    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 4)).T  # a transposed (non-contiguous) view
    params, grads = {"w": w}, {"w": rng.standard_normal((4, 5))}
    state = adam_init(params)
    state["v.w"] = rng.random((4, 5)).T.copy().T  # Fortran order
    outs = [adam_update(params, grads, state, lr=0.01, fast=False)]  # textbook NumPy
    for flag in (True, False):  # the fused step: Numba kernel, NumPy twin
        monkeypatch.setattr(kernels, "_state", {"numba": flag})
        outs.append(adam_update(params, grads, state, lr=0.01))
    s = 1 - 0.999
    v = state["v.w"] + s * (grads["w"] ** 2 - state["v.w"])
    m = 0.1 * grads["w"]
    p = w - 0.01 * np.sqrt(s) / 0.1 * m / (np.sqrt(v) + 1e-8 * np.sqrt(s))
    for new_params, new_state in outs:
        np.testing.assert_allclose(new_state["m.w"], m, rtol=1e-12)
        np.testing.assert_allclose(new_state["v.w"], v, rtol=1e-12)
        np.testing.assert_allclose(new_params["w"], p, rtol=1e-12)


def test_adam_rejects_mismatched_grads():
    params = {"w": np.zeros((2, 2))}
    state = adam_init(params)
    with pytest.raises(ValueError, match=r"grads: .*missing \['w'\]"):
        adam_update(params, {"x": np.zeros((2, 2))}, state, lr=1e-3)
    with pytest.raises(ValueError, match="grads: 'w' has shape"):
        adam_update(params, {"w": np.zeros(4)}, state, lr=1e-3)
    with pytest.raises(ValueError, match="lr:"):
        adam_update(params, {"w": np.zeros((2, 2))}, state, lr=float("nan"))


def test_clip_grad_norm_global_norm_by_hand():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}  # global norm 5
    g0 = _copy(grads)
    clipped, norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(5.0, rel=1e-12)
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(clipped["a"], [3.0 * scale, 0.0], rtol=1e-12)
    np.testing.assert_allclose(clipped["b"], [[4.0 * scale]], rtol=1e-12)
    _assert_same(grads, g0)  # pure
    # below the threshold: unchanged values, norm still reported
    same, norm = clip_grad_norm(grads, 10.0)
    assert norm == pytest.approx(5.0, rel=1e-12)
    _assert_same(same, g0)
    with pytest.raises(ValueError, match="max_norm:"):
        clip_grad_norm(grads, 0.0)


def test_clip_grad_norm_nan_shows():
    clipped, norm = clip_grad_norm({"a": np.array([np.nan, 1.0])}, 1.0)
    assert math.isnan(norm) and np.all(np.isnan(clipped["a"]))


def test_warmup_lr_linear_ramp():
    assert warmup_lr(1, 2e-4, 5000) == pytest.approx(2e-4 / 5000, rel=1e-12)
    assert warmup_lr(2500, 2e-4, 5000) == pytest.approx(1e-4, rel=1e-12)
    assert warmup_lr(5000, 2e-4, 5000) == pytest.approx(2e-4, rel=1e-12)
    assert warmup_lr(10**6, 2e-4, 5000) == pytest.approx(2e-4, rel=1e-12)
    assert warmup_lr(1, 2e-4, 0) == 2e-4
    with pytest.raises(ValueError, match="step:"):
        warmup_lr(0, 2e-4, 5000)
    with pytest.raises(ValueError, match="warmup_steps:"):
        warmup_lr(1, 2e-4, -1)


def test_ema_update_by_hand():
    ema = {"w": np.array([1.0, 2.0], np.float32)}
    params = {"w": np.array([3.0, 0.0], np.float32)}
    e0, p0 = _copy(ema), _copy(params)
    out = ema_update(ema, params, 0.75)
    # 0.75 * [1, 2] + 0.25 * [3, 0] = [1.5, 1.5]
    np.testing.assert_allclose(out["w"], [1.5, 1.5], rtol=1e-6)
    assert out["w"].dtype == np.float32
    _assert_same(ema, e0)
    _assert_same(params, p0)
    out2 = ema_update(out, params, 0.75)  # 0.75 * 1.5 + 0.25 * [3, 0] = [1.875, 1.125]
    np.testing.assert_allclose(out2["w"], [1.875, 1.125], rtol=1e-6)
    np.testing.assert_array_equal(ema_update(ema, params, 1.0)["w"], ema["w"])
    np.testing.assert_array_equal(ema_update(ema, params, 0.0)["w"], params["w"])
    with pytest.raises(ValueError, match="decay:"):
        ema_update(ema, params, 1.5)
    with pytest.raises(ValueError, match="ema: keys differ"):
        ema_update({"v": ema["w"]}, params, 0.9)


def test_cosine_lr_warms_up_then_falls_to_zero_at_the_last_step():
    base, w, total = 1e-3, 200, 5500
    assert cosine_lr(100, base, w, total) == warmup_lr(100, base, w)  # the same ramp
    assert cosine_lr(w, base, w, total) == pytest.approx(base, rel=1e-12)
    mid = w + (total - w) // 2  # half way down the half cosine: base / 2
    assert cosine_lr(mid, base, w, total) == pytest.approx(base / 2, rel=1e-12)
    q = w + (total - w) // 4  # a quarter of the way: base (1 + cos(pi / 4)) / 2
    assert cosine_lr(q, base, w, total) == pytest.approx(base * (1 + np.sqrt(0.5)) / 2, rel=1e-9)
    assert cosine_lr(total, base, w, total) == pytest.approx(0.0, abs=1e-18)
    lrs = [cosine_lr(s, base, w, total) for s in range(w, total + 1)]
    assert np.all(np.diff(lrs) < 0)  # strictly decreasing after the warm-up
    with pytest.raises(ValueError, match="total_steps"):
        cosine_lr(5, base, w, 0)
