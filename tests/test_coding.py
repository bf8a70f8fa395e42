"""Progressive coding (§4.3): minimal random coding, Algorithms 3-4, the stratified bound."""

import math

import numpy as np
import pytest

from ddpm_ref.analytic import oracle_model_fn
from ddpm_ref.bound import bound_terms
from ddpm_ref.coding import (
    elias_gamma_bits,
    mrc_decode,
    mrc_encode,
    receive_progressive,
    send_progressive,
    stratified_bound,
)
from ddpm_ref.data import toy2d
from ddpm_ref.demo import scaled_schedule
from ddpm_ref.elbo import normal_kl


def test_mrc_receiver_decodes_the_senders_sample_bit_for_bit():
    rng = np.random.default_rng(0)
    q_mean, q_var = np.array([0.8, -1.1]), np.array([0.2, 0.05])
    code = mrc_encode(q_mean, q_var, np.zeros(2), 1.0, np.random.default_rng(7), rng)
    z = mrc_decode(np.zeros(2), 1.0, np.random.default_rng(7), code.index, code.bits)
    assert np.array_equal(z, code.sample)
    # another shared stream gives another candidate list: the receiver needs the same randomness
    assert not np.array_equal(mrc_decode(np.zeros(2), 1.0, np.random.default_rng(8), code.index,
                                         code.bits), code.sample)


def test_mrc_code_length_is_kl_plus_overhead_rounded_up_to_bits():
    rng = np.random.default_rng(1)
    for overhead in (0.5, 2.0, 4.0):
        q_mean, q_var = rng.normal(size=3), rng.uniform(0.05, 0.5, size=3)
        kl = float(normal_kl(q_mean, np.log(q_var), 0.0, 0.0).sum())
        code = mrc_encode(q_mean, q_var, np.zeros(3), 1.0, np.random.default_rng(2), rng,
                          overhead=overhead)
        assert code.kl == pytest.approx(kl, rel=1e-12)
        # b = ceil((KL + overhead) / ln 2): the index costs between KL + overhead and 1 bit more
        assert kl + overhead <= code.bits * math.log(2) < kl + overhead + math.log(2) + 1e-12
        assert code.length_bits == code.bits + 2 * (code.bits.bit_length() - 1) + 1


def test_elias_gamma_lengths():
    assert [elias_gamma_bits(n) for n in (1, 2, 3, 4, 7, 8, 1000)] == [1, 3, 3, 5, 5, 7, 19]
    with pytest.raises(ValueError, match="n:"):
        elias_gamma_bits(0)


def test_mrc_samples_follow_q():
    # q = N(1.5, 0.3^2) sent with p = N(0, 1) (KL = 1.9 nats); 4 nats of overhead make the
    # MRC distribution close to q. n = 3000 messages: the mean's standard error is 0.3/sqrt(n)
    # = 0.0055, the variance's 0.09 sqrt(2/n) = 0.0023; 5 standard errors each.
    rng, shared = np.random.default_rng(3), np.random.default_rng(4)
    n = 3000
    z = np.array([mrc_encode(np.array([1.5]), 0.09, np.zeros(1), 1.0, shared, rng,
                             overhead=4.0).sample[0] for _ in range(n)])
    assert abs(z.mean() - 1.5) < 5 * 0.3 / math.sqrt(n)
    assert abs(z.var() - 0.09) < 5 * 0.09 * math.sqrt(2 / n)
    # with no overhead at all the candidate list is too short and the draws are visibly off q
    z0 = np.array([mrc_encode(np.array([1.5]), 0.09, np.zeros(1), 1.0, shared, rng,
                              overhead=0.0).sample[0] for _ in range(n)])
    assert abs(z0.var() - 0.09) > 5 * 0.09 * math.sqrt(2 / n)


def test_mrc_refuses_a_message_that_is_too_long():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="max_bits"):
        mrc_encode(np.full(4, 5.0), 1e-4, np.zeros(4), 1.0, rng, rng, max_bits=12)


def test_algorithms_3_4_receiver_rebuilds_the_senders_chain():
    sched, _ = scaled_schedule("linear", 10)
    model_fn = oracle_model_fn(sched, toy2d.GMM)
    x0 = toy2d.sample("gmm", 6, np.random.default_rng(0))
    sent = send_progressive(sched, model_fn, x0, np.random.default_rng(5), np.random.default_rng(6))
    xt, x0_hat = receive_progressive(sched, model_fn, sent["codes"], np.random.default_rng(5))
    assert np.array_equal(xt[1:], sent["xt"][1:])  # Algorithm 4 receives what Algorithm 3 sent
    assert np.all(sent["length_bits"][:, 1:] >= 1) and np.all(sent["kl"][:, 1:] >= 0)
    # x0_hat improves from x_T's (about the data mean) to x_1's (near x_0: Eq. 15 at t = 1)
    err = np.sqrt(((x0_hat - x0[None]) ** 2).sum(axis=2)).mean(axis=1)  # (T+1,)
    assert err[1] < 0.25 * err[sched.T]


def test_stratified_bound_with_every_step_exact_is_bound_terms():
    sched, _ = scaled_schedule("linear", 40)
    model_fn = oracle_model_fn(sched, toy2d.GMM)
    x0 = toy2d.sample("gmm", 5, np.random.default_rng(1))
    a = stratified_bound(sched, model_fn, x0, np.random.default_rng(2), n_exact=sched.T,
                         decoder="gaussian")
    b = bound_terms(sched, model_fn, x0, np.random.default_rng(2), decoder="gaussian",
                    t_chunk=sched.T)["total"]  # the same noise draws in the same order
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_stratified_bound_is_unbiased():
    # both estimate E[L] for the same points; compare the means over 3000 copies of 10 points.
    # The tolerance is 5 standard errors of the difference of two independent means.
    sched, _ = scaled_schedule("linear", 100)
    model_fn = oracle_model_fn(sched, toy2d.GMM)
    x0 = np.repeat(toy2d.sample("gmm", 10, np.random.default_rng(3)), 300, axis=0)
    rng = np.random.default_rng(4)
    a = stratified_bound(sched, model_fn, x0, rng, n_exact=3, n_strata=6, decoder="gaussian")
    b = bound_terms(sched, model_fn, x0, rng, decoder="gaussian")["total"]
    se = math.sqrt(a.var() / a.size + b.var() / b.size)
    assert abs(a.mean() - b.mean()) < 5 * se
    # and with one step per stratum above n_exact (97 strata of one step) the same holds
    c = stratified_bound(sched, model_fn, x0, rng, n_exact=3, n_strata=97, decoder="gaussian")
    assert abs(c.mean() - b.mean()) < 5 * math.sqrt(c.var() / c.size + b.var() / b.size)


def test_stratified_bound_rejects_bad_counts():
    sched, _ = scaled_schedule("linear", 10)
    x0 = np.zeros((2, 2))
    with pytest.raises(ValueError, match="n_exact"):
        stratified_bound(sched, lambda x, t: x, x0, np.random.default_rng(0), n_exact=0)
    with pytest.raises(ValueError, match="n_strata"):
        stratified_bound(sched, lambda x, t: x, x0, np.random.default_rng(0), n_exact=5,
                         n_strata=6)
