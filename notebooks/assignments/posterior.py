r"""Assignment "posterior" (lecture 2): q(x_{t-1} | x_t, x_0), Eqs. (6)-(7).

Fill in the body, then grade your file:

    python -m ddpm_ref.grade posterior posterior.py

Use NumPy only (not ddpm_ref.diffusion.q_posterior). Schedule arrays have length T + 1 and
index t is the paper's t: sched.beta, sched.alpha, sched.alpha_bar (alpha_bar[0] = 1).
"""

import numpy as np  # noqa: F401 (you will need it)


def q_posterior(sched, x0, xt, t):
    r"""Mean and variance of the forward-process posterior (Eqs. 6-7):

        mu_tilde_t   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                       + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
        beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

    Args:
        sched: a ddpm_ref Schedule.
        x0, xt: (B, ...) float64. t: int array (B,) in 1..T (one t per example).
    Returns:
        (mu_tilde (B, ...), beta_tilde (B, 1, ..., 1)).

    Hints: derive it first (complete the square in x_{t-1} of q(x_t | x_{t-1}) q(x_{t-1} | x_0),
    notebook 02). beta_tilde is not beta. At t = 1, alpha_bar_0 = 1: what do mu_tilde_1 and
    beta_tilde_1 become? Reshape per-example coefficients (B,) to (B, 1, ..., 1).
    """
    raise NotImplementedError
