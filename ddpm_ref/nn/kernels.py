"""The Numba kernels and their twins live in :mod:`ddpm_ref.nn.fast.kernels`; this module
re-exports them so that ``from ddpm_ref.nn import kernels`` keeps working."""

from ddpm_ref.nn.fast.kernels import *  # noqa: F401,F403
from ddpm_ref.nn.fast.kernels import _KERNELS, numba_enabled, use_numba  # noqa: F401
