"""Tests for the U-Net ε-network: exact reference sizes, zero output at init, gradient checks on a
tiny configuration (attention and dropout included) in both tiers, gradients of shared tensors
adding up, and UNet(fast=False), the whole network in plain NumPy, equal to the fast one."""

import numpy as np
import pytest

from ddpm_ref.nn import UNet, blocks, reference_unet_config
from ddpm_ref.nn.fast import kernels
from ddpm_ref.nn.gradcheck import numerical_grad, rel_error

# 8x8 images with 2 channels, 2 levels (8 and 16 channels), attention at 4x4 and in the middle
TINY = dict(
    image_shape=(2, 8, 8),
    ch=8,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    mid_attention=True,
    dropout=0.25,
    groups=4,
    temb_dim=8,
)


@pytest.fixture
def numpy_twins():
    """Run on the NumPy twins of the Numba kernels: for 8x8 images a kernel's parallel launch
    costs more than its work, and the finite differences take hundreds of forward passes.
    test_numba_and_numpy_paths_agree ties the two paths together at the network level."""
    old = kernels.numba_enabled()
    kernels.use_numba(False)
    yield
    kernels.use_numba(old)


def _rel(a, b):
    """Normwise relative error (gradcheck.rel_error), as in tests/test_mlp.py."""
    return rel_error(a, b, normwise=True)


def _random_params(net, rng, dtype=np.float64):
    """init() with every array randomised (zero-initialised convs would hide gradient bugs)."""
    params = net.init(rng, dtype=dtype)
    out = {}
    for k, v in params.items():
        scale = 1.0 if k.endswith(".gamma") else 0.3
        base = 1.0 if k.endswith(".gamma") else 0.0
        out[k] = (base + scale * rng.standard_normal(v.shape)).astype(dtype)
    return out


def _batch(net, rng, B=2, dtype=np.float64):
    x = rng.standard_normal((B, *net.x_shape)).astype(dtype)
    t = rng.integers(1, 1001, size=B)
    return x, t


def _check_keys(net, params, x, t, G, keys, n_coords, seed=7):
    """Norm-wise relative error of backward vs centred differences for each key, on n_coords
    evenly spread coordinates (all if None). Dropout uses a fresh rng with a fixed seed per
    call, so every evaluation drops the same units."""
    _, cache = net.forward(params, x, t, rng=np.random.default_rng(seed))
    grads = net.backward(G, cache)
    loss = lambda _: np.sum(net.forward(params, x, t, rng=np.random.default_rng(seed))[0] * G)
    errors = {}
    for k in keys:
        size = params[k].size
        n = size if n_coords is None else min(size, n_coords)
        idx = np.unique(np.linspace(0, size - 1, n).round().astype(np.int64))
        num = numerical_grad(loss, params[k], idx=idx)
        errors[k] = _rel(grads[k].reshape(-1)[idx], num)
    return errors


def test_reference_unet_param_counts():
    assert UNet(**reference_unet_config()).n_params() == 789_217
    net = UNet(**reference_unet_config(attention=True))
    assert net.n_params() == 805_985
    params = net.init(np.random.default_rng(0))
    assert sum(p.size for p in params.values()) == 805_985
    # docs/benchmarks.md: the attention block is GN(64) + Conv1x1 64->192 + Conv1x1 64->64
    assert 805_985 - 789_217 == 2 * 64 + (64 * 192 + 192) + (64 * 64 + 64)


@pytest.mark.parametrize("config", [TINY, dict(TINY, out_mult=2)])
def test_output_is_zero_at_init(config):
    net = UNet(**config)
    rng = np.random.default_rng(1)
    params = net.init(rng, dtype=np.float32)
    x, t = _batch(net, rng, dtype=np.float32)
    eps_theta, _ = net.forward(params, x, t, rng=rng)
    assert eps_theta.shape == (2, 2 * config.get("out_mult", 1), 8, 8)
    assert eps_theta.dtype == np.float32
    assert not np.any(eps_theta)
    assert np.any(params["down.0.res.0.conv1.w"])


@pytest.mark.parametrize("fast", [False, True])
def test_gradcheck_tiny_unet_every_key(numpy_twins, fast):
    # attention at 4x4 and in the middle, dropout active with a fixed rng; 3 coords per key
    net = UNet(**TINY, fast=fast)
    rng = np.random.default_rng(2)
    params = _random_params(net, rng)
    x, t = _batch(net, rng)
    G = rng.standard_normal((2, 2, 8, 8))  # L = sum(eps_theta * G)
    errors = _check_keys(net, params, x, t, G, list(params), n_coords=3)
    assert len(errors) == len(params)
    assert max(errors.values()) < 1e-7, sorted(errors.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.parametrize("fast", [False, True])
def test_shared_tensor_gradients_add_up(numpy_twins, fast):
    # SiLU(temb) feeds every res block and each skip tensor feeds two consumers: the gradients
    # of the time MLP and of a block whose output is a skip are right only if the shares add.
    net = UNet(**dict(TINY, dropout=0.0, attn_resolutions=()), fast=fast)
    rng = np.random.default_rng(3)
    params = _random_params(net, rng)
    x, t = _batch(net, rng)
    G = rng.standard_normal((2, 2, 8, 8))
    keys = ["temb.0.w", "temb.0.b", "temb.1.w", "temb.1.b", "down.0.res.0.conv2.b"]
    errors = _check_keys(net, params, x, t, G, keys, n_coords=None)
    assert max(errors.values()) < 1e-7, errors


def test_resblock_temb_shares_add_up(numpy_twins):
    # two res blocks read the same SiLU(temb): dL/dtemb_act is the sum of both blocks' shares,
    # and neither share alone is the gradient
    rng = np.random.default_rng(4)
    shapes = blocks.resblock_shapes("a", 4, 8, 6) | blocks.resblock_shapes("b", 8, 8, 6)
    params = {k: 0.4 * rng.standard_normal(s) + (k.endswith(".gamma")) for k, s in shapes.items()}
    x = rng.standard_normal((2, 4, 4, 4))
    temb_act = rng.standard_normal((2, 6))
    G = rng.standard_normal((2, 8, 4, 4))

    def loss(ta):
        h, _ = blocks.resblock_forward(params, "a", x, ta, groups=2)
        return np.sum(blocks.resblock_forward(params, "b", h, ta, groups=2)[0] * G)

    h, ca = blocks.resblock_forward(params, "a", x, temb_act, groups=2)
    _, cb = blocks.resblock_forward(params, "b", h, temb_act, groups=2)
    dh, share_b, _ = blocks.resblock_backward(G, cb)
    _, share_a, _ = blocks.resblock_backward(dh, ca)
    num = numerical_grad(loss, temb_act)
    assert _rel(share_a + share_b, num) < 1e-7
    assert _rel(share_a, num) > 1e-2 and _rel(share_b, num) > 1e-2


# The plain and the fast U-Net compute the same function by different sums (im2col vs Winograd,
# Numba vs NumPy reductions): in float64 every output and gradient differs by a few roundings per
# layer, ~1e-14 relative after the ~30 layers here. 1e-11 (normwise) leaves a wide margin and still
# fails for any wrong term, which gives errors of order 1.
TIER_TOL = 1e-11


WIDER = dict(TINY, image_shape=(1, 16, 16), ch=16, ch_mult=(1, 1, 2))  # 16 to 32 channels


@pytest.mark.parametrize("config", [TINY, WIDER])
def test_plain_unet_equals_fast_unet(config):
    # with Numba on: Winograd takes the 3x3 convolutions with >= 8 channels; dropout active
    plain, fast = UNet(**config, fast=False), UNet(**config)
    assert plain.layers.__name__ == "ddpm_ref.nn.layers"
    assert fast.layers.__name__ == "ddpm_ref.nn.fast"
    rng = np.random.default_rng(9)
    params = _random_params(fast, rng)
    x, t = _batch(fast, rng, B=3)
    res = []
    for net in (plain, fast):
        out, cache = net.forward(params, x, t, rng=np.random.default_rng(0))
        res.append((out, net.backward(np.cos(out), cache)))  # L = sum(sin(eps_theta))
    (out_a, g_a), (out_b, g_b) = res
    assert _rel(out_a, out_b) < TIER_TOL
    for k in params:
        assert _rel(g_a[k], g_b[k]) < TIER_TOL, k


def test_numba_and_numpy_paths_agree():
    net = UNet(**TINY)
    rng = np.random.default_rng(8)
    params = _random_params(net, rng)
    x, t = _batch(net, rng)
    G = rng.standard_normal((2, 2, 8, 8))
    results = []
    old = kernels.numba_enabled()
    try:
        for flag in (True, False):
            kernels.use_numba(flag)
            out, cache = net.forward(params, x, t, rng=np.random.default_rng(0))
            results.append((out, net.backward(G, cache)))
    finally:
        kernels.use_numba(old)
    (out_a, g_a), (out_b, g_b) = results
    np.testing.assert_allclose(out_a, out_b, rtol=1e-10, atol=1e-12)
    for k in params:
        np.testing.assert_allclose(g_a[k], g_b[k], rtol=1e-9, atol=1e-11, err_msg=k)


def test_dropout_only_with_rng(numpy_twins):
    net = UNet(**TINY)
    rng = np.random.default_rng(5)
    params = _random_params(net, rng)
    x, t = _batch(net, rng)
    a, _ = net.forward(params, x, t)
    b, _ = net.forward(params, x, t)
    np.testing.assert_array_equal(a, b)  # evaluation: deterministic
    c, _ = net.forward(params, x, t, rng=np.random.default_rng(0))
    d, _ = net.forward(params, x, t, rng=np.random.default_rng(1))
    assert not np.allclose(a, c) and not np.allclose(c, d)


def test_float32_forward_close_to_float64(numpy_twins):
    net = UNet(**dict(TINY, dropout=0.0))
    rng = np.random.default_rng(6)
    p64 = _random_params(net, rng)
    x, t = _batch(net, rng)
    out64, _ = net.forward(p64, x, t)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    out32, _ = net.forward(p32, x.astype(np.float32), t)
    assert out32.dtype == np.float32
    # float32 rounding (6e-8) grows through ~20 layers with sums over up to 9 x 32 terms
    np.testing.assert_allclose(out32, out64, rtol=1e-3, atol=1e-4 * np.abs(out64).max())


def test_reference_unet_runs_one_step_float32():
    net = UNet(**reference_unet_config(attention=True))
    rng = np.random.default_rng(7)
    params = net.init(rng)
    x, t = _batch(net, rng, B=2, dtype=np.float32)
    out, cache = net.forward(params, x, t)
    assert out.shape == (2, 1, 28, 28)
    grads = net.backward(np.ones_like(out), cache)
    assert all(grads[k].shape == params[k].shape and grads[k].dtype == np.float32 for k in params)
    assert np.any(grads["out.conv.w"])


def test_check_params_names_the_bad_key():
    net = UNet(**TINY)
    params = net.init(np.random.default_rng(0))
    missing = dict(params)
    del missing["mid.attn.qkv.w"]
    with pytest.raises(ValueError, match="missing key 'mid.attn.qkv.w'"):
        net.check_params(missing)
    with pytest.raises(ValueError, match="unexpected key"):
        net.check_params(dict(params, extra=np.zeros(3, np.float32)))
    other = UNet(**dict(TINY, ch=16, groups=4)).init(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"params\['conv_in.w'\]: expected shape \(8, 2, 3, 3\)"):
        net.check_params(other)


def test_forward_rejects_bad_inputs():
    net = UNet(**TINY)
    params = net.init(np.random.default_rng(0))
    x = np.zeros((2, 2, 8, 8), np.float32)
    t = np.array([1, 2])
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 2, 8, 8\)"):
        net.forward(params, np.zeros((2, 1, 8, 8), np.float32), t)
    with pytest.raises(ValueError, match="x: expected dtype float32"):
        net.forward(params, x.astype(np.float64), t)
    with pytest.raises(ValueError, match="t: expected an integer array"):
        net.forward(params, x, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="t: expected integer timesteps >= 0"):
        net.forward(params, x, np.array([1, -2]))
    _, cache = net.forward(params, x, t)
    with pytest.raises(ValueError, match="d_eps_theta: expected shape"):
        net.backward(np.zeros((2, 1, 8, 8), np.float32), cache)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(groups=5), "groups:"),
        (dict(image_shape=(1, 30, 30), ch_mult=(1, 2, 2, 2)), "image_shape:"),
        (dict(dropout=1.0), "dropout:"),
        (dict(temb_dim=7), "temb_dim:"),
        (dict(out_mult=3), "out_mult:"),
        (dict(fast=1), "fast:"),
    ],
)
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        UNet(**bad)
