"""Worker threads and BLAS-thread control: each worker thread runs its share of the batch.

A convolution by im2col alternates two kinds of work per chunk of images: unrolling (a Numba
kernel) and a matmul (BLAS). Splitting *each* step over the cores costs a fork/join per step, and
multithreaded OpenBLAS parallelises medium-sized matmuls poorly. Instead, the batch is split into
one contiguous range of images per core; each worker thread unrolls its chunks into its own
cache-sized buffer and runs single-threaded matmuls on them, so the only synchronisation is the
join at the end of the layer. GroupNorm and SiLU split their images / elements the same way.

Single-threaded BLAS inside the workers: OpenBLAS (>= 0.3.27, as bundled with NumPy wheels) has a
per-thread setting, ``openblas_set_num_threads_local``, which each worker calls once. Where it is
missing (another BLAS), layers run their chunks in the calling thread instead and BLAS keeps its
own threading: correct, only slower.

The worker count is Numba's thread count (``NUMBA_NUM_THREADS``, default: the number of cores).
Kernels called from workers are serial and release the GIL (``nogil=True``, no ``prange``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_lock = threading.Lock()
_state = {"pool": None, "n": None}


def _reset_after_fork():
    # threads do not survive fork(): a child process builds its own pool on first use
    global _lock
    _lock = threading.Lock()
    _state.update(pool=None, n=None)


os.register_at_fork(after_in_child=_reset_after_fork)


def _openblas_local_setters():
    """``openblas_set_num_threads_local`` of every OpenBLAS loaded in this process (Linux)."""
    setters, seen = [], set()
    try:
        with open("/proc/self/maps") as maps:
            paths = [ln.split()[-1] for ln in maps if "openblas" in ln.lower()]
    except OSError:
        return setters
    for path in paths:
        if path in seen or not path.startswith("/"):
            continue
        seen.add(path)
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        setters.append(fn)
    return setters


def _worker_init(setters):
    for fn in setters:
        fn(1)  # this thread's BLAS calls run single-threaded


def num_workers() -> int:
    """Threads a layer splits its batch over (1 means: run in the calling thread)."""
    _ensure_pool()
    return _state["n"]


def _ensure_pool():
    with _lock:
        if _state["n"] is not None:
            return
        setters = _openblas_local_setters()
        n = int(numba.config.NUMBA_NUM_THREADS)
        _state["n"] = n if (setters and n > 1) else 1
        if _state["n"] > 1:
            _state["pool"] = ThreadPoolExecutor(n, "ddpm_ref", _worker_init, (setters,))


def map_ranges(fn, N, grain=1):
    """Run ``fn(a, z)`` on contiguous ranges [a, z) covering range(N), one per worker.

    Ranges hold at least ``grain`` items (small jobs run in the calling thread: a hand-off to a
    worker costs tens of microseconds). Returns the results in range order. ``fn`` must write
    only inside its range.
    """
    if N < 2 * max(1, grain):  # too small to split: no need to look at the pool
        return [fn(0, N)]
    n = min(num_workers(), N // max(1, grain))
    if n <= 1:
        return [fn(0, N)]
    bounds = [N * i // n for i in range(n + 1)]  # balanced contiguous ranges
    futures = [
        _state["pool"].submit(fn, a, z) for a, z in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return [f.result() for f in futures]


_GRAIN = 1 << 15  # elements per range below which a hand-off costs more than it saves


def image_grain(x):
    """The ``grain`` for splitting the batch (axis 0) of x: images per range below which a
    hand-off to a worker costs more than it saves."""
    return _GRAIN // max(1, x[0].size) + 1


def sum_parts(parts):
    """Element-wise sums of the tuples of arrays that :func:`map_ranges` returned, one tuple per
    range (in place, into the first range's arrays)."""
    total = parts[0]
    for part in parts[1:]:
        for t, p in zip(total, part, strict=True):
            t += p
    return total


# ----------------------------------------------------------------------------------------------
# The few whole-batch NumPy operations between layers, split the same way (on the calling thread
# alone they leave the second core idle for a few per cent of a U-Net step; docs/benchmarks.md)


def add(a, b):
    """a + b into a fresh array, image ranges in parallel (b: a's first axis, broadcasting)."""
    out = np.empty(a.shape, dtype=np.result_type(a, b))
    map_ranges(lambda i, j: np.add(a[i:j], b[i:j], out=out[i:j]), a.shape[0], image_grain(a))
    return out


def copy(a):
    """A C-contiguous copy of a, image ranges in parallel."""
    out = np.empty(a.shape, dtype=a.dtype)
    map_ranges(lambda i, j: np.copyto(out[i:j], a[i:j]), a.shape[0], image_grain(a))
    return out


def sum_hw(x):
    """x (N, C, H, W) summed over H and W: (N, C), image ranges in parallel."""
    out = np.empty(x.shape[:2], dtype=x.dtype)
    map_ranges(lambda i, j: np.sum(x[i:j], axis=(2, 3), out=out[i:j]), x.shape[0], image_grain(x))
    return out
