# ruff: noqa: E402  (thread counts are set before numpy is imported)
"""Training (and sampling) speed of BENCHMARKS.md's reference networks, optionally next to PyTorch.

    python benchmarks/bench_train.py --net mlp --batch 256
    python benchmarks/bench_train.py --net unet --batch 64 --peer torch --sample --sample-steps 20

A training step is BENCHMARKS.md's: t ~ Uniform{1..1000} (linear schedule), eps ~ N(0, I),
x_t by Eq. (4) (ddpm_ref.diffusion.q_sample), forward, mean squared error against eps, backward,
one Adam step (lr 2e-4). Data: a fixed pool of random examples in memory. The steps/s reported is
the median over repeats after a warm-up; with --peer torch the repeats of the two sides alternate,
so both see the same machine load. The last line printed is always one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", choices=["mlp", "unet"], default="mlp")
    ap.add_argument("--batch", type=int, default=None, help="default: 256 (mlp), 64 (unet)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--attention", action="store_true", help="U-Net with the middle attention")
    ap.add_argument("--numpy", action="store_true", help="NumPy twins instead of Numba kernels")
    ap.add_argument("--peer", choices=["torch"], default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--repeat-seconds", type=float, default=None, help="default 1 (mlp), 5 (unet)")
    ap.add_argument("--sample", action="store_true", help="also time Algorithm 2")
    ap.add_argument(
        "--sample-steps",
        type=int,
        default=None,
        help="run this many of the T = 1000 sampling steps and extrapolate",
    )
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    return ap.parse_args(argv)


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:  # thread counts must be set before numpy / numba / torch are imported
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    if ARGS.numpy:
        os.environ["DDPM_REF_NUMPY"] = "1"

import json
import platform
import statistics
import time

import numpy as np

from ddpm_ref import make_schedule
from ddpm_ref.diffusion import q_sample
from ddpm_ref.nn import kernels
from ddpm_ref.nn.mlp import MLP, reference_mlp_config
from ddpm_ref.optim import adam_init, adam_update

EXPECTED = {"mlp": 37_762, "unet": 789_217, "unet+attn": 805_985}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class OursRunner:
    """ddpm_ref's training step on the reference network."""

    def __init__(self, net_name, attention, dtype, seed=0):
        if net_name == "mlp":
            self.net = MLP(**reference_mlp_config())
        else:
            from ddpm_ref.nn.unet import UNet, reference_unet_config

            self.net = UNet(**reference_unet_config(attention))
        self.dtype = np.dtype(dtype)
        self.params = self.net.init(np.random.default_rng(seed), dtype=self.dtype)
        self.state = adam_init(self.params)
        self.n_params = self.net.n_params(self.params)

    def train_step(self, sched, x0, t, eps):
        # Eq. (4): x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (float64 maths, cast)
        xt = q_sample(sched, x0, t, eps).astype(self.dtype)
        eps_theta, cache = self.net.forward(self.params, xt, t)
        diff = eps_theta - eps
        loss = float(np.mean(diff * diff))  # Eq. (14), L_simple
        grads = self.net.backward(diff * (2.0 / diff.size), cache)
        self.params, self.state = adam_update(self.params, grads, self.state, lr=2e-4)
        return loss

    def sample(self, sched, shape, n_steps, rng):
        from ddpm_ref.sampling import sample_from
        from ddpm_ref.train import make_model_fn

        model_fn = make_model_fn(self.net, self.params, dtype=self.dtype)
        xT = rng.standard_normal(shape)
        return sample_from(sched, model_fn, xT, n_steps, rng)


def _time_repeat(runner, sched, batches, seconds):
    """Run steps for about `seconds`; return seconds per step."""
    n, t0 = 0, time.perf_counter()
    while True:
        runner.train_step(sched, *batches[n % len(batches)])
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and n >= 3:
            return elapsed / n


def main(args):
    net_name = args.net
    batch = args.batch or (256 if net_name == "mlp" else 64)
    seconds = args.repeat_seconds or (1.0 if net_name == "mlp" else 5.0)
    sched = make_schedule("linear", 1000)
    rng = np.random.default_rng(0)
    ours = OursRunner(net_name, args.attention, args.dtype)
    key = "unet+attn" if (net_name == "unet" and args.attention) else net_name
    if ours.n_params != EXPECTED[key]:
        raise SystemExit(f"ddpm_ref built {ours.n_params} parameters, expected {EXPECTED[key]}")
    shape = (batch, *ours.net.x_shape)
    pool = rng.standard_normal((4 * batch, *ours.net.x_shape)).astype(args.dtype)  # the "data"
    # pre-drawn batches (x0, t, eps) so both sides time the same work and no RNG
    batches = []
    for _ in range(8):
        idx = rng.integers(0, pool.shape[0], size=batch)
        t = rng.integers(1, sched.T + 1, size=batch)  # Algorithm 1, line 3
        eps = rng.standard_normal(shape).astype(args.dtype)  # Algorithm 1, line 4
        batches.append((pool[idx], t, eps))
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    say(
        f"{key}: {ours.n_params} parameters, batch {batch}, {args.dtype}, "
        f"{'numba' if kernels.numba_enabled() else 'numpy'} path, {args.threads} threads"
    )

    _time_repeat(ours, sched, batches, min(seconds, 2.0))  # warm-up (and Numba compilation)
    rss_ours = peak_rss_mb()  # before torch is imported
    peer, peer_skipped = None, None
    if args.peer == "torch":
        try:
            import torch_peer  # noqa: F401  (benchmarks/ is on sys.path when run as a script)
        except ImportError as e:
            peer_skipped = f"torch not importable ({e})"
            say(f"--peer torch: skipped, {peer_skipped}")
        else:
            peer = torch_peer.TorchRunner(net_name, args.attention, args.threads)
            if peer.n_params != ours.n_params:
                raise SystemExit(f"torch built {peer.n_params} parameters, ours {ours.n_params}")
            bshape = (batch,) + (1,) * (len(shape) - 1)  # (B, 1, ...) for broadcasting
            peer_batches = []
            for x0, t, eps in batches:
                sqrt_ab = np.sqrt(sched.alpha_bar[t]).astype(np.float32).reshape(bshape)
                sqrt_1m_ab = np.sqrt(1.0 - sched.alpha_bar[t]).astype(np.float32).reshape(bshape)
                peer_batches.append(
                    (x0.astype(np.float32), t, eps.astype(np.float32), sqrt_ab, sqrt_1m_ab)
                )
            _time_repeat(_Adapter(peer), sched, peer_batches, min(seconds, 2.0))  # warm-up
    ours_t, peer_t = [], []
    for r in range(args.repeats):
        ours_t.append(_time_repeat(ours, sched, batches, seconds))
        if peer is not None:
            peer_t.append(_time_repeat(_Adapter(peer), sched, peer_batches, seconds))
        say(
            f"  repeat {r}: ours {1 / ours_t[-1]:8.2f} steps/s"
            + (f"   torch {1 / peer_t[-1]:8.2f} steps/s" if peer_t else "")
        )
    result = {
        "net": key,
        "batch": batch,
        "dtype": args.dtype,
        "path": "numba" if kernels.numba_enabled() else "numpy",
        "threads": args.threads,
        "n_params": ours.n_params,
        "steps_per_s": 1.0 / statistics.median(ours_t),
        "step_ms_median": 1e3 * statistics.median(ours_t),
        "steps_per_s_repeats": [round(1.0 / s, 3) for s in ours_t],
        "peak_rss_mb": round(rss_ours, 1),
    }
    if peer is not None:
        result["torch_steps_per_s"] = 1.0 / statistics.median(peer_t)
        result["torch_steps_per_s_repeats"] = [round(1.0 / s, 3) for s in peer_t]
        result["ratio_ours_over_torch"] = result["steps_per_s"] / result["torch_steps_per_s"]
        # each repeat of ours is paired with the torch repeat right after it (same load)
        paired = [p / o for o, p in zip(ours_t, peer_t, strict=True)]
        result["ratio_paired_median"] = statistics.median(paired)
    if peer_skipped:
        result["peer_skipped"] = peer_skipped
    if args.sample:
        n_points = 1000 if net_name == "mlp" else 64
        n_steps = args.sample_steps or sched.T
        s_shape = (n_points, *ours.net.x_shape)
        t0 = time.perf_counter()
        ours.sample(sched, s_shape, n_steps, np.random.default_rng(1))
        result["sample_s_T1000"] = (time.perf_counter() - t0) * sched.T / n_steps
        result["sample_steps_timed"] = n_steps
        say(
            f"  sampling {n_points} x T=1000: ours {result['sample_s_T1000']:.2f} s"
            + (f" (extrapolated from {n_steps} steps)" if n_steps != sched.T else "")
        )
        if peer is not None:
            t0 = time.perf_counter()
            peer.sample(sched, s_shape, n_steps, np.random.default_rng(1))
            result["torch_sample_s_T1000"] = (time.perf_counter() - t0) * sched.T / n_steps
            say(f"  sampling: torch {result['torch_sample_s_T1000']:.2f} s")
    result["peak_rss_mb_process"] = round(peak_rss_mb(), 1)
    result["loadavg_1min"] = os.getloadavg()[0]
    result["versions"] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": __import__("numba").__version__,
    }
    if peer is not None:
        result["versions"]["torch"] = __import__("torch").__version__
    print(json.dumps(result))
    return result


class _Adapter:
    """Gives the torch runner the (sched, *batch) call of OursRunner.train_step."""

    def __init__(self, peer):
        self.peer = peer

    def train_step(self, sched, *batch):
        return self.peer.train_step(*batch)


if __name__ == "__main__":
    sys.exit(0 if main(ARGS) else 1)
