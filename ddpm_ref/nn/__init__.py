"""ε-networks for DDPM and the layers they are built from.

Paper: Ho, Jain, Abbeel (2020), §3.2 (the ε-parametrisation, Eq. 11) and Appendix B (the U-Net).

    from ddpm_ref.nn import UNet, reference_unet_config
    net = UNet(**reference_unet_config())          # BENCHMARKS.md's reference U-Net
    params = net.init(np.random.default_rng(0))    # flat dict of float32 arrays
    eps_theta, cache = net.forward(params, x, t)
    grads = net.backward(d_eps_theta, cache)
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
