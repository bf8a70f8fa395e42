"""Tests for ddpm_ref.schedule: the identities behind every per-timestep array (§2, Eqs. 4, 7)."""

import numpy as np
import pytest

from ddpm_ref.schedule import KINDS, Schedule, make_schedule


@pytest.mark.parametrize("kind", KINDS)
def test_eq4_alpha_bar_is_product_of_alphas(kind):
    sched = make_schedule(kind, 200)
    prod, expected = 1.0, [1.0]
    for t in range(1, sched.T + 1):  # the product written out as a loop, independently of cumprod
        prod *= 1.0 - sched.beta[t]
        expected.append(prod)
    np.testing.assert_allclose(sched.alpha_bar, expected, rtol=1e-12, atol=0)
    assert sched.alpha_bar[0] == 1.0
    assert np.all(np.diff(sched.alpha_bar) < 0)  # strictly decreasing in t


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_one_minus_alpha_bar_is_accurate(kind):
    # Reference in extended precision (long double) from the same float64 betas: the stored
    # 1 - alpha_bar_t keeps full relative accuracy even at t = 1 (where it equals beta_1 ~ 1e-4).
    sched = make_schedule(kind, 1000)
    beta = sched.beta[1:].astype(np.longdouble)
    ref = 1 - np.cumprod(1 - beta)
    np.testing.assert_allclose(sched.one_minus_alpha_bar[1:], ref.astype(float), rtol=1e-13)
    # alpha_bar itself: a cumprod of T roundings, relative error <= T * 2.2e-16 = 2.2e-13
    np.testing.assert_allclose(sched.alpha_bar[1:], np.cumprod(1 - beta).astype(float), rtol=1e-12)
    assert sched.one_minus_alpha_bar[0] == 0.0


def test_index_zero_is_nan_where_undefined():
    sched = make_schedule("linear", 10)
    for name in ("beta", "alpha", "beta_tilde", "log_beta_tilde_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2"):
        assert np.isnan(getattr(sched, name)[0]), name
        assert getattr(sched, name).shape == (11,)
        assert getattr(sched, name).dtype == np.float64
    assert np.isnan(sched.alpha_bar_prev[0]) and sched.alpha_bar_prev[1] == 1.0


def test_arrays_are_read_only():
    sched = make_schedule("linear", 10)
    with pytest.raises(ValueError):
        sched.alpha_bar[3] = 0.5


def test_linear_endpoints_are_the_papers():
    # §4: beta_1 = 1e-4 rising linearly to beta_T = 0.02, T = 1000
    sched = make_schedule("linear", 1000)
    assert sched.T == 1000
    np.testing.assert_allclose([sched.beta[1], sched.beta[1000]], [1e-4, 0.02], rtol=1e-14)
    np.testing.assert_allclose(np.diff(sched.beta[1:], 2), 0.0, atol=1e-15)  # linear in t


def test_cosine_follows_f_ratio_and_clips_at_0999():
    T, s = 1000, 0.008
    sched = make_schedule("cosine", T)
    f = lambda u: np.cos((u / T + s) / (1 + s) * np.pi / 2) ** 2
    t = np.arange(0, T + 1)
    unclipped = sched.beta[1:] < 0.999
    # Nichol & Dhariwal Eq. (17): alpha_bar_t = f(t) / f(0) wherever no beta was clipped before t
    first_clip = np.argmin(unclipped) + 1 if not unclipped.all() else T + 1
    np.testing.assert_allclose(sched.alpha_bar[:first_clip], (f(t) / f(0))[:first_clip], rtol=1e-9)
    assert sched.beta[1:].max() == 0.999
    assert sched.beta[T] == 0.999  # f(T) = cos^2(pi/2) ~ 0, so the last beta is clipped


def test_quadratic_is_linear_in_sqrt_beta():
    sched = make_schedule("quadratic", 100)
    np.testing.assert_allclose(np.diff(np.sqrt(sched.beta[1:]), 2), 0.0, atol=1e-15)
    np.testing.assert_allclose([sched.beta[1], sched.beta[100]], [1e-4, 0.02], rtol=1e-13)


def test_sigmoid_endpoints_monotone_and_symmetric():
    # beta_t = b0 + (b1 - b0) sigmoid(x_t), x_t = -6 .. 6 evenly: beta_1 and beta_T are the
    # sigmoid at -/+6, it rises, and sigmoid(x) + sigmoid(-x) = 1 gives
    # beta_t + beta_{T+1-t} = beta_start + beta_end
    b0, b1, T = 1e-4, 0.02, 1000
    beta = make_schedule("sigmoid", T, beta_start=b0, beta_end=b1).beta
    np.testing.assert_allclose(beta[1], b0 + (b1 - b0) / (1 + np.exp(6.0)), rtol=1e-14)
    np.testing.assert_allclose(beta[T], b0 + (b1 - b0) / (1 + np.exp(-6.0)), rtol=1e-14)
    assert np.all(np.diff(beta[1:]) > 0)
    np.testing.assert_allclose(beta[1:] + beta[1:][::-1], b0 + b1, rtol=1e-14)


def test_repr_is_short_and_informative():
    sched = make_schedule("linear", 1000)
    r = repr(sched)
    assert r == (f"Schedule(linear, T=1000, beta 0.0001..0.02, "
                 f"alpha_bar_T={sched.alpha_bar[1000]:.3g})")
    assert "nan" not in r and len(r) < 100
    r50 = repr(sched.respace(50))
    assert r50.startswith("Schedule(linear, respaced from T = 1000, T=50, beta ")
    assert "nan" not in r50
    assert repr(Schedule.from_betas([0.1, 0.2])).startswith(
        "Schedule(given betas, T=2, beta 0.1..0.2")
    assert str(make_schedule("cosine", 10)).startswith("Schedule(cosine, T=10, ")


def test_eq7_beta_tilde_and_its_clipped_log():
    sched = make_schedule("linear", 50)
    ab = sched.alpha_bar
    t = np.arange(2, 51)
    np.testing.assert_allclose(sched.beta_tilde[t], (1 - ab[t - 1]) / (1 - ab[t]) * sched.beta[t],
                               rtol=1e-12)
    assert sched.beta_tilde[1] == 0.0  # alpha_bar_0 = 1
    assert sched.log_beta_tilde_clipped[1] == np.log(sched.beta_tilde[2])
    np.testing.assert_allclose(sched.log_beta_tilde_clipped[t], np.log(sched.beta_tilde[t]),
                               rtol=1e-14)
    assert np.all(sched.beta_tilde[t] < sched.beta[t])  # beta_tilde_t <= beta_t (§3.2)


def test_eq7_posterior_coefficients_at_t1_return_x0():
    # At t = 1, mu_tilde = x0: coef1 = 1, coef2 = 0
    sched = make_schedule("linear", 20)
    np.testing.assert_allclose(sched.posterior_mean_coef1[1], 1.0, rtol=1e-12)
    assert sched.posterior_mean_coef2[1] == 0.0


@pytest.mark.parametrize("keep", [10, 37, np.array([1, 5, 40, 99, 100])])
def test_respace_keeps_alpha_bar(keep):
    sched = make_schedule("linear", 100)
    sub = sched.respace(keep)
    kept = sub.timesteps[1:]
    assert np.all(np.diff(kept) > 0) and kept.min() >= 1 and kept.max() <= 100
    np.testing.assert_allclose(sub.alpha_bar[1:], sched.alpha_bar[kept], rtol=1e-12)
    if np.isscalar(keep):
        assert sub.T == keep and kept[-1] == 100


def test_respace_all_steps_is_identity_and_composes():
    sched = make_schedule("cosine", 60)
    same = sched.respace(60)
    np.testing.assert_allclose(same.beta[1:], sched.beta[1:], rtol=1e-10)
    np.testing.assert_array_equal(same.timesteps, np.arange(61))
    # timesteps map back to the original schedule. (Linear here: near the end of the cosine
    # schedule alpha'_k = 1 - beta'_k is ~1e-5, so storing beta costs ~1e-16 / alpha'_k relative.)
    lin = make_schedule("linear", 60)
    sub2 = lin.respace(20).respace(5)
    np.testing.assert_allclose(sub2.alpha_bar[1:], lin.alpha_bar[sub2.timesteps[1:]], rtol=1e-12)


def test_from_betas_round_trip():
    betas = np.array([0.1, 0.2, 0.3])
    sched = Schedule.from_betas(betas)
    assert sched.T == 3
    np.testing.assert_array_equal(sched.beta[1:], betas)
    np.testing.assert_allclose(sched.alpha_bar[3], 0.9 * 0.8 * 0.7, rtol=1e-14)


def test_schedule_T1():
    sched = make_schedule("linear", 1)
    assert sched.T == 1 and sched.beta_tilde[1] == 0.0
    assert np.isfinite(sched.log_beta_tilde_clipped[1])


def test_schedules_compare_by_identity_and_hash():
    a, b = make_schedule("linear", 10), make_schedule("linear", 10)
    assert a == a and a != b  # no elementwise-array ambiguity error
    assert len({a, b}) == 2


# ---- bad input: ValueError naming the argument ----

@pytest.mark.parametrize("betas", [[0.1, 0.0], [0.1, 1.0], [-0.1, 0.2], [0.5, 1.5]])
def test_beta_outside_open_unit_interval(betas):
    with pytest.raises(ValueError, match=r"^beta: .*\(0, 1\)"):
        Schedule.from_betas(np.array(betas))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_beta_non_finite(bad):
    with pytest.raises(ValueError, match=r"^beta: expected finite"):
        Schedule.from_betas(np.array([0.1, bad]))


@pytest.mark.parametrize("T", [0, -3, 2.5, True, "10"])
def test_T_must_be_positive_integer(T):
    with pytest.raises(ValueError, match=r"^T: expected an integer >= 1"):
        make_schedule("linear", T)


def test_unknown_kind_and_params():
    with pytest.raises(ValueError, match=r"^kind: expected one of"):
        make_schedule("exponential", 10)
    with pytest.raises(ValueError, match=r"^params: unexpected"):
        make_schedule("linear", 10, beta_stop=0.1)


def test_from_betas_shape_and_dtype():
    with pytest.raises(ValueError, match=r"^betas: expected a 1-D array"):
        Schedule.from_betas(np.zeros((2, 2)) + 0.1)
    with pytest.raises(ValueError, match=r"^betas: expected a 1-D array"):
        Schedule.from_betas(np.array([]))
    with pytest.raises(ValueError, match=r"^betas: expected real numbers"):
        Schedule.from_betas(np.array(["a", "b"]))


@pytest.mark.parametrize("keep", [0, 11, np.array([3, 2]), np.array([0, 5]), np.array([1.0, 2.0])])
def test_respace_bad_keep(keep):
    with pytest.raises(ValueError, match=r"^keep: expected"):
        make_schedule("linear", 10).respace(keep)
