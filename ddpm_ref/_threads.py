"""One BLAS thread for the small 2-D networks.

The 2-D MLP multiplies (256, 128) matrices: too small for a second BLAS thread to pay for itself,
and when OpenBLAS threads spin-wait next to Numba's workers the two starve each other. Measured on
a 2-core machine with a little other load: the demo trained at 12 steps/s with the default
threads and at 534 steps/s with one BLAS thread (docs/benchmarks.md); sampling 2,000 moons
points took 32 s against 13 s. :func:`blas_threads_for` is the one place that decides: every CLI
job on a model of 2-D points (demo, train, sample, evaluate) runs inside it with one BLAS thread;
the U-Net's large matrix products keep every core.
"""

from __future__ import annotations

import contextlib

import numpy as np
from threadpoolctl import threadpool_limits

SMALL_INPUT = 16  # models of inputs with at most this many numbers (2-D points) get one thread


def single_blas_thread():
    """A context manager limiting BLAS (OpenBLAS, MKL, ...) to one thread inside it."""
    return threadpool_limits(limits=1, user_api="blas")


def blas_threads_for(x_shape):
    """The BLAS setting for a job on a model of per-example shape ``x_shape``: one thread for
    small inputs (2-D points: :func:`single_blas_thread`), the library's default otherwise."""
    if int(np.prod(x_shape)) <= SMALL_INPUT:
        return single_blas_thread()
    return contextlib.nullcontext()
