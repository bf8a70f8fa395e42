"""One BLAS thread for the small 2-D networks.

The 2-D MLP multiplies (256, 128) matrices: too small for a second BLAS thread to pay for itself,
and when OpenBLAS threads spin-wait next to Numba's workers the two starve each other. Measured on
a 2-core machine with a little other load: the demo trained at 12 steps/s with the default
threads and at 534 steps/s with one BLAS thread (docs/benchmarks.md). The CLI's 2-D jobs run
inside :func:`single_blas_thread`; the U-Net's large matrix products keep every core.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def single_blas_thread():
    """A context manager limiting BLAS (OpenBLAS, MKL, ...) to one thread inside it."""
    return threadpool_limits(limits=1, user_api="blas")
