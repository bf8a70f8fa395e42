"""Datasets: 2D toy point clouds (:mod:`ddpm_ref.data.toy2d`) and the bundled MNIST digits
(:mod:`ddpm_ref.data.mnist`). Import the submodule you need: ``from ddpm_ref.data import toy2d``."""
