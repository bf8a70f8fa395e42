r"""Closed-form diffusion of Gaussian-mixture data: exact q(x_t), the optimal ε*, the exact density.

Paper: Ho, Jain, Abbeel (2020), §2 (Eq. 4) and §3.2 (Eqs. 11-12). For data
x_0 ~ sum_k pi_k N(m_k, S_k) in any dimension D, Eq. (4) gives
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, so the marginal is again a mixture,

    q(x_t) = sum_k pi_k N(sqrt(abar_t) m_k, abar_t S_k + (1 - abar_t) I),

and the minimiser of Eq. (12) / Eq. (14) over all functions is the posterior mean of the noise,

    eps*(x_t, t) = E[eps | x_t] = sum_k r_k(x_t) sqrt(1 - abar_t) C_k^{-1} (x_t - sqrt(abar_t) m_k)
                 = -sqrt(1 - abar_t) grad log q(x_t),          C_k = abar_t S_k + (1 - abar_t) I,

with r_k(x_t) the posterior responsibility of component k. The eigenbasis of each S_k is shared by
C_k at every t (C_k = U_k diag(abar_t lam_k + 1 - abar_t) U_k^T), so one `eigh` per component makes
everything here O(B K D^2) for a batch with one t per example.

This is the oracle the demos compare a trained network with: its Algorithm 2 samples reproduce the
mixture, and its variational bound (Eq. 5) sits next to the exact -log q(x_0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from ddpm_ref._checks import check_int, check_points, check_rng, check_t_or_scalar
from ddpm_ref.diffusion import FIXED_VARIANCES
from ddpm_ref.schedule import Schedule

_LOG_2PI = float(np.log(2.0 * np.pi))


def _readonly(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class GaussianMixture:
    r"""A mixture sum_k weights[k] N(means[k], covs[k]) in D dimensions (frozen, float64).

    Attributes:
        weights: (K,) positive, summing to 1.
        means: (K, D).
        covs: (K, D, D) symmetric positive definite.
        eigvals, eigvecs: (K, D) and (K, D, D), covs[k] = eigvecs[k] diag(eigvals[k]) eigvecs[k]^T.
    """

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    eigvals: np.ndarray = field(init=False, repr=False)
    eigvecs: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        w = np.asarray(self.weights, dtype=np.float64)
        m = np.asarray(self.means, dtype=np.float64)
        c = np.asarray(self.covs, dtype=np.float64)
        if w.ndim != 1 or w.size < 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"weights: expected a (K,) array of positive numbers, got {w!r}")
        if abs(w.sum() - 1.0) > 1e-9:
            raise ValueError(f"weights: expected to sum to 1, got {w.sum():.12g}")
        K = w.size
        if m.ndim != 2 or m.shape[0] != K or not np.all(np.isfinite(m)):
            raise ValueError(f"means: expected finite shape ({K}, D), got {m.shape}")
        D = m.shape[1]
        if c.shape != (K, D, D) or not np.all(np.isfinite(c)):
            raise ValueError(f"covs: expected finite shape ({K}, {D}, {D}), got {c.shape}")
        if not np.allclose(c, np.swapaxes(c, 1, 2), rtol=1e-12, atol=1e-12):
            raise ValueError("covs: expected symmetric matrices")
        lam, U = np.linalg.eigh(c)  # (K, D), (K, D, D)
        if np.any(lam <= 0):
            raise ValueError(
                f"covs: expected positive definite matrices, min eigenvalue {lam.min():.3g}"
            )
        set_ = lambda name, value: object.__setattr__(self, name, _readonly(value))  # frozen
        for name, value in [
            ("weights", w),
            ("means", m),
            ("covs", c),
            ("eigvals", lam),
            ("eigvecs", U),
        ]:
            set_(name, value)

    @property
    def K(self) -> int:
        return int(self.weights.shape[0])

    @property
    def D(self) -> int:
        return int(self.means.shape[1])

    @property
    def mean(self) -> np.ndarray:
        """Overall mean, (D,): sum_k pi_k m_k."""
        return self.weights @ self.means

    @property
    def cov(self) -> np.ndarray:
        """Overall covariance, (D, D): sum_k pi_k (S_k + m_k m_k^T) - mean mean^T."""
        second = np.einsum("k,kd,ke->de", self.weights, self.means, self.means)
        second += np.einsum("k,kde->de", self.weights, self.covs)
        return second - np.outer(self.mean, self.mean)

    def sample(self, n: int, rng: np.random.Generator, return_labels: bool = False):
        """n i.i.d. draws, (n, D) float64 (and the component labels (n,) int64 if asked)."""
        check_rng(rng)
        check_int("n", n, 1)
        labels = rng.choice(self.K, size=n, p=self.weights)  # (n,)
        z = rng.standard_normal((n, self.D))  # (n, D)
        # x = m_k + U_k diag(sqrt(lam_k)) z  has covariance U_k diag(lam_k) U_k^T = S_k
        x = self.means[labels] + np.einsum(
            "nde,ne->nd", self.eigvecs[labels], np.sqrt(self.eigvals[labels]) * z
        )
        return (x, labels.astype(np.int64)) if return_labels else x


# ddpm_ref/data/toy2d.py still imports these two names from here; they are the _checks helpers
_check_rng = check_rng


def _check_count(name: str, n) -> None:
    check_int(name, n, 1)


def _check_gmm(gmm) -> None:
    if not isinstance(gmm, GaussianMixture):
        raise ValueError(f"gmm: expected a GaussianMixture, got {type(gmm).__name__}")


def _components(gmm: GaussianMixture, x, abar, omab):
    r"""Per-component Gaussian terms of q(x_t) at x (B, D).

    abar, omab: (B,) alpha_bar_t and 1 - alpha_bar_t per example (the schedule's
    ``one_minus_alpha_bar``, accurate where alpha_bar_t ~ 1).

    Returns:
        log_joint: (B, K), log pi_k + log N(x; sqrt(abar) m_k, C_k).
        w: (B, K, D), C_k^{-1} (x - sqrt(abar) m_k) (the per-component score, negated).
    """
    a = np.sqrt(abar)[:, None, None]  # (B, 1, 1)
    # C_k = U_k diag(abar lam_k + (1 - abar)) U_k^T
    lam = abar[:, None, None] * gmm.eigvals[None] + omab[:, None, None]  # (B, K, D)
    diff = x[:, None, :] - a * gmm.means[None]  # (B, K, D)
    # coordinates in the eigenbasis, z_k = U_k^T diff_k: one (B, D) @ (D, D) product per component
    # (much faster than einsum or a batched matmul of B*K tiny products when D is small)
    z = np.stack([diff[:, k] @ gmm.eigvecs[k] for k in range(gmm.K)], axis=1)  # (B, K, D)
    z_over = z / lam  # (B, K, D)
    log_norm = -0.5 * (np.sum(z * z_over, axis=2) + np.sum(np.log(lam), axis=2) + gmm.D * _LOG_2PI)
    log_joint = np.log(gmm.weights)[None] + log_norm  # (B, K)
    w = np.stack([z_over[:, k] @ gmm.eigvecs[k].T for k in range(gmm.K)], axis=1)  # U_k z / lam
    return log_joint, w


def log_density(gmm: GaussianMixture, x) -> np.ndarray:
    """Exact log-density log q(x_0) in nats, (B,), of points x (B, D)."""
    _check_gmm(gmm)
    x = check_points("x", x, gmm.D)
    log_joint, _ = _components(gmm, x, np.ones(x.shape[0]), np.zeros(x.shape[0]))
    return logsumexp(log_joint, axis=1)


def exact_nll(gmm: GaussianMixture, x0) -> np.ndarray:
    """-log q(x_0) in nats, (B,): what the variational bound of Eq. (3) bounds from above."""
    return -log_density(gmm, x0)


def q_xt(sched: Schedule, gmm: GaussianMixture, t: int) -> GaussianMixture:
    r"""The marginal q(x_t) (Eq. 4 applied to each component), a GaussianMixture; t in 0..T."""
    _check_gmm(gmm)
    t = int(check_t_or_scalar(sched, t, 1, lo=0)[0])
    abar = sched.alpha_bar[t]
    covs = abar * gmm.covs + sched.one_minus_alpha_bar[t] * np.eye(gmm.D)[None]  # (K, D, D)
    return GaussianMixture(gmm.weights, np.sqrt(abar) * gmm.means, covs)


def log_q_xt(sched: Schedule, gmm: GaussianMixture, xt, t) -> np.ndarray:
    """log q(x_t) in nats, (B,), for xt (B, D) and t (B,) or scalar in 0..T (t = 0: the data)."""
    _check_gmm(gmm)
    xt = check_points("xt", xt, gmm.D)
    t = check_t_or_scalar(sched, t, xt.shape[0], lo=0)
    log_joint, _ = _components(gmm, xt, sched.alpha_bar[t], sched.one_minus_alpha_bar[t])
    return logsumexp(log_joint, axis=1)


def eps_star(sched: Schedule, gmm: GaussianMixture, xt, t) -> np.ndarray:
    r"""The optimal noise prediction E[eps | x_t] = -sqrt(1 - abar_t) grad log q(x_t), (B, D).

    The minimiser of Eq. (12) (and of L_simple, Eq. 14) over all functions of (x_t, t). Within
    component k, (x_t, eps) are jointly Gaussian with Cov(eps, x_t) = sqrt(1 - abar_t) I, so
    E[eps | x_t, k] = sqrt(1 - abar_t) C_k^{-1} (x_t - sqrt(abar_t) m_k); average over r_k(x_t).

    Args:
        xt: (B, D). t: (B,) ints in 1..T of ``sched`` (or a scalar).
    """
    _check_gmm(gmm)
    xt = check_points("xt", xt, gmm.D)
    t = check_t_or_scalar(sched, t, xt.shape[0], lo=1)
    return _eps_star(gmm, xt, sched.alpha_bar[t], sched.one_minus_alpha_bar[t])


def _eps_star(gmm: GaussianMixture, xt, abar, omab) -> np.ndarray:
    """eps* at xt (B, D) with abar, omab (B,) per example (see _components)."""
    log_joint, w = _components(gmm, xt, abar, omab)
    resp = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))  # (B, K), r_k(x_t)
    return np.sqrt(omab)[:, None] * np.sum(resp[:, :, None] * w, axis=1)  # (B, D)


def responsibilities(gmm: GaussianMixture, x) -> np.ndarray:
    """Posterior component probabilities r_k(x) under the data mixture, (B, K)."""
    _check_gmm(gmm)
    x = check_points("x", x, gmm.D)
    log_joint, _ = _components(gmm, x, np.ones(x.shape[0]), np.zeros(x.shape[0]))
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))


def oracle_model_fn(sched: Schedule, gmm: GaussianMixture):
    r"""A model_fn(xt, t) -> eps*(xt, t) (docs/architecture.md) for the exact oracle.

    Per the model_fn contract, ``t`` is a step of the *original* schedule. ``sched`` may be the
    original schedule or a respaced one: the oracle looks up alpha_bar through ``sched.timesteps``
    (a respaced schedule keeps alpha_bar at the kept steps), so both give the same eps*.
    """
    _check_gmm(gmm)
    if not isinstance(sched, Schedule):
        raise ValueError(f"sched: expected a Schedule, got {type(sched).__name__}")
    ts = sched.timesteps  # (T+1,), original step of each step of sched
    abar_by_orig = np.full(int(ts.max()) + 1, np.nan)  # NaN where the original step is not kept
    abar_by_orig[ts] = sched.alpha_bar
    omab_by_orig = np.full(int(ts.max()) + 1, np.nan)
    omab_by_orig[ts] = sched.one_minus_alpha_bar

    def model_fn(xt, t):
        xt = check_points("xt", xt, gmm.D)
        t = np.asarray(t)
        if t.shape != (xt.shape[0],) or not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"t: expected int array of shape ({xt.shape[0]},), got {t.shape}")
        if t.min() < 1 or t.max() >= abar_by_orig.size or np.any(np.isnan(abar_by_orig[t])):
            raise ValueError(f"t: expected original steps of the schedule, got {np.unique(t)[:5]}")
        return _eps_star(gmm, xt, abar_by_orig[t], omab_by_orig[t])

    return model_fn


def oracle_bound(
    sched: Schedule,
    gmm: GaussianMixture,
    x0,
    rng,
    *,
    variance="fixedlarge",
    t_chunk=None,
    progress=False,
) -> dict:
    r"""The variational bound (Eq. 5) of the model whose eps_theta is eps*, next to -log q(x_0).

    Runs :func:`ddpm_ref.elbo.bound_terms` with the oracle model_fn and the Gaussian decoder
    (continuous data). The sum over all T terms is exact; each term L_{t-1} uses one draw
    x_t ~ q(x_t | x_0), so the bound per point is a one-sample Monte Carlo estimate of its
    expectation over x_t. Since E_q[-log p_theta(x_0)] >= E_q[-log q(x_0)] (cross-entropy >=
    entropy) and the bound >= -log p_theta(x_0), the bound exceeds the exact NLL *on average*
    over the data; a single point may fall below it.

    Args:
        x0: (B, D) points. rng: np.random.Generator for the x_t draws. variance: "fixedlarge" or
            "fixedsmall" (§3.2). t_chunk, progress: passed to bound_terms.
    Returns:
        The bound_terms dict (nats per example: "L_T", "L" (B, T+1), "L_0", "L_sum", "total",
        "l_simple") plus "nll" (B,), the exact -log q(x_0).
    """
    from ddpm_ref.elbo import bound_terms  # imported here: the data modules need only the above

    _check_gmm(gmm)
    x0 = check_points("x0", x0, gmm.D)
    if variance not in FIXED_VARIANCES:
        raise ValueError(f"variance: expected 'fixedlarge' or 'fixedsmall', got {variance!r}")
    terms = bound_terms(
        sched,
        oracle_model_fn(sched, gmm),
        x0,
        rng,
        variance=variance,
        decoder="gaussian",
        t_chunk=t_chunk,
        progress=progress,
    )
    terms["nll"] = exact_nll(gmm, x0)
    return terms
