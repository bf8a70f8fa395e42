"""ε-networks for DDPM and the layers they are built from.

Paper: Ho, Jain, Abbeel (2020), §3.2 (the ε-parametrisation, Eq. 11) and Appendix B (the U-Net).

    from ddpm_ref.nn import UNet, reference_unet_config
    net = UNet(**reference_unet_config())          # the reference U-Net of docs/benchmarks.md
    params = net.init(np.random.default_rng(0))    # flat dict of float32 arrays
    eps_theta, cache = net.forward(params, x, t)
    grads = net.backward(d_eps_theta, cache)

Two tiers of layers with the same names and signatures (CS231n's layers.py / fast_layers.py):

    layers.py    every (out, cache) pair in plain NumPy, short bodies to read next to the paper
    fast/        the engine room: Numba kernels, worker threads, Winograd, fused GroupNorm + SiLU

A network's config field ``fast`` (default True) picks the tier; ``UNet(..., fast=False)`` and
``MLP(..., fast=False)`` are whole-network plain-NumPy twins, tested equal to the fast ones.
The networks: mlp.py, unet.py (built from blocks.py); base.py what they share; gradcheck.py the
finite-difference checks.
"""

from ddpm_ref.nn.mlp import MLP, MLPConfig, reference_mlp_config
from ddpm_ref.nn.unet import UNet, UNetConfig, reference_unet_config

__all__ = [
    "MLP",
    "MLPConfig",
    "reference_mlp_config",
    "UNet",
    "UNetConfig",
    "reference_unet_config",
]
