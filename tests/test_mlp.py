"""Tests for the MLP ε-network: size, zero output at init, whole-network gradient checks in both
tiers, and MLP(fast=False), the plain-NumPy network, equal to the fast one."""

import numpy as np
import pytest

from ddpm_ref.nn import MLP, reference_mlp_config
from ddpm_ref.nn.gradcheck import numerical_grad, rel_error
from ddpm_ref.nn.layers import (
    fourier_features_forward,
    linear_forward,
    silu_forward,
    timestep_embedding,
)

SMALL = dict(x_dim=2, hidden=8, depth=2, t_dim=8, fourier_freqs=3, fourier_max_freq=4.0)


def _rel(a, b):
    """Normwise relative error (gradcheck.rel_error): the elementwise one is dominated by
    rounding on entries that are tiny by nature (a GELU deep in its flat tail gives gradients
    ~1e-5, where the centred difference has an absolute error eps |L| / h ~ 1e-10)."""
    return rel_error(a, b, normwise=True)


def _random_params(net, rng, dtype=np.float64):
    """init() with every array randomised (the zero output layer would hide gradient bugs)."""
    params = net.init(rng, dtype=dtype)
    return {k: (0.5 * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}


def _batch(net, rng, B=5, dtype=np.float64):
    x = rng.standard_normal((B, *net.x_shape)).astype(dtype)
    t = rng.integers(1, 1001, size=B)
    return x, t


def test_reference_mlp_has_37762_params():
    net = MLP(**reference_mlp_config())
    params = net.init(np.random.default_rng(0))
    # docs/benchmarks.md: Linear(34,128) + 2 x Linear(128,128) + Linear(128,2)
    assert net.n_params() == 34 * 128 + 128 + 2 * (128 * 128 + 128) + 128 * 2 + 2 == 37_762
    assert sum(p.size for p in params.values()) == 37_762
    assert net.n_params(params) == 37_762


@pytest.mark.parametrize("config", [{}, reference_mlp_config(), dict(SMALL, out_mult=2)])
def test_output_is_zero_at_init(config):
    net = MLP(**config)
    rng = np.random.default_rng(1)
    params = net.init(rng)
    x, t = _batch(net, rng, dtype=np.float32)
    eps_theta, _ = net.forward(params, x, t)
    assert eps_theta.shape == (5, net.config.x_dim * net.config.out_mult)
    assert eps_theta.dtype == np.float32
    assert not np.any(eps_theta)
    assert np.any(params["hidden.0.w"])  # but the hidden layers are not zero


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("activation", ["silu", "gelu"])
@pytest.mark.parametrize("fourier_freqs", [0, 3])
def test_gradcheck_all_params(activation, fourier_freqs, fast):
    net = MLP(**dict(SMALL, activation=activation, fourier_freqs=fourier_freqs, fast=fast))
    rng = np.random.default_rng(2)
    params = _random_params(net, rng)
    x, t = _batch(net, rng)
    G = rng.standard_normal((5, 2))  # L = sum(eps_theta * G), so dL/d eps_theta = G
    _, cache = net.forward(params, x, t)
    grads = net.backward(G, cache)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in params.items()}
    loss = lambda _: np.sum(net.forward(params, x, t)[0] * G)
    errors = {k: _rel(grads[k], numerical_grad(loss, params[k])) for k in params}
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("fast", [False, True])
def test_input_grad_through_fourier_features(fast):
    net = MLP(**SMALL, fast=fast)
    rng = np.random.default_rng(3)
    params = _random_params(net, rng)
    x, t = _batch(net, rng)
    G = rng.standard_normal((5, 2))
    _, cache = net.forward(params, x, t)
    dx = net.input_grad(G, cache)
    num = numerical_grad(lambda xx: np.sum(net.forward(params, xx, t)[0] * G), x)
    assert rel_error(dx, num) < 1e-6


@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_plain_mlp_equals_fast_mlp(activation):
    # the two tiers differ only in BLAS-vs-pairwise bias sums and in-place adds: in float64 the
    # outputs and gradients agree to a few roundings (~1e-16); 1e-12 still fails for any wrong
    # term (errors of order 1)
    cfg = dict(reference_mlp_config(), fourier_freqs=4, activation=activation)
    plain, fast = MLP(**cfg, fast=False), MLP(**cfg)
    rng = np.random.default_rng(7)
    params = _random_params(fast, rng)
    x, t = _batch(fast, rng, B=300)
    res = []
    for net in (plain, fast):
        out, cache = net.forward(params, x, t)
        res.append((out, net.backward(np.cos(out), cache), net.input_grad(np.cos(out), cache)))
    (out_a, g_a, dx_a), (out_b, g_b, dx_b) = res
    assert _rel(out_a, out_b) < 1e-12 and _rel(dx_a, dx_b) < 1e-12
    for k in params:
        assert _rel(g_a[k], g_b[k]) < 1e-12, k


def test_forward_equals_composition_of_layers():
    # the MLP is the composition of the plain layers, in its fast tier too
    net = MLP(**SMALL)
    rng = np.random.default_rng(4)
    params = _random_params(net, rng)
    x, t = _batch(net, rng)
    feats, _ = fourier_features_forward(x, net.freqs)
    h = np.concatenate([feats, timestep_embedding(t, SMALL["t_dim"])], axis=1)
    for l in range(SMALL["depth"]):
        h, _ = silu_forward(linear_forward(h, params[f"hidden.{l}.w"], params[f"hidden.{l}.b"])[0])
    expected, _ = linear_forward(h, params["out.w"], params["out.b"])
    np.testing.assert_allclose(net.forward(params, x, t)[0], expected, rtol=1e-12, atol=1e-14)


def test_time_embedding_table_matches_layer_beyond_first_table():
    net = MLP(**SMALL)
    assert net.temb_table.tables == {}  # the explicit cache, empty until first use
    t = np.array([0, 1, 999, 1023])
    np.testing.assert_array_equal(net.time_embedding(t, 8, np.float64), timestep_embedding(t, 8))
    assert net.temb_table.tables[np.dtype(np.float64)].shape == (1024, 8)
    t = np.array([1024, 5000])  # beyond the first table: it grows
    np.testing.assert_array_equal(net.time_embedding(t, 8, np.float64), timestep_embedding(t, 8))
    assert net.temb_table.tables[np.dtype(np.float64)].shape == (8192, 8)


def test_float32_forward_close_to_float64():
    net = MLP(**reference_mlp_config())
    rng = np.random.default_rng(5)
    p64 = _random_params(net, rng)
    x, t = _batch(net, rng, B=64)
    out64, _ = net.forward(p64, x, t)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    out32, _ = net.forward(p32, x.astype(np.float32), t)
    assert out32.dtype == np.float32
    # float32 rounding (~6e-8 relative) amplified by sums over ~128 terms per layer
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4 * np.abs(out64).max())


def test_forward_does_not_modify_inputs():
    net = MLP(**SMALL)
    rng = np.random.default_rng(6)
    params = _random_params(net, rng)
    x, t = _batch(net, rng)
    p0, x0 = {k: v.copy() for k, v in params.items()}, x.copy()
    _, cache = net.forward(params, x, t)
    net.backward(np.ones((5, 2)), cache)
    np.testing.assert_array_equal(x, x0)
    for k in params:
        np.testing.assert_array_equal(params[k], p0[k])


def test_check_params_names_the_bad_key():
    net = MLP(**SMALL)
    params = net.init(np.random.default_rng(0), dtype=np.float64)
    missing = dict(params)
    del missing["out.b"]
    with pytest.raises(ValueError, match="missing key 'out.b'"):
        net.check_params(missing)
    with pytest.raises(ValueError, match="unexpected key 'hidden.2.w'"):
        net.check_params(MLP(**dict(SMALL, depth=3)).init(np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"params\['hidden.0.w'\]: expected shape"):
        net.check_params(MLP(**dict(SMALL, hidden=9)).init(np.random.default_rng(0)))
    mixed = dict(params, **{"out.b": params["out.b"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"params\['out.b'\]: expected dtype float64"):
        net.check_params(mixed)


def test_forward_rejects_bad_inputs():
    net = MLP(**SMALL)
    params = net.init(np.random.default_rng(0), dtype=np.float32)
    x = np.zeros((4, 2), np.float32)
    t = np.ones(4, np.int64)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 2\)"):
        net.forward(params, np.zeros((4, 3), np.float32), t)
    with pytest.raises(ValueError, match="x: expected dtype float32"):
        net.forward(params, x.astype(np.float64), t)
    with pytest.raises(ValueError, match="t: expected an integer array"):
        net.forward(params, x, t.astype(np.float64))
    with pytest.raises(ValueError, match=r"t: expected shape \(4,\)"):
        net.forward(params, x, t[:3])
    with pytest.raises(ValueError, match="t: expected integer timesteps >= 0"):
        net.forward(params, x, -t)
    _, cache = net.forward(params, x, t)
    with pytest.raises(ValueError, match="d_eps_theta: expected shape"):
        net.backward(np.zeros((4, 3), np.float32), cache)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(hidden=0), "hidden:"),
        (dict(t_dim=7), "t_dim:"),
        (dict(fourier_freqs=-1), "fourier_freqs:"),
        (dict(activation="relu"), "activation:"),
        (dict(out_mult=3), "out_mult:"),
        (dict(fast="yes"), "fast:"),
    ],
)
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        MLP(**bad)
