"""Tests for ddpm_ref.train (Algorithm 1); the objectives are in tests/test_objectives.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ddpm_ref.checkpoint import load_checkpoint, register_architecture
from ddpm_ref.data import toy2d
from ddpm_ref.nn.mlp import MLP
from ddpm_ref.schedule import make_schedule
from ddpm_ref.train import (
    NonFiniteLossError,
    TrainConfig,
    _Window,
    make_model_fn,
    state_from_checkpoint,
    train,
)

SCHED = make_schedule("linear", 100, beta_start=1e-3, beta_end=0.2)


def _net(out_mult=1):
    return MLP(x_dim=2, hidden=16, depth=2, t_dim=8, fourier_freqs=0, out_mult=out_mult)


def _data(n=512):
    return toy2d.sample("gmm", n, np.random.default_rng(1))


def _cfg(**kw):
    base = dict(steps=40, batch=32, lr=3e-3, warmup=5, ema_decay=0.9, log_every=10)
    return TrainConfig(**{**base, **kw})


def test_algorithm1_training_lowers_l_simple():
    _, hist = train(_net(), SCHED, _data(), _cfg(steps=300, log_every=50),
                    rng=np.random.default_rng(0))
    # eps_theta starts at 0 (zero output layer), so the first windows sit near E||eps||^2/D = 1
    assert hist[0]["l_simple"] > 0.7
    assert hist[-1]["l_simple"] < 0.6 * hist[0]["l_simple"]


def test_per_quartile_logging_present_and_ordered():
    _, hist = train(_net(), SCHED, _data(), _cfg(steps=300, log_every=100),
                    rng=np.random.default_rng(0))
    rec = hist[-1]
    for k in ("step", "loss", "l_simple", "lr", "grad_norm", "steps_per_s", "wall_s"):
        assert k in rec
    qs = [rec[f"l_simple_q{i}"] for i in range(1, 5)]
    assert all(math.isfinite(q) for q in qs)
    # at large t, x_t is nearly eps, so eps is easy to predict; at small t it is hardest
    assert qs[3] < qs[0]


def test_window_bins_t_into_quarters():
    w = _Window()
    T = 100
    t = np.array([1, 25, 26, 50, 51, 75, 76, 100])
    w.add(1.0, np.array([1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0]), t, T)
    rec = w.record(step=1, lr=0.1, gnorm=1.0, wall=0.0)
    assert [rec[f"l_simple_q{i}"] for i in range(1, 5)] == [2.0, 6.0, 10.0, 14.0]
    assert rec["l_simple"] == 8.0


def test_resume_is_bit_for_bit(tmp_path):
    data, cfg, net = _data(), _cfg(steps=40, log_every=7), _net()
    straight, _ = train(net, SCHED, data, cfg, rng=np.random.default_rng(5))
    path = tmp_path / "half.npz"
    train(net, SCHED, data, cfg, rng=np.random.default_rng(5), stop_at=20, ckpt_path=path)
    ck = load_checkpoint(path)
    assert ck.step == 20 and TrainConfig.from_dict(ck.train_config) == cfg
    resumed, _ = train(ck.net, ck.sched, data, cfg, state=state_from_checkpoint(ck))
    assert resumed.step == straight.step == 40
    for part in ("params", "ema", "opt_state"):
        a, b = getattr(straight, part), getattr(resumed, part)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].tobytes() == b[k].tobytes(), (part, k)
    assert resumed.rng.bit_generator.state == straight.rng.bit_generator.state


class NaNAfterMLP(MLP):
    """An MLP whose output turns NaN from its `bad_from`-th forward call on (injected failure)."""

    bad_from = 8
    calls = 0

    def forward(self, params, x, t, rng=None):
        out, cache = super().forward(params, x, t, rng)
        NaNAfterMLP.calls += 1
        return (out * np.nan if NaNAfterMLP.calls >= self.bad_from else out), cache


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    register_architecture(NaNAfterMLP)
    NaNAfterMLP.calls = 0
    net = NaNAfterMLP(x_dim=2, hidden=16, depth=2, t_dim=8, fourier_freqs=0)
    path = tmp_path / "run.npz"
    with pytest.raises(NonFiniteLossError, match="step 8.*last good checkpoint kept") as info:
        train(net, SCHED, _data(), _cfg(ckpt_every=5), rng=np.random.default_rng(0),
              ckpt_path=path)
    err = info.value
    assert err.step == 8 and err.ckpt_step == 5 and err.state.step == 7
    ck = load_checkpoint(path)
    assert ck.step == 5
    assert all(np.all(np.isfinite(v)) for v in ck.params.values())


def test_huge_learning_rate_stops_with_a_clear_error():
    with pytest.raises(NonFiniteLossError, match="try a smaller learning rate") as info:
        train(_net(), SCHED, _data(), _cfg(lr=1e30, warmup=0), rng=np.random.default_rng(0))
    assert all(np.all(np.isfinite(v)) for v in info.value.state.params.values())


def test_vlb_and_hybrid_objectives_train():
    for obj, var, mult in (("vlb", "fixedlarge", 1), ("hybrid", "learned_range", 2)):
        st, hist = train(_net(mult), SCHED, _data(), _cfg(objective=obj, variance=var),
                         rng=np.random.default_rng(0))
        assert st.step == 40 and all(math.isfinite(r["loss"]) for r in hist)


def test_make_model_fn_chunks_and_returns_float64():
    # Two claims. (1) Chunking is pure bookkeeping: chunk i of the output is the network's
    # float32 forward on rows [7i, 7i + 7), cast to float64 -- exactly, bit for bit. (2) Chunking
    # changes nothing beyond the network's own float32 rounding: the whole-batch and the chunked
    # outputs both match the float64 evaluation of the same weights. Bit-equality of (whole,
    # chunked) is NOT a property of float32 BLAS: the blocking of a matrix product (and so the
    # summation order) depends on the number of rows, so the last bit can differ.
    net = _net()
    params = net.init(np.random.default_rng(0))
    params = {k: v + 0.1 for k, v in params.items()}  # a non-zero output layer
    rng = np.random.default_rng(1)
    xt, t = rng.standard_normal((50, 2)), rng.integers(1, 101, size=50)
    whole = make_model_fn(net, params)(xt, t)
    parts = make_model_fn(net, params, chunk=7)(xt, t)
    assert whole.dtype == np.float64 and parts.dtype == np.float64 and whole.shape == (50, 2)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    by_hand = np.concatenate([net.forward(p32, xt[i:i + 7].astype(np.float32), t[i:i + 7],
                                          rng=None)[0] for i in range(0, 50, 7)])
    np.testing.assert_array_equal(parts, by_hand.astype(np.float64))
    exact = make_model_fn(net, params, dtype=np.float64)(xt, t)
    # float32 rounding bound: each of the 3 layers sums <= 32 O(1) terms, adding a relative
    # error of at most ~32 * 2^-24 = 1.9e-6; 3 layers: 6e-6 of the output scale (measured:
    # 1.8e-7). A chunk in the wrong place or order gives errors of O(1).
    scale = np.abs(exact).max()
    for out in (whole, parts):
        np.testing.assert_allclose(out, exact, rtol=0, atol=6e-6 * max(scale, 1.0))


def test_train_config_refuses_bad_values():
    with pytest.raises(ValueError, match="variance: expected one of \\('learned_range',\\)"):
        TrainConfig(objective="hybrid")
    with pytest.raises(ValueError, match="objective: expected one of"):
        TrainConfig(objective="bogus")
    with pytest.raises(ValueError, match="batch: expected an integer >= 1"):
        TrainConfig(batch=0)
    with pytest.raises(ValueError, match="lr: expected a finite number > 0"):
        TrainConfig(lr=float("nan"))


def test_train_refuses_bad_data():
    with pytest.raises(ValueError, match=r"data: expected shape \(N, 2\)"):
        train(_net(), SCHED, np.zeros((10, 3)), _cfg())
    bad = _data()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="data: expected finite values"):
        train(_net(), SCHED, bad, _cfg())


def test_ema_decay_at_is_tfs_warm_up():
    from ddpm_ref.train import ema_decay_at

    assert ema_decay_at(0, 0.999) == pytest.approx(0.1, rel=1e-15)  # (1 + 0) / (10 + 0)
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100, rel=1e-15)
    assert ema_decay_at(10**6, 0.999) == 0.999  # long runs: the decay itself
    assert ema_decay_at(0, 0.999, warmup=False) == 0.999
    # the weight left on the initial weights after n updates: prod_s decay_s = 9! n! / (n + 9)!
    n = 2000
    kept = math.prod(ema_decay_at(s, 0.999) for s in range(n))
    assert kept == pytest.approx(math.factorial(9) / math.prod(range(n + 1, n + 10)), rel=1e-9)
    assert kept < 1e-20 and 0.999**n > 0.13  # against 13.5 % with a fixed decay


def test_train_applies_the_ema_warm_up():
    # after one update the warm-up decay is 0.1: ema_1 = 0.1 init + 0.9 params_1
    net = _net()
    cfg = _cfg(steps=1, ema_decay=0.999, log_every=1)
    init = net.init(np.random.default_rng(5))
    from ddpm_ref.optim import adam_init
    from ddpm_ref.train import TrainState

    start = TrainState(dict(init), dict(init), adam_init(init), 0, np.random.default_rng(6))
    state, _ = train(net, SCHED, _data(), cfg, state=start)
    for k in init:
        want = init[k] + np.float32(0.9) * (state.params[k] - init[k])
        np.testing.assert_allclose(state.ema[k], want, rtol=1e-6, atol=1e-7)  # float32 rounding
    old = TrainConfig.from_dict({"steps": 5, "ema_decay": 0.99})  # saved before the warm-up
    assert old.ema_warmup is False and TrainConfig().ema_warmup is True


def test_train_defaults_are_written_once():
    from ddpm_ref.datasets import TRAIN_DEFAULTS
    from ddpm_ref.demo import DemoConfig

    cfg, demo = TrainConfig(), DemoConfig()
    assert TRAIN_DEFAULTS == {k: getattr(cfg, k) for k in TRAIN_DEFAULTS}
    for k in ("steps", "batch", "lr", "warmup", "ema_decay"):
        assert getattr(demo, k) == getattr(cfg, k)  # demo and train: one 2-D recipe


class _InterruptAt:
    """Wraps a net so that its forward raises KeyboardInterrupt at the n-th call (mid-step)."""

    def __init__(self, net, n):
        self.net, self.n, self.calls = net, n, 0

    def __getattr__(self, name):
        return getattr(self.net, name)

    def forward(self, *a, **kw):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.net.forward(*a, **kw)


def test_ctrl_c_saves_the_last_step_and_resume_is_bit_for_bit(tmp_path):
    from ddpm_ref.train import TrainingInterrupted

    register_architecture(MLP, "_InterruptAt")  # the wrapper's checkpoint loads as its MLP
    cfg = _cfg(steps=40, ckpt_every=0)
    whole, _ = train(_net(), SCHED, _data(), cfg, rng=np.random.default_rng(3))
    net = _InterruptAt(_net(), 24)  # Ctrl-C inside step 24: its rng draws were made
    with pytest.raises(TrainingInterrupted) as e:
        train(net, SCHED, _data(), cfg, rng=np.random.default_rng(3), ckpt_path=tmp_path / "c")
    assert e.value.state.step == 23 and e.value.saved == tmp_path / "c.npz"
    ck = load_checkpoint(tmp_path / "c.npz")
    assert ck.step == 23
    resumed, _ = train(ck.net, ck.sched, _data(), cfg, state=state_from_checkpoint(ck))
    for k in whole.params:
        np.testing.assert_array_equal(resumed.params[k], whole.params[k])
        np.testing.assert_array_equal(resumed.ema[k], whole.ema[k])


def test_lr_decay_cosine_is_the_rate_train_applies():
    # the logged lr of each record is the rate of that step: warm-up, then the half cosine to 0
    from ddpm_ref.optim import cosine_lr

    cfg = _cfg(steps=40, lr_decay="cosine", log_every=5)
    _, hist = train(_net(), SCHED, _data(), cfg, rng=np.random.default_rng(0))
    for rec in hist:
        assert rec["lr"] == pytest.approx(cosine_lr(rec["step"], cfg.lr, cfg.warmup, cfg.steps))
    assert hist[-1]["lr"] == pytest.approx(0.0, abs=1e-15)
    # a constant rate and a decayed one train different weights from the same draws
    a, _ = train(_net(), SCHED, _data(), _cfg(steps=40), rng=np.random.default_rng(0))
    b, _ = train(_net(), SCHED, _data(), cfg, rng=np.random.default_rng(0))
    assert not np.allclose(a.params["out.w"], b.params["out.w"])
    with pytest.raises(ValueError, match="lr_decay"):
        _cfg(lr_decay="linear")


def test_configs_saved_before_lr_decay_existed_load_with_a_constant_rate():
    old = dict(_cfg().__dict__)
    old.pop("lr_decay")
    assert TrainConfig.from_dict(old).lr_decay == "none"
