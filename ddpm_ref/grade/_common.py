"""Inputs the checks share: the paper's schedule, seeded draws, a fixed stand-in for eps_theta."""

from __future__ import annotations

import numpy as np

from ddpm_ref.schedule import make_schedule


def paper_schedule(kind="linear", T=1000):
    return make_schedule(kind, T)  # Ho et al.'s linear betas 1e-4 .. 0.02 at T = 1000


def rng(seed=0):
    return np.random.default_rng(seed)


def timesteps(T, B, gen, t_min=1):
    """B timesteps in t_min..T that include both ends (the edge cases are where slips show)."""
    t = gen.integers(t_min, T + 1, size=B)
    t[:2] = (t_min, T)
    return t.astype(np.int64)


def toy_eps_theta(xt, t):
    """A deterministic, nonlinear stand-in for a trained network: eps_theta(x_t, t)."""
    t = np.asarray(t, dtype=np.float64).reshape((-1,) + (1,) * (xt.ndim - 1))
    return np.tanh(xt) * (0.5 + 0.4 * np.cos(t / 7.0)) + 0.05 * np.sin(t)
