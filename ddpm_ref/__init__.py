"""ddpm_ref: a pure-NumPy reference implementation of DDPM (Ho, Jain, Abbeel 2020).

Paper: arXiv:2006.11239. Every equation of the paper is a small named function; every gradient
is written by hand. Read next to the paper: docs/paper_map.md maps each numbered equation to its
function, test and notebook section.
"""

from ddpm_ref.checkpoint import load_checkpoint, save_checkpoint
from ddpm_ref.diffusion import (
    eps_from_x0,
    mu_from_eps,
    p_mean_var,
    predict_x0,
    q_posterior,
    q_sample,
    q_step,
    x0_from_eps,
)
from ddpm_ref.elbo import (
    bits_per_dim,
    bound_estimate,
    bound_terms,
    decoder_nll,
    discretized_gaussian_log_likelihood,
    l_simple,
    normal_kl,
    prior_kl,
    vlb_term,
    vlb_term_and_grad,
    vlb_weight,
)
from ddpm_ref.sampling import ddim_sample, interpolate, sample, sample_from
from ddpm_ref.schedule import Schedule, make_schedule
from ddpm_ref.train import NonFiniteLossError, TrainConfig, make_model_fn, train

__version__ = "0.1.0"

__all__ = [
    "Schedule",
    "make_schedule",
    "q_step",
    "q_sample",
    "q_posterior",
    "x0_from_eps",
    "eps_from_x0",
    "mu_from_eps",
    "predict_x0",
    "p_mean_var",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "decoder_nll",
    "prior_kl",
    "vlb_term",
    "vlb_term_and_grad",
    "vlb_weight",
    "bound_terms",
    "bound_estimate",
    "bits_per_dim",
    "l_simple",
    "sample",
    "sample_from",
    "ddim_sample",
    "interpolate",
    "TrainConfig",
    "train",
    "make_model_fn",
    "NonFiniteLossError",
    "save_checkpoint",
    "load_checkpoint",
    "__version__",
]
