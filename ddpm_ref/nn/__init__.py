"""ε-networks for DDPM and the layers they are built from.

Paper: Ho, Jain, Abbeel (2020), §3.2 (the ε-parametrisation, Eq. 11) and Appendix B (the U-Net).

    from ddpm_ref.nn import MLP, UNet
    net = UNet(**reference_unet_config())
    params = net.init(np.random.default_rng(0))
"""

from ddpm_ref.nn.mlp import MLP, MLPConfig, reference_mlp_config

__all__ = ["MLP", "MLPConfig", "reference_mlp_config"]
