r"""Progressive coding (§4.3): a KL is a code length, Algorithms 3-4, and a cheap unbiased bound.

Paper: Ho, Jain, Abbeel (2020), §4.3 ("Progressive coding") and its Algorithms 3 (sending x_0)
and 4 (receiving), which "assume access to a procedure, such as minimal random coding [19, 20],
that can transmit a sample x ~ q(x) using approximately D_KL(q(x) || p(x)) bits on average for
any distributions p and q, for which only p is available to the receiver beforehand";
[19] Harsha, Jain, McAllester, Radhakrishnan (2007), [20] Havasi, Peharz, Hernández-Lobato
(2019, "Minimal random code learning").

Minimal random coding (MRC), as implemented here for diagonal Gaussians q and p:

    sender and receiver hold identical copies of a generator (the shared randomness);
    both draw the same K = 2^b candidates z_1..z_K ~ p, b = ceil((KL(q||p) + overhead) / ln 2);
    the sender picks k with probability proportional to q(z_k) / p(z_k) and sends k (b bits)
    and b (an Elias gamma code, 2 floor(log2 b) + 1 bits);
    the receiver returns z_k.

z_k is distributed approximately as q; the approximation improves as the overhead grows
(Havasi et al., building on Chatterjee & Diaconis). Appendix "Progressive compression" of the
paper: MRC "is not tractable for high dimensional data" (K grows as e^KL): these functions are for
the 2-D toy data, where Algorithms 3-4 can actually be run.

``stratified_bound`` is not in the paper: an unbiased estimate of the whole bound, Eq. (5), from
a few network calls per example (the small t exactly, one t per stratum above), for the
train-vs-test comparison of §4.3 on many digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ddpm_ref._checks import check_choice, check_rng, check_x
from ddpm_ref.diffusion import p_mean_var, predict_x0, q_posterior, q_sample
from ddpm_ref.elbo import DECODERS, normal_kl, prior_kl, vlb_term

__all__ = ["MRCCode", "mrc_encode", "mrc_decode", "elias_gamma_bits", "send_progressive",
           "receive_progressive", "stratified_bound"]

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class MRCCode:
    """One minimal-random-coding message: the index k of the chosen candidate and b (K = 2^b).

    ``kl`` (nats) and ``sample`` are the sender's: the receiver gets only index and bits."""

    index: int
    bits: int
    kl: float
    sample: np.ndarray

    @property
    def length_bits(self) -> int:
        """Bits on the wire: b for the index plus the Elias gamma code of b."""
        return self.bits + elias_gamma_bits(self.bits)


def elias_gamma_bits(n: int) -> int:
    """Length of the Elias gamma code of an integer n >= 1: 2 floor(log2 n) + 1 bits."""
    if n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n}")
    return 2 * (int(n).bit_length() - 1) + 1


def _diag_gauss(name, mean, var):
    mean = check_x(f"{name}_mean", np.atleast_1d(mean))
    var = np.broadcast_to(check_x(f"{name}_var", np.atleast_1d(var)), mean.shape)
    if mean.ndim != 1 or np.any(var <= 0):
        raise ValueError(f"{name}_mean, {name}_var: expected a (D,) mean and positive variances")
    return mean, var


def _candidates(shared_rng, p_mean, p_var, K):
    # K draws z_k ~ p = N(p_mean, diag p_var): the same on both sides of the channel
    return p_mean + np.sqrt(p_var) * shared_rng.standard_normal((K, p_mean.shape[0]))  # (K, D)


def mrc_encode(q_mean, q_var, p_mean, p_var, shared_rng, rng, overhead=2.0, max_bits=24):
    r"""Send one draw of q = N(q_mean, diag q_var) to a receiver who knows only p (MRC).

    Args:
        q_mean, q_var, p_mean, p_var: (D,) means and variances (variances may be scalars).
        shared_rng: the sender's copy of the shared generator (the receiver holds an identical
            copy and passes it to :func:`mrc_decode`); advanced by K draws of D normals.
        rng: the sender's private generator (the choice of k).
        overhead: nats added to KL before rounding up to the number of bits b.
        max_bits: refuse a message longer than this (K = 2^b candidates are held in memory).
    Returns:
        MRCCode(index, bits, kl, sample): sample = z_index, approximately a draw of q.
    """
    q_mean, q_var = _diag_gauss("q", q_mean, q_var)
    p_mean, p_var = _diag_gauss("p", p_mean, p_var)
    check_rng(shared_rng)
    check_rng(rng)
    if p_mean.shape != q_mean.shape:
        raise ValueError(f"p_mean: expected shape {q_mean.shape} like q_mean, got {p_mean.shape}")
    if not overhead >= 0:
        raise ValueError(f"overhead: expected a number of nats >= 0, got {overhead}")
    kl = float(normal_kl(q_mean, np.log(q_var), p_mean, np.log(p_var)).sum())  # nats
    bits = max(1, math.ceil((kl + overhead) / _LN2))
    if bits > max_bits:
        raise ValueError(f"q: KL(q || p) = {kl:.1f} nats needs {bits} bits > max_bits = {max_bits}")
    z = _candidates(shared_rng, p_mean, p_var, 2**bits)  # (K, D)
    # importance weights q(z_k) / p(z_k), in logs (the normalisers' ratio is a constant)
    log_w = (-0.5 * ((z - q_mean) ** 2 / q_var + np.log(q_var))
             + 0.5 * ((z - p_mean) ** 2 / p_var + np.log(p_var))).sum(axis=1)  # (K,)
    w = np.exp(log_w - log_w.max())
    k = int(rng.choice(w.shape[0], p=w / w.sum()))
    return MRCCode(index=k, bits=bits, kl=kl, sample=z[k].copy())


def mrc_decode(p_mean, p_var, shared_rng, index, bits):
    """The receiver's side of :func:`mrc_encode`: regenerate the 2^bits candidates from the
    shared generator and return candidate ``index``, shape (D,)."""
    p_mean, p_var = _diag_gauss("p", p_mean, p_var)
    check_rng(shared_rng)
    if not 0 <= int(index) < 2 ** int(bits):
        raise ValueError(f"index: expected an integer in 0..2^{bits} - 1, got {index}")
    return _candidates(shared_rng, p_mean, p_var, 2 ** int(bits))[int(index)].copy()


def _reverse_step(sched, model_fn, x, s, variance):
    """p_theta(x_s | x_{s+1}) for a batch: (mean (B, D), var (B, D)); s + 1 in 1..T."""
    t = np.full(x.shape[0], s + 1)
    mu, sigma2, _ = p_mean_var(sched, x, t, model_fn(x, sched.timesteps[t]), mean_type="eps",
                               variance=variance)
    return mu, np.broadcast_to(sigma2, mu.shape)


def send_progressive(sched, model_fn, x0, shared_rng, rng, variance="fixedsmall", overhead=2.0):
    r"""Algorithm 3, lines 1-4: send x_T, x_{T-1}, ..., x_1 of each point with MRC.

    Line 1 sends x_T ~ q(x_T | x_0) using p(x_T) = N(0, I); line 3 sends
    x_s ~ q(x_s | x_{s+1}, x_0) (Eqs. 6-7) using p_theta(x_s | x_{s+1}) (Eq. 1, eps-network
    model_fn, sigma_t^2 of ``variance``). Line 5 (x_0 with the decoder p_theta(x_0 | x_1)) is an
    entropy code of discrete data; for real-valued points the receiver stops at x_1 and shows
    x0_hat (Eq. 15): a lossy code. Requires sigma_t^2 > 0, so variance="fixedsmall" excludes s = 0.

    Args:
        x0: (B, D) points. shared_rng / rng: as in :func:`mrc_encode` (one shared stream, used in
            the order T..1 and point by point).
    Returns:
        dict: "codes" [s][b] the MRCCode of x_s for point b (s = 1..T; index 0 None),
        "xt" (T+1, B, D) the sent x_s (row 0: NaN), "kl" (B, T+1) nats of each message,
        "length_bits" (B, T+1) bits on the wire (column 0: 0).
    """
    x0 = check_x("x0", x0)
    check_choice("variance", variance, ("fixedlarge", "fixedsmall"))
    T, (B, D) = sched.T, x0.shape
    xt = np.full((T + 1, B, D), np.nan)
    kl = np.zeros((B, T + 1))
    length = np.zeros((B, T + 1), dtype=np.int64)
    codes = [None] * (T + 1)
    # line 1: x_T ~ q(x_T | x_0) = N(sqrt(abar_T) x_0, (1 - abar_T) I) (Eq. 4), using p(x_T)
    q_mean, q_var = np.sqrt(sched.alpha_bar[T]) * x0, np.full((B, D), sched.one_minus_alpha_bar[T])
    p_mean, p_var = np.zeros((B, D)), np.ones((B, D))
    for s in range(T, 0, -1):  # line 2: s = T, then T-1, ..., 1 (Algorithm 3's t)
        if s < T:  # line 3: q(x_s | x_{s+1}, x_0) (Eqs. 6-7) using p_theta(x_s | x_{s+1})
            t = np.full(B, s + 1)
            q_mean, beta_tilde = q_posterior(sched, x0, xt[s + 1], t)
            q_var = np.broadcast_to(beta_tilde, (B, D))
            p_mean, p_var = _reverse_step(sched, model_fn, xt[s + 1], s, variance)
        codes[s] = [mrc_encode(q_mean[b], q_var[b], p_mean[b], p_var[b], shared_rng, rng,
                               overhead=overhead) for b in range(B)]
        xt[s] = np.stack([c.sample for c in codes[s]])
        kl[:, s] = [c.kl for c in codes[s]]
        length[:, s] = [c.length_bits for c in codes[s]]
    return {"codes": codes, "xt": xt, "kl": kl, "length_bits": length}


def receive_progressive(sched, model_fn, codes, shared_rng, variance="fixedsmall"):
    r"""Algorithm 4, lines 1-4 for the messages of :func:`send_progressive`.

    The receiver knows only p(x_T), the network and the shared generator: it rebuilds
    p_theta(x_s | x_{s+1}) from what it has received and decodes each message. After x_s it can
    show x0_hat = (x_s - sqrt(1 - abar_s) eps_theta(x_s, s)) / sqrt(abar_s) (Eq. 15).

    Returns:
        (xt (T+1, B, D) the received x_s, row 0 NaN; x0_hat (T+1, B, D), row s the estimate
        after x_s arrived, row 0 the estimate from x_1).
    """
    T = sched.T
    B = len(codes[T])
    D = codes[T][0].sample.shape[0]
    xt = np.full((T + 1, B, D), np.nan)
    x0_hat = np.full((T + 1, B, D), np.nan)
    p_mean, p_var = np.zeros((B, D)), np.ones((B, D))  # line 1: p(x_T) = N(0, I)
    for s in range(T, 0, -1):
        if s < T:  # line 3: p_theta(x_s | x_{s+1}) from the x_{s+1} already received
            p_mean, p_var = _reverse_step(sched, model_fn, xt[s + 1], s, variance)
        xt[s] = np.stack([mrc_decode(p_mean[b], p_var[b], shared_rng, c.index, c.bits)
                          for b, c in enumerate(codes[s])])
        t = np.full(B, s)
        x0_hat[s] = predict_x0(sched, xt[s], t, model_fn(xt[s], sched.timesteps[t]))  # Eq. (15)
    x0_hat[0] = x0_hat[1]
    return xt, x0_hat


def stratified_bound(sched, model_fn, x0, rng, n_exact=8, n_strata=32, variance="fixedlarge",
                     clip_x0=False, decoder="discretized", mean_type="eps"):
    r"""An unbiased estimate of the bound Eq. (5) per example from n_exact + n_strata terms.

    L = L_T + sum_{t=1}^{T} L_{t-1} (L_0 the t = 1 term). The terms t = 1..n_exact are computed
    as :func:`ddpm_ref.bound.bound_terms` does (one x_t ~ q(x_t | x_0) each); the remaining steps
    are cut into n_strata strata with geometrically spaced edges (the terms fall steeply with t),
    and each stratum S contributes |S| L_{t_S - 1} at one uniform t_S in S: E = sum_{t in S}
    L_{t-1}. With every stratum a single step this is bound_terms' sum exactly.

    Args:
        x0: (B, ...) data; rng: Generator for the strata's t and the x_t draws.
        variance, clip_x0, decoder, mean_type: as in :func:`ddpm_ref.elbo.vlb_term`.
    Returns:
        (B,) nats per example.
    """
    x0 = check_x("x0", x0)
    check_rng(rng)
    check_choice("decoder", decoder, DECODERS)
    T, B = sched.T, x0.shape[0]
    if not 1 <= int(n_exact) <= T:
        raise ValueError(f"n_exact: expected an integer in 1..{T}, got {n_exact}")
    rest = T - int(n_exact)
    if rest and not 1 <= int(n_strata) <= rest:
        raise ValueError(f"n_strata: expected an integer in 1..{rest}, got {n_strata}")
    # stratum edges n_exact = e_0 < e_1 < ... = T (geometric, then made strictly increasing)
    edges = np.unique(np.round(np.geomspace(n_exact, T, int(n_strata) + 1)).astype(int)) if rest \
        else np.array([T])
    lo, hi = edges[:-1] + 1, edges[1:]  # stratum j = steps lo[j]..hi[j]
    total = prior_kl(sched, x0)  # L_T, (B,)
    exact = np.arange(1, int(n_exact) + 1)  # (n_exact,) the terms computed exactly, weight 1
    t_all = np.repeat(exact[None], B, 0)  # (B, n_exact)
    if rest:  # one uniform t per stratum and example
        t_all = np.concatenate([t_all, rng.integers(lo, hi + 1, size=(B, lo.shape[0]))], axis=1)
    w_all = np.concatenate([np.ones(int(n_exact)), (hi - lo + 1).astype(float)])  # (n,) |S|
    n = t_all.shape[1]
    t = t_all.T.reshape(-1)  # (n*B,) term-major
    xb = np.broadcast_to(x0, (n,) + x0.shape).reshape((n * B,) + x0.shape[1:])
    xt = q_sample(sched, xb, t, rng.standard_normal(xb.shape))  # Eq. (4)
    out = np.asarray(model_fn(xt, sched.timesteps[t]), dtype=np.float64)
    terms = vlb_term(sched, xb, xt, t, out, variance=variance, clip_x0=clip_x0, decoder=decoder,
                     mean_type=mean_type).reshape(n, B)  # (n, B)
    return total + w_all @ terms
