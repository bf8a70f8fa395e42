r"""The data sets the command line knows: name -> arrays, shape, decoder and a default network.

Paper: Ho, Jain, Abbeel (2020), §3.3 (images scaled to [-1, 1] for the discretized decoder of
Eq. 13; continuous data gets a Gaussian decoder) and §4 (the ε-network). 2-D toy sets get an MLP,
images a U-Net.

The table is extensible: ``register_dataset(DatasetSpec(...))`` adds a name for ``ddpm-ref train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ddpm_ref.train import TrainConfig

__all__ = ["DatasetSpec", "DATASETS", "TRAIN_DEFAULTS", "register_dataset", "get_dataset",
           "toy_net_config"]

# ``ddpm-ref train`` settings a data set does not override: TrainConfig's defaults, the 2-D
# recipe (an MLP on points, ~10 s on 2 cores) that ``ddpm-ref demo`` uses too. Written once there.
TRAIN_DEFAULTS = {k: getattr(TrainConfig, k) for k in
                  ("steps", "batch", "lr", "warmup", "lr_decay", "ema_decay", "objective",
                   "ckpt_every", "log_every", "seed")}


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of the table.

    Attributes:
        name: the CLI name.
        train_data: train_data(rng) -> (N, ...) float array in model scale.
        test_data: test_data(n, rng) -> (n, ...) held-out data (fresh draws for toy sets).
        x_shape: per-example shape.
        decoder: L_0 of the bound: "gaussian" (continuous points) or "discretized" (Eq. 13).
        make_net: make_net(out_mult) -> a network with the forward/backward contract
            (out_mult = 2 for learned variances).
        image_size: image side (0 for points).
        train_defaults: ``ddpm-ref train`` settings for this data set (keys of
            :data:`TRAIN_DEFAULTS`; the rest come from there).
    """

    name: str
    train_data: Callable
    test_data: Callable
    x_shape: tuple
    decoder: str
    make_net: Callable
    image_size: int = 0
    train_defaults: dict = field(default_factory=dict)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    """Add (or replace) a data set in the table."""
    DATASETS[spec.name] = spec


def get_dataset(name: str) -> DatasetSpec:
    """The spec of ``name``; ValueError listing the known names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    return DATASETS[name]


def toy_net_config(out_mult: int = 1) -> dict:
    """The MLP used for 2-D data: 3 hidden layers of 128 (SiLU), Fourier features of x."""
    return dict(out_mult=out_mult)  # every other field: MLPConfig's defaults (written once there)


def _toy(name: str, n_train: int = 50_000) -> DatasetSpec:
    from ddpm_ref.data import toy2d

    def make_net(out_mult=1):
        from ddpm_ref.nn.mlp import MLP

        return MLP(**toy_net_config(out_mult))

    return DatasetSpec(
        name=name,
        train_data=lambda rng: toy2d.sample(name, n_train, rng),
        test_data=lambda n, rng: toy2d.sample(name, n, rng),
        x_shape=(2,),
        decoder="gaussian",
        make_net=make_net,
    )


def _mnist(size: int) -> DatasetSpec:
    def load(split):
        from ddpm_ref.data import mnist

        images, _ = mnist.load_digits(split, size)  # uint8 (N, size, size)
        return mnist.to_model(images)  # (N, 1, size, size) float32 in [-1, 1]

    def test_data(n, rng):
        x = load("test")
        return x if n >= len(x) else x[np.sort(rng.choice(len(x), n, replace=False))]

    def make_net(out_mult=1):
        from ddpm_ref.nn.unet import UNet, reference_unet_config

        # docs/benchmarks.md's reference U-Net (channels 32/64/64); at 14x14 two levels (14 -> 7)
        cfg = {**reference_unet_config(), "image_shape": (1, size, size), "out_mult": out_mult}
        if size == 14:
            cfg["ch_mult"] = (1, 2)
        return UNet(**cfg)

    return DatasetSpec(
        name="mnist" if size == 28 else f"mnist{size}",
        train_data=lambda rng: load("train"),
        test_data=test_data,
        x_shape=(1, size, size),
        decoder="discretized",
        make_net=make_net,
        image_size=size,
        # recognisable digits from scratch in under an hour on 2 cores (docs/results.md): many
        # small steps at a large lr learn faster per second than the paper's TPU recipe (batch
        # 128, lr 2e-4, 800k steps), annealed to 0 by a half cosine; EMA 0.999 averages the
        # last ~1,000 steps; the hybrid loss (Nichol & Dhariwal) learns sigma_t^2 within
        # [beta_tilde_t, beta_t], 0.16 bits/dim off the bound at the same samples' cost
        train_defaults=dict(steps=5500, batch=32, lr=1e-3, warmup=200, lr_decay="cosine",
                            ema_decay=0.999, objective="hybrid", ckpt_every=250),
    )


for _name in ("gmm", "moons", "swissroll", "8gaussians", "checkerboard", "circles"):
    register_dataset(_toy(_name))
register_dataset(_mnist(28))
register_dataset(_mnist(14))
