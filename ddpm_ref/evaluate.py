r"""Evaluation: the exact variational bound report, and a kernel two-sample distance (MMD).

Paper: Ho, Jain, Abbeel (2020), Eq. (5) (the bound L_T + sum_{t>1} L_{t-1} + L_0 on -log p(x_0)),
Eq. (14) (L_simple), §4.2 / Table 2 (NLL in bits/dim for images). MMD: Gretton et al. (2012),
"A Kernel Two-Sample Test", JMLR 13, Eq. (5) (the biased V-statistic MMD_b^2).

``bound_report`` sums all T terms of Eq. (5) exactly (every t for every point, vectorised through
:func:`ddpm_ref.elbo.bound_terms`), so the only noise is the draw of x_t in each term.

``mmd`` is the *biased* estimate MMD_b^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y) over all
pairs including i = j: it is never negative, and it is > 0 even for two samples of one
distribution (about (E k(x,x) - E k(x,y)) (1/n + 1/m)). ``mmd_floor`` measures that floor: the same
statistic between two fresh independent draws from the data, of the same sizes. A model is "hard
to tell from the data" at this sample size when mmd(samples, data) is within a small factor of it.
The kernel is fixed (no bandwidth chosen from the data): the mean of Gaussian kernels
exp(-||a - b||^2 / (2 h^2)) over a few bandwidths h, so that both fine and coarse structure count.
"""

from __future__ import annotations

import math

import numpy as np

from ddpm_ref.elbo import bound_terms

DEFAULT_BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0)  # for data scaled to about unit variance

__all__ = ["bound_report", "mmd", "mmd_floor", "DEFAULT_BANDWIDTHS"]


def _kernel_mean(a, b, bandwidths, chunk=1024):
    """Mean over all pairs (i, j) of mean_h exp(-||a_i - b_j||^2 / (2 h^2)); a (n, D), b (m, D)."""
    b2 = np.sum(b * b, axis=1)  # (m,)
    inv = [1.0 / (2.0 * h * h) for h in bandwidths]
    total = 0.0
    for i in range(0, a.shape[0], chunk):
        ai = a[i:i + chunk]  # (c, D)
        d2 = np.sum(ai * ai, axis=1)[:, None] + b2[None, :] - 2.0 * (ai @ b.T)  # (c, m)
        np.maximum(d2, 0.0, out=d2)  # rounding can make ||a - a||^2 slightly negative
        for w in inv:
            total += float(np.exp(-w * d2).sum())
    return total / (a.shape[0] * b.shape[0] * len(bandwidths))


def _check_points(name, x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected an array of shape (N, ...) with N >= 1, got {x.shape}")
    x = x.reshape(x.shape[0], -1)  # (N, D): images are flattened
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values")
    return x


def mmd(x, y, bandwidths=DEFAULT_BANDWIDTHS) -> float:
    r"""Biased squared MMD between samples x (n, ...) and y (m, ...) (Gretton et al. 2012, Eq. 5).

    MMD_b^2 = 1/n^2 sum_ij k(x_i, x_j) + 1/m^2 sum_ij k(y_i, y_j) - 2/(nm) sum_ij k(x_i, y_j),
    with k the mean of Gaussian kernels over ``bandwidths``. Non-negative; 0 iff x and y are the
    same multiset of points.
    """
    x, y = _check_points("x", x), _check_points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: expected points of dimension {x.shape[1]} like x, got {y.shape[1]}")
    bandwidths = tuple(float(h) for h in bandwidths)
    if not bandwidths or not all(h > 0 and math.isfinite(h) for h in bandwidths):
        raise ValueError(f"bandwidths: expected positive numbers, got {bandwidths}")
    kxx = _kernel_mean(x, x, bandwidths)
    kyy = _kernel_mean(y, y, bandwidths)
    kxy = _kernel_mean(x, y, bandwidths)
    return max(kxx + kyy - 2.0 * kxy, 0.0)


def mmd_floor(sample_fn, n_x, n_y, rng, bandwidths=DEFAULT_BANDWIDTHS, repeats=3) -> float:
    """The value :func:`mmd` takes between two independent data sets of sizes n_x and n_y.

    Args:
        sample_fn: sample_fn(n, rng) -> (n, ...) fresh draws from the data distribution.
        repeats: average over this many independent pairs (the statistic is itself noisy).
    """
    vals = [mmd(sample_fn(n_x, rng), sample_fn(n_y, rng), bandwidths) for _ in range(repeats)]
    return float(np.mean(vals))


def bound_report(sched, model_fn, x0, rng, variance="fixedlarge", decoder="gaussian",
                 mean_type="eps", clip_x0=False, t_chunk=None, progress=False) -> dict:
    r"""The variational bound of Eq. (5) on the points x0, every term, in nats per point.

    Args:
        sched, model_fn: the schedule and a model_fn(xt, t) (docs/architecture.md).
        x0: (N, ...) held-out data. rng: draws x_t ~ q(x_t | x_0) for each term.
        variance, decoder, mean_type, clip_x0: as in :func:`ddpm_ref.elbo.bound_terms`
            (decoder "discretized" is Eq. 13 for images in [-1, 1]; "gaussian" for points).
    Returns:
        dict of floats (means over the N points): L_T, L_sum (sum_{t=2}^T L_{t-1}), L_0,
        total (= L_T + L_sum + L_0), l_simple (E_t ||eps - eps_theta||^2 / D with t uniform,
        Eq. 14 per dimension, on the same draws); arrays (T+1,), index t (0 unused, NaN):
        per_t_L (L_{t-1}; per_t_L[1] = L_0) and per_t_eps_mse; and, when decoder is
        "discretized", bits_per_dim = total / (D ln 2).
    """
    terms = bound_terms(sched, model_fn, x0, rng, variance=variance, clip_x0=clip_x0,
                        decoder=decoder, mean_type=mean_type, t_chunk=t_chunk,
                        progress=progress)
    L = np.asarray(terms["L"])  # (N, T+1), L[:, t] = L_{t-1}
    per_t_L = np.concatenate([[np.nan], L[:, 1:].mean(axis=0)])  # (T+1,)
    eps_mse = np.asarray(terms["l_simple"])  # (N, T+1), per-t eps-MSE per dimension
    per_t_eps = np.concatenate([[np.nan], eps_mse[:, 1:].mean(axis=0)])
    rep = {
        "L_T": float(np.mean(terms["L_T"])),
        "L_sum": float(np.mean(terms["L_sum"])),
        "L_0": float(np.mean(terms["L_0"])),
        "total": float(np.mean(terms["total"])),
        "l_simple": float(np.mean(per_t_eps[1:])),
        "per_t_L": per_t_L,
        "per_t_eps_mse": per_t_eps,
    }
    if decoder == "discretized":
        D = int(np.prod(np.shape(x0)[1:]))
        rep["bits_per_dim"] = rep["total"] / (D * math.log(2.0))
    return rep
