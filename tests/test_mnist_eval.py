"""Tests for ddpm_ref.mnist_eval: four bound variants from one network call; rate-distortion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ddpm_ref.bound import bound_terms
from ddpm_ref.checkpoint import save_checkpoint
from ddpm_ref.demo import scaled_schedule
from ddpm_ref.diffusion import eps_from_x0
from ddpm_ref.mnist_eval import (
    VARIANTS,
    bound_terms_all,
    held_out_digits,
    main,
    rate_distortion,
    summarize,
)
from ddpm_ref.nn.unet import UNet

T = 8


def _tiny_unet():
    return UNet(image_shape=(1, 14, 14), ch=8, ch_mult=(1, 2), groups=4, temb_dim=16,
                mid_attention=False, dropout=0.0)


def _random_model(seed=0):
    """A tiny untrained U-Net whose output is not zero (the zero-initialised output conv is
    replaced by random weights), as a model_fn, with its net and params."""
    net = _tiny_unet()
    rng = np.random.default_rng(seed)
    params = net.init(rng, dtype=np.float64)
    params["out.conv.w"] = 0.3 * rng.standard_normal(params["out.conv.w"].shape)

    def model_fn(xt, t):
        return net.forward(params, np.asarray(xt, dtype=np.float64), t)[0]

    return net, params, model_fn


def _digits(n=3):
    x0, _ = held_out_digits(10, size=14)
    return x0[:n]


def test_each_variant_equals_bound_terms_with_the_same_draws():
    sched, _ = scaled_schedule("linear", T)
    _, _, model_fn = _random_model()
    x0 = _digits()
    terms = bound_terms_all(sched, model_fn, x0, np.random.default_rng(5), t_chunk=3)
    for name, (variance, clip) in VARIANTS.items():
        ref = bound_terms(sched, model_fn, x0, np.random.default_rng(5), variance=variance,
                          clip_x0=clip, t_chunk=3)
        np.testing.assert_allclose(terms["L"][name][:, 1:], ref["L"][:, 1:], rtol=1e-12)
        np.testing.assert_allclose(terms["L_T"], ref["L_T"], rtol=1e-12)
    np.testing.assert_allclose(terms["l_simple"][:, 1:], ref["l_simple"][:, 1:], rtol=1e-12)
    # the variants differ: clipping and the variance change the terms of this random model
    assert not np.allclose(terms["L"]["beta"], terms["L"]["beta_tilde"], equal_nan=True)
    assert not np.allclose(terms["L"]["beta"], terms["L"]["beta_clip"], equal_nan=True)


def _point_mass_oracle(sched, x_star):
    """The optimal eps-network when the data is the single image x_star: it predicts x0 = x_star
    exactly, so mu_theta = mu_tilde (Eq. 7 with the true x0)."""

    def model_fn(xt, t):
        return eps_from_x0(sched, xt, t, np.broadcast_to(x_star, xt.shape))

    return model_fn


def test_eq5_point_mass_oracle_terms_are_the_variance_mismatch_only():
    sched, _ = scaled_schedule("linear", T)
    x_star = _digits(1)
    terms = bound_terms_all(sched, _point_mass_oracle(sched, x_star), x_star,
                            np.random.default_rng(0))
    D = x_star.size
    # sigma^2 = beta_tilde: KL between identical Gaussians, every L_{t-1} (t >= 2) is 0
    np.testing.assert_allclose(terms["L"]["beta_tilde"][:, 2:], 0.0, atol=1e-9)
    # sigma^2 = beta: KL(N(m, bt) || N(m, b)) = D/2 (bt/b - 1 - log(bt/b)) per t
    r = sched.beta_tilde[2:] / sched.beta[2:]
    want = 0.5 * D * (r - 1.0 - np.log(r))
    np.testing.assert_allclose(terms["L"]["beta"][0, 2:], want, rtol=1e-9)
    # x0_hat is exact, so the distortion is 0 at every t
    np.testing.assert_allclose(terms["x0_mse"][:, 1:], 0.0, atol=1e-20)


def test_summarize_total_is_the_sum_of_its_terms_in_bits_per_dim():
    sched, _ = scaled_schedule("linear", T)
    _, _, model_fn = _random_model(1)
    x0 = _digits()
    terms = bound_terms_all(sched, model_fn, x0, np.random.default_rng(2))
    D = x0[0].size
    rep = summarize(terms, D)
    assert rep["n"] == 3
    for name in VARIANTS:
        r = rep[name]
        assert r["total"] == pytest.approx(r["L_T"] + r["L_sum"] + r["L_0"], rel=1e-12)
        want = np.nanmean(np.nansum(terms["L"][name], axis=1) + terms["L_T"]) / (D * math.log(2))
        assert r["total"] == pytest.approx(want, rel=1e-12)


def test_rate_distortion_rate_is_monotone_and_ends_at_the_bound():
    sched, _ = scaled_schedule("linear", T)
    _, _, model_fn = _random_model(2)
    x0 = _digits()
    terms = bound_terms_all(sched, model_fn, x0, np.random.default_rng(3))
    D = x0[0].size
    t, rate, dist = rate_distortion(terms, D, "beta_tilde_clip")
    assert t.tolist() == list(range(T + 1))
    assert np.all(np.diff(rate) <= 0)  # each term L_{t-1} >= 0: less is sent by a later t
    assert rate[0] == pytest.approx(summarize(terms, D)["beta_tilde_clip"]["total"], rel=1e-12)
    assert rate[T] == pytest.approx(np.mean(terms["L_T"]) / (D * math.log(2)), rel=1e-12)
    assert dist[0] == 0.0 and np.all(dist[1:] > 0) and np.all(dist <= 255.0)


def test_held_out_digits_are_class_balanced_and_on_the_grid():
    x0, labels = held_out_digits(50, size=14)
    assert x0.shape == (50, 1, 14, 14)
    assert np.bincount(labels, minlength=10).tolist() == [5] * 10
    levels = (x0 + 1) * 127.5
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    with pytest.raises(ValueError, match="^n:"):
        held_out_digits(0)


def test_bad_inputs_name_the_argument():
    sched, _ = scaled_schedule("linear", T)
    _, _, model_fn = _random_model()
    with pytest.raises(ValueError, match="^x0:"):
        bound_terms_all(sched, model_fn, np.zeros((2, 14, 14)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="^rng:"):
        bound_terms_all(sched, model_fn, _digits(), 0)


def test_main_writes_a_summary_for_a_checkpoint(tmp_path):
    sched, info = scaled_schedule("linear", T)
    net, params, _ = _random_model()
    params = {k: v.astype(np.float32) for k, v in params.items()}
    ck = save_checkpoint(tmp_path / "ck.npz", net, sched, params, dataset="mnist14",
                         image_size=14, schedule_info=info)
    assert main(["--checkpoint", str(ck), "--n", "4", "--out", str(tmp_path / "ev"),
                 "--quiet"]) == 0
    rep = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert rep["n"] == 4 and rep["T"] == T
    # 4 variants, each a finite bound above 0 bits/dim (huge: the net is untrained)
    assert all(0 < rep[v]["total"] < np.inf for v in VARIANTS)
    z = np.load(tmp_path / "ev" / "terms.npz")
    assert z["L_beta"].shape == (4, T + 1)


def _learned_checkpoint(tmp_path):
    sched, info = scaled_schedule("linear", T)
    net = UNet(image_shape=(1, 14, 14), ch=8, ch_mult=(1, 2), groups=4, temb_dim=16,
               mid_attention=False, dropout=0.0, out_mult=2)
    rng = np.random.default_rng(3)
    params = net.init(rng, dtype=np.float32)
    params["out.conv.w"] = (0.3 * rng.standard_normal(params["out.conv.w"].shape)).astype(
        np.float32)
    return save_checkpoint(tmp_path / "ck.npz", net, sched, params, dataset="mnist14",
                           image_size=14, schedule_info=info,
                           train_config={"objective": "hybrid", "variance": "learned_range",
                                         "decoder": "discretized"})


def test_a_learned_variance_checkpoint_is_scored_with_its_own_and_the_fixed_variances(tmp_path):
    from ddpm_ref.mnist_eval import evaluate_checkpoint, variants_for

    assert set(variants_for("learned_range")) == set(VARIANTS) | {"learned", "learned_clip"}
    assert variants_for("fixedsmall") == VARIANTS
    ck = _learned_checkpoint(tmp_path)
    exact, _ = evaluate_checkpoint(ck, n=4)
    # the stratified estimate with every t exact is the exact sum, on the same draws
    strat, _ = evaluate_checkpoint(ck, n=4, strata=(T, 3))
    for v in variants_for("learned_range"):
        total = exact["L_T"] + exact["L"][v][:, 1:].sum(axis=1)
        np.testing.assert_allclose(strat[v]["total"], total, rtol=1e-10)
    assert not np.allclose(strat["learned"]["total"], strat["beta_tilde"]["total"])
    assert main(["--checkpoint", str(ck), "--n", "4", "--t-stride", "3", "--t-exact", "2",
                 "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    rep = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert rep["estimate"].startswith("stratified") and rep["n"] == 4
    z = np.load(tmp_path / "ev" / "totals.npz")
    assert z["total_learned"].shape == (4,)
    D = 14 * 14
    assert rep["learned"]["total"] == pytest.approx(
        float(z["total_learned"].mean()) / (D * math.log(2)), rel=1e-12)
    with pytest.raises(ValueError, match="--t-exact"):
        main(["--checkpoint", str(ck), "--n", "4", "--t-stride", "3", "--t-exact", "99",
              "--out", str(tmp_path / "ev2"), "--quiet"])
