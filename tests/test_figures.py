"""Tests for ddpm_ref.figures: Figs. 5-8 on digits, with a tiny U-Net and exact oracles."""

from __future__ import annotations

import numpy as np
import pytest

from ddpm_ref.checkpoint import save_checkpoint
from ddpm_ref.data.mnist import from_model
from ddpm_ref.demo import scaled_schedule
from ddpm_ref.diffusion import eps_from_x0
from ddpm_ref.figures import (
    interpolations,
    progressive_generation,
    rows_grid,
    shared_latent_samples,
    write_figures,
)
from ddpm_ref.mnist_eval import bound_terms_all, held_out_digits, rate_distortion
from ddpm_ref.nn.unet import UNet

T = 8


def _oracle(sched, x_star):
    """eps-network that always predicts x0 = x_star (the optimum when the data is x_star)."""

    def model_fn(xt, t):
        return eps_from_x0(sched, xt, t, np.broadcast_to(x_star, xt.shape))

    model_fn.x_shape = x_star.shape
    return model_fn


def _digits(n):
    return held_out_digits(10, size=14)[0][:n]


def test_fig6_progressive_predictions_of_a_point_mass_oracle_are_the_point():
    sched, _ = scaled_schedule("linear", T)
    x_star = _digits(1)[0]  # (1, 14, 14)
    ts, imgs = progressive_generation(sched, _oracle(sched, x_star), 3,
                                      np.random.default_rng(0), n_steps=5)
    assert ts.tolist() == [8, 6, 4, 2, 0]
    assert imgs.shape == (3, 5, 14, 14) and imgs.dtype == np.uint8
    # x0_hat is x_star at every step, and so is the final sample (Algorithm 2 at t = 1 returns
    # mu_tilde(x_star, x_1) = x_star: the x_1 coefficient vanishes since alpha_bar_0 = 1)
    want = from_model(x_star[None])[0]
    assert np.all(np.abs(imgs.astype(int) - want) <= 1)


def test_fig6_untrained_net_predictions_change_along_the_chain():
    sched, _ = scaled_schedule("linear", T)
    net = UNet(image_shape=(1, 14, 14), ch=8, ch_mult=(1, 2), groups=4, temb_dim=16,
               mid_attention=False)
    rng = np.random.default_rng(0)
    params = net.init(rng, dtype=np.float64)
    params["out.conv.w"] = 0.3 * rng.standard_normal(params["out.conv.w"].shape)

    def model_fn(xt, t):
        return net.forward(params, xt, t)[0]

    model_fn.x_shape = net.x_shape
    ts, imgs = progressive_generation(sched, model_fn, 2, rng, n_steps=3)
    assert imgs.shape == (2, 3, 14, 14)
    assert not np.array_equal(imgs[:, 0], imgs[:, -1])


def test_fig7_samples_share_the_latent_and_shapes():
    sched, _ = scaled_schedule("linear", T)
    x_star = _digits(1)[0]
    xt, samples = shared_latent_samples(sched, _oracle(sched, x_star), x_star, (2, 8), 4,
                                        np.random.default_rng(1))
    assert xt.shape == (2, 14, 14) and samples.shape == (2, 4, 14, 14)
    want = from_model(x_star[None])[0]
    assert np.all(np.abs(samples.astype(int) - want) <= 1)
    # x_t at t = T is mostly noise: far from the digit, unlike x_t at t = 2
    d = [np.abs(x.astype(int) - want).mean() for x in xt]
    assert d[1] > d[0]


def test_fig8_interpolation_at_t0_is_pixel_interpolation():
    sched, _ = scaled_schedule("linear", T)
    a, b = _digits(2)
    rows = interpolations(sched, _oracle(sched, a), a, b, (0, 4), 5, np.random.default_rng(2))
    assert rows.shape == (2, 5, 14, 14)
    np.testing.assert_array_equal(rows[0, 0], from_model(a[None])[0])
    np.testing.assert_array_equal(rows[0, -1], from_model(b[None])[0])
    mid = from_model((0.5 * (a + b))[None])[0]
    np.testing.assert_array_equal(rows[0, 2], mid)


def test_rows_grid_shape():
    rows = np.zeros((3, 4, 14, 14), dtype=np.uint8)
    assert rows_grid(rows).shape == (3 * 15 + 1, 4 * 15 + 1)
    with pytest.raises(ValueError, match="^rows:"):
        rows_grid(rows.astype(np.float32))


def test_fig5_distortion_of_the_mean_predictor_is_the_data_std():
    sched, _ = scaled_schedule("linear", T)
    x0 = _digits(6)
    mean = x0.mean(axis=0)  # (1, 14, 14) in [-1, 1]
    terms = bound_terms_all(sched, _oracle(sched, mean), x0, np.random.default_rng(3))
    t, rate, dist = rate_distortion(terms, x0[0].size)
    # x0_hat = the mean image at every t: RMSE = the pixels' std around it, on 0..255
    want = np.sqrt(np.mean((x0 - mean) ** 2)) * 127.5
    np.testing.assert_allclose(dist[1:], want, rtol=1e-9)
    assert dist[0] == 0.0
    assert np.all(np.diff(rate) <= 0)


def test_write_figures_writes_four_pngs(tmp_path):
    sched, info = scaled_schedule("linear", T)
    net = UNet(image_shape=(1, 14, 14), ch=8, ch_mult=(1, 2), groups=4, temb_dim=16,
               mid_attention=False)
    params = net.init(np.random.default_rng(0))
    ck = save_checkpoint(tmp_path / "ck.npz", net, sched, params, dataset="mnist14",
                         image_size=14, schedule_info=info)
    paths = write_figures(ck, tmp_path / "figs", n_chains=2, n_steps=3, n_shared=2, n_interp=3,
                          n_rd=2)
    assert sorted(paths) == ["interpolation", "progressive", "rate_distortion", "shared_latent"]
    for p in paths.values():
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_figures_which_selects_and_rejects_unknown_names(tmp_path):
    sched, info = scaled_schedule("linear", T)
    net = UNet(image_shape=(1, 14, 14), ch=8, ch_mult=(1, 2), groups=4, temb_dim=16,
               mid_attention=False)
    ck = save_checkpoint(tmp_path / "ck.npz", net, sched, net.init(np.random.default_rng(0)),
                         dataset="mnist14", image_size=14, schedule_info=info)
    paths = write_figures(ck, tmp_path / "f", n_rd=2, which=("rate_distortion",))
    assert list(paths) == ["rate_distortion"]
    with pytest.raises(ValueError, match="^which:"):
        write_figures(ck, tmp_path / "f", which=("fig9",))
