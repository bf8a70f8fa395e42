r"""Seeded 2D toy datasets for Algorithm 1 / Algorithm 2 demos, each about zero mean, unit variance.

Paper: Ho, Jain, Abbeel (2020) train on images (§4); 2D point clouds are the standard way to watch a
diffusion model learn (tiny-diffusion, FFJORD). Every dataset here is standardised per coordinate
by its *exact* mean and standard deviation (derived in the comments or computed by quadrature of
the noise-free curve at import), not by the batch, so any n gives i.i.d. draws of one distribution.

``gmm`` is a fixed Gaussian mixture (:data:`GMM`) with a closed-form density;
:mod:`ddpm_ref.analytic` turns it into an exact oracle (q(x_t), the optimal eps*, -log q(x_0)) to
compare trained models with.
"""

from __future__ import annotations

import numpy as np

from ddpm_ref.analytic import GaussianMixture, _check_count, _check_rng
from ddpm_ref.analytic import log_density as _gmm_log_density

NAMES = ("moons", "swissroll", "8gaussians", "checkerboard", "circles", "gmm")

# The `gmm` dataset: 4 components with unequal weights and anisotropic covariances. Well separated
# at t = 0 (component stds 0.1-0.5, means 1.4-2.5 apart) but merged once abar_t ~ 0.5 (covariances
# abar S_k + (1 - abar) I): a learned eps_theta has to get the responsibilities right to match eps*.
# Overall mean (0.08, -0.11), per-coordinate std (1.06, 0.92).
GMM = GaussianMixture(
    weights=np.array([0.4, 0.3, 0.2, 0.1]),
    means=np.array([[-1.0, -0.6], [1.1, -0.8], [0.0, 1.2], [1.5, 1.3]]),
    covs=np.array(
        [
            [[0.16, 0.08], [0.08, 0.07]],  # long axis along ~27 degrees
            [[0.08, -0.04], [-0.04, 0.08]],  # along -45 degrees
            [[0.25, 0.00], [0.00, 0.04]],  # wide in x
            [[0.01, 0.00], [0.00, 0.09]],  # tall, thin, and the rarest
        ]
    ),
)

MOONS_NOISE = 0.1  # std of the Gaussian noise added to the moons, in raw units (radius 1)
SWISSROLL_NOISE = 0.5  # in raw units (the roll's radius grows from 1.5 pi to 4.5 pi)
GAUSSIANS8_STD = 0.1  # std of each of the 8 Gaussians after standardisation
CIRCLES_NOISE = 0.05  # in raw units (outer radius 1, inner radius 0.5)


def _quadrature_moments(curve, lo, hi, noise, n=1 << 16):
    """Exact (to ~1e-9) per-coordinate mean and std of curve(theta) + noise, theta ~ U(lo, hi)."""
    theta = lo + (np.arange(n) + 0.5) * (hi - lo) / n  # midpoint rule, (n,)
    pts = curve(theta)  # (n, 2)
    mean = pts.mean(axis=0)
    return mean, np.sqrt(pts.var(axis=0) + noise**2)


def _moons_curve(theta):
    # the two half-moons as one curve over theta in [0, 2 pi): outer arc, then the inner one
    # shifted by (1, 0.5) and flipped (scikit-learn's make_moons geometry)
    outer = theta < np.pi
    th = np.where(outer, theta, theta - np.pi)
    x = np.where(outer, np.cos(th), 1.0 - np.cos(th))
    y = np.where(outer, np.sin(th), 0.5 - np.sin(th))
    return np.stack([x, y], axis=1)


def _swissroll_curve(theta):
    return np.stack([theta * np.cos(theta), theta * np.sin(theta)], axis=1)


_SWISS_LO, _SWISS_HI = 1.5 * np.pi, 4.5 * np.pi
_MOMENTS = {
    "moons": _quadrature_moments(_moons_curve, 0.0, 2.0 * np.pi, MOONS_NOISE),
    "swissroll": _quadrature_moments(_swissroll_curve, _SWISS_LO, _SWISS_HI, SWISSROLL_NOISE),
}


def _moons(n, rng):
    theta = rng.uniform(0.0, 2.0 * np.pi, size=n)  # (n,)
    x = _moons_curve(theta) + MOONS_NOISE * rng.standard_normal((n, 2))
    mean, std = _MOMENTS["moons"]
    return (x - mean) / std


def _swissroll(n, rng):
    theta = rng.uniform(_SWISS_LO, _SWISS_HI, size=n)  # (n,)
    x = _swissroll_curve(theta) + SWISSROLL_NOISE * rng.standard_normal((n, 2))
    mean, std = _MOMENTS["swissroll"]
    return (x - mean) / std


def _gaussians8(n, rng):
    # centres at radius r, angles k pi / 4: per-coordinate variance r^2 / 2 + s^2 (the mean of
    # cos^2 over the 8 angles is 1/2), so r = sqrt(2 (1 - s^2)) gives unit variance.
    s = GAUSSIANS8_STD
    r = np.sqrt(2.0 * (1.0 - s**2))
    angle = rng.integers(0, 8, size=n) * (np.pi / 4.0)  # (n,)
    centres = r * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (n, 2)
    return centres + s * rng.standard_normal((n, 2))


def _checkerboard(n, rng):
    # the 8 black squares of a 4x4 board on [-2, 2]^2 (cells (i, j) with i + j even), uniform.
    # Each coordinate is marginally U(-2, 2), variance 4/3: scale by sqrt(3)/2 for unit variance.
    i = rng.integers(0, 4, size=n)  # column of the cell
    j = 2 * rng.integers(0, 2, size=n) + (i % 2)  # row with i + j even
    u = rng.uniform(0.0, 1.0, size=(n, 2))  # position within the cell
    x = np.stack([i + u[:, 0], j + u[:, 1]], axis=1) - 2.0  # (n, 2) in [-2, 2]^2
    return x * (np.sqrt(3.0) / 2.0)


def _circles(n, rng):
    # two concentric circles, radius 1 and 0.5, equal mass. Per-coordinate variance of a circle of
    # radius r is r^2 / 2, so (1 + 0.25) / 4 + noise^2 over the mixture; mean 0.
    radius = np.where(rng.integers(0, 2, size=n) == 0, 1.0, 0.5)  # (n,)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    x = x + CIRCLES_NOISE * rng.standard_normal((n, 2))
    return x / np.sqrt(1.25 / 4.0 + CIRCLES_NOISE**2)


def _gmm(n, rng):
    return GMM.sample(n, rng)


_SAMPLERS = {
    "moons": _moons,
    "swissroll": _swissroll,
    "8gaussians": _gaussians8,
    "checkerboard": _checkerboard,
    "circles": _circles,
    "gmm": _gmm,
}


def _check_name(name) -> None:
    if name not in NAMES:
        raise ValueError(f"name: expected one of {NAMES}, got {name!r}")


def sample(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n i.i.d. points of the named dataset, (n, 2) float64, about zero mean and unit variance.

    Algorithm 1, line 2 (x_0 ~ q(x_0)) for the toy datasets.

    >>> sample("moons", 3, np.random.default_rng(0)).shape
    (3, 2)
    """
    _check_name(name)
    _check_count("n", n)
    _check_rng(rng)
    return np.ascontiguousarray(_SAMPLERS[name](int(n), rng), dtype=np.float64)


def log_density(name: str, x) -> np.ndarray:
    """Exact log-density in nats, (n,), of points x (n, 2); only ``gmm`` has a closed form."""
    _check_name(name)
    if name != "gmm":
        raise ValueError(f"name: only 'gmm' has a closed-form density, got {name!r}")
    return _gmm_log_density(GMM, x)
