"""Tests for ddpm_ref.elbo.bound_stratified: small t exactly, strata of the rest, unbiased."""

import numpy as np
import pytest

from ddpm_ref.elbo import bound_stratified, bound_terms, stratified_timesteps
from ddpm_ref.schedule import make_schedule

GRID = np.arange(256) / 127.5 - 1.0


def test_strata_cover_t_once_with_weights_summing_to_T():
    rng = np.random.default_rng(0)
    t, w = stratified_timesteps(1000, 100, 40, 7, rng)
    assert t.shape == w.shape and t.shape[0] == 7
    np.testing.assert_array_equal(w.sum(axis=1), 1000.0)  # the last block is 20 long, not 40
    np.testing.assert_array_equal(t[:, :100], np.arange(1, 101)[None].repeat(7, 0))
    starts = np.arange(101, 1001, 40)
    assert np.all((t[:, 100:] >= starts) & (t[:, 100:] < np.minimum(starts + 40, 1001)))
    assert w[0, -1] == 20 and t[:, -1].min() >= 981


def test_stratified_sum_of_a_known_function_is_unbiased():
    # E[sum_j w_j f(t_j)] = sum_t f(t) for any f: the mean of many draws within 5 SE
    T, f = 200, lambda t: np.sin(t / 17.0) + (t / 50.0) ** 2
    t, w = stratified_timesteps(T, 20, 9, 40_000, np.random.default_rng(1))
    est = (w * f(t)).sum(axis=1)
    exact = f(np.arange(1, T + 1)).sum()
    assert abs(est.mean() - exact) < 5 * est.std() / np.sqrt(len(est))
    assert est.std() > 0  # strata were sampled: not the exact sum by construction
    # and a wrong weight (the block's length minus one) is detected at this precision
    bad = ((w - (w > 1)) * f(t)).sum(axis=1)
    assert abs(bad.mean() - exact) > 20 * est.std() / np.sqrt(len(est))


def test_all_exact_equals_bound_terms_on_the_same_draws():
    sched = make_schedule("linear", 12, beta_start=0.01, beta_end=0.3)
    rng = np.random.default_rng(3)
    x0 = GRID[rng.integers(0, 256, size=(5, 3))]
    model_fn = lambda xt, t: 0.3 * xt + 0.01 * t[:, None]
    variants = {"a": ("fixedlarge", False), "b": ("fixedsmall", True)}
    ref = bound_terms(sched, model_fn, x0, np.random.default_rng(9), t_chunk=4, variants=variants)
    got = bound_stratified(sched, model_fn, x0, np.random.default_rng(9), exact_upto=12,
                           stride=5, t_chunk=4, variants=variants)
    for name in variants:
        np.testing.assert_allclose(got[name]["total"], ref["total"][name], rtol=1e-12)
        np.testing.assert_allclose(got[name]["L_0"], ref["L_0"][name], rtol=1e-12)


def test_stratified_bound_has_the_exact_bounds_expectation():
    # the same expectation over x_t draws (and t draws) as the exact sum: means within 5 SE
    sched = make_schedule("linear", 60, beta_start=0.002, beta_end=0.2)
    rng = np.random.default_rng(5)
    x0 = np.repeat(GRID[rng.integers(0, 256, size=(1, 2))], 3000, axis=0)
    model_fn = lambda xt, t: 0.5 * xt * np.cos(t[:, None] / 20.0)
    exact = bound_terms(sched, model_fn, x0, np.random.default_rng(6))["total"]
    strat = bound_stratified(sched, model_fn, x0, np.random.default_rng(7), exact_upto=5,
                             stride=8, t_chunk=20)["fixedlarge"]["total"]
    se = np.hypot(exact.std(), strat.std()) / np.sqrt(len(x0))
    assert abs(exact.mean() - strat.mean()) < 5 * se
    assert strat.std() > exact.std()  # sampling t adds variance: the strata were sampled


def test_fixed_variants_read_the_mean_half_of_a_learned_output():
    # a learned-variance network outputs (mean, v): a fixed-variance variant scored on it equals
    # the same variant scored on a network that outputs the mean half alone
    sched = make_schedule("linear", 8, beta_start=0.01, beta_end=0.3)
    rng = np.random.default_rng(2)
    x0 = GRID[rng.integers(0, 256, size=(4, 1, 2, 2))]
    mean_fn = lambda xt, t: 0.2 * xt
    both_fn = lambda xt, t: np.concatenate([0.2 * xt, np.tanh(xt)], axis=1)
    for fn in (bound_terms, bound_stratified):
        kw = {} if fn is bound_terms else dict(exact_upto=3, stride=2)
        mixed = fn(sched, both_fn, x0, np.random.default_rng(1),
                   variants={"learned": ("learned_range", False), "small": ("fixedsmall", False)},
                   **kw)
        alone = fn(sched, mean_fn, x0, np.random.default_rng(1),
                   variants={"small": ("fixedsmall", False)}, **kw)
        tot = (lambda r, n: r["total"][n]) if fn is bound_terms else (lambda r, n: r[n]["total"])
        np.testing.assert_allclose(tot(mixed, "small"), tot(alone, "small"), rtol=1e-12)
        assert not np.allclose(tot(mixed, "learned"), tot(mixed, "small"))


@pytest.mark.parametrize("kw, msg", [(dict(exact_upto=0), "exact_upto"),
                                     (dict(exact_upto=2, stride=0), "stride"),
                                     (dict(exact_upto=2, t_chunk=0), "t_chunk")])
def test_bad_arguments_are_named(kw, msg):
    sched = make_schedule("linear", 8, beta_start=0.01, beta_end=0.3)
    with pytest.raises(ValueError, match=msg):
        bound_stratified(sched, lambda xt, t: xt, GRID[:4, None], np.random.default_rng(0), **kw)
