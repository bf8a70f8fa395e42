r"""Assignment "algorithms" (lectures 6-7): Algorithm 1 (training) and Algorithm 2 (sampling).

Fill in the bodies, then grade your file:

    python -m ddpm_ref.grade algorithms algorithms.py

Use NumPy only (not ddpm_ref.sampling or ddpm_ref.train). ``model_fn(xt, t)`` is a network
eps_theta: it takes x_t (B, ...) and an int array t (B,) and returns eps_theta (B, ...).
Use sigma_t^2 = beta_t throughout. Schedule arrays have length T + 1, index t = the paper's t.
"""

import numpy as np  # noqa: F401 (you will need it)


def draw_t(rng, T, B):
    r"""Algorithm 1, line 3: B timesteps t ~ Uniform({1, ..., T}).

    Returns:
        int array (B,).

    Hint: read the documentation of rng.integers: is its upper end included?
    """
    raise NotImplementedError


def l_simple_loss(sched, model_fn, x0, t, eps):
    r"""Algorithm 1, lines 4-5 (Eq. 14) as a number: the mean over all elements of
    (eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t))^2.

    Args:
        x0, eps: (B, ...). t: int array (B,) in 1..T.
    Returns:
        float.
    """
    raise NotImplementedError


def reverse_step(sched, model_fn, xt, t, z):
    r"""Algorithm 2, lines 3-4 at one step t (an int in 1..T) for the whole batch:

        x_{t-1} = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t))
                  + sigma_t z,    sigma_t = sqrt(beta_t),

    where z is given (B, ...) and is not used at t = 1 (line 3: z = 0 when t = 1).

    Hint: model_fn wants an int array of shape (B,): np.full(len(xt), t).
    """
    raise NotImplementedError


def sample(sched, model_fn, xT, rng):
    r"""The whole of Algorithm 2 from a given x_T (B, ...): loop t = T, T-1, ..., 1 and return x_0.

    Draw the noise as z = rng.standard_normal(xt.shape) once per step with t > 1 and not at all
    at t = 1 (the grader replays your seed: the same draws in the same order as the library).
    """
    raise NotImplementedError
