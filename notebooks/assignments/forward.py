r"""Assignment "forward" (lecture 1): the forward process, Eq. (2) and Eq. (4).

Fill in the bodies (replace each ``raise NotImplementedError``), then grade your file:

    python -m ddpm_ref.grade forward forward.py

Use NumPy only; do not call ddpm_ref.diffusion (that is what the grader compares you with).
Conventions (docs/notation.md): t runs 1..T; per-timestep arrays have length T + 1 and index t is
the paper's t; ``sched.beta[t]`` is beta_t and ``sched.beta[0]`` is NaN (there is no beta_0).
"""

import numpy as np  # noqa: F401 (you will need it)


def alpha_bar(beta):
    r"""alpha_bar_t = prod_{s=1}^{t} (1 - beta_s) for t = 0..T (Eq. 4).

    Args:
        beta: (T+1,) float64, beta[t] = beta_t for t = 1..T; beta[0] is NaN.
    Returns:
        (T+1,) float64 with alpha_bar[0] = 1 (the empty product) and alpha_bar[t] as above.

    Hint: np.cumprod over beta[1:], then put the 1 for t = 0 in front.
    Check: alpha_bar[1] = 1 - beta_1.
    """
    raise NotImplementedError


def q_step(sched, x_prev, t, eps):
    r"""One forward step, a draw of x_t ~ q(x_t | x_{t-1}) given the noise (Eq. 2):
    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps.

    Args:
        sched: a ddpm_ref Schedule (use sched.beta).
        x_prev: (B, ...) float64, x_{t-1}. t: int array (B,), each in 1..T (one t per example).
        eps: (B, ...) standard normal noise.
    Returns:
        x_t: (B, ...).

    Hint: sched.beta[t] has shape (B,); reshape it to (B, 1, ..., 1) so it broadcasts against
    x_prev: ``.reshape((-1,) + (1,) * (x_prev.ndim - 1))``.
    """
    raise NotImplementedError


def q_sample(sched, x0, t, eps):
    r"""A draw of x_t ~ q(x_t | x_0) given the noise (Eq. 4):
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

    Args:
        sched: a Schedule (use sched.alpha_bar; index t is the paper's t).
        x0: (B, ...) data. t: int array (B,) in 1..T. eps: (B, ...) standard normal noise.
    Returns:
        x_t: (B, ...).

    Hint: the mean is scaled by the square root of alpha_bar_t, and the noise by the square
    root of a variance. Which index of alpha_bar belongs to x_t?
    """
    raise NotImplementedError
