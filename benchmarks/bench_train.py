# ruff: noqa: E402  (thread counts are set before numpy is imported)
"""Training (and sampling) speed of the reference networks of docs/benchmarks.md, optionally next to
PyTorch.

    python benchmarks/bench_train.py --net mlp --batch 256
    python benchmarks/bench_train.py --net unet --batch 64 --peer torch --sample --sample-steps 20

A training step is the one docs/benchmarks.md specifies: t ~ Uniform{1..1000} (linear schedule),
eps ~ N(0, I), x_t by Eq. (4) (ddpm_ref.diffusion.q_sample), forward, mean squared error against
eps, backward, one Adam step (lr 2e-4). Data: a fixed pool of random examples in memory. The
steps/s reported is the median over repeats after a warm-up; with --peer torch the repeats of the
two sides alternate (torch in its own process, see torch_peer.py), so both see the same machine
load. The last line printed is always one JSON object.
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
    ap.add_argument(
        "--plain",
        action="store_true",
        help="the plain-NumPy tier (net fast=False, textbook Adam) instead of the engine room",
    )
    ap.add_argument("--peer", choices=["torch"], default=None)
    ap.add_argument(
        "--peer-python",
        default=None,
        help="python that has torch, for --peer torch (default: this one)",
    )
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


def _path(args) -> str:
    """"plain" (the nn.layers tier), else the engine room on "numba" kernels or their "numpy"
    twins."""
    return "plain" if args.plain else ("numba" if kernels.numba_enabled() else "numpy")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class OursRunner:
    """ddpm_ref's training step on the reference network."""

    def __init__(self, net_name, attention, dtype, seed=0, plain=False):
        tier = {"fast": False} if plain else {}  # (no key at all: old trees have no such field)
        self.adam_kw = tier
        if net_name == "mlp":
            self.net = MLP(**reference_mlp_config(), **tier)
        else:
            from ddpm_ref.nn.unet import UNet, reference_unet_config

            self.net = UNet(**reference_unet_config(attention), **tier)
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
        self.params, self.state = adam_update(
            self.params, grads, self.state, lr=2e-4, **self.adam_kw
        )
        return loss

    def sample(self, sched, shape, n_steps, rng):
        from ddpm_ref.sampling import sample_from
        from ddpm_ref.train import make_model_fn

        model_fn = make_model_fn(self.net, self.params, dtype=self.dtype)
        xT = rng.standard_normal(shape)
        return sample_from(sched, model_fn, xT, n_steps, rng)


_CPU = []  # CPU seconds per step of each timed repeat of ours (all threads of this process)


def _time_repeat(runner, sched, batches, seconds):
    """Run steps for about `seconds`; return wall seconds per step (CPU seconds go to _CPU)."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        runner.train_step(sched, *batches[n % len(batches)])
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and n >= 3:
            _CPU.append((time.process_time() - c0) / n)
            return elapsed / n


def main(args):
    net_name = args.net
    batch = args.batch or (256 if net_name == "mlp" else 64)
    seconds = args.repeat_seconds or (1.0 if net_name == "mlp" else 5.0)
    sched = make_schedule("linear", 1000)
    rng = np.random.default_rng(0)
    ours = OursRunner(net_name, args.attention, args.dtype, plain=args.plain)
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
        f"{_path(args)} path, {args.threads} threads"
    )

    _time_repeat(ours, sched, batches, min(seconds, 2.0))  # warm-up (and Numba compilation)
    rss_ours = peak_rss_mb()
    peer, peer_skipped = None, None
    if args.peer == "torch":
        try:
            peer = TorchPeer(args, sched, batches, ours.net.x_shape)
        except RuntimeError as e:
            peer_skipped = str(e)
            say(f"--peer torch: skipped, {peer_skipped}")
        else:
            if peer.n_params != ours.n_params:
                peer.close()
                raise SystemExit(f"torch built {peer.n_params} parameters, ours {ours.n_params}")
            peer.time_repeat(min(seconds, 2.0))  # warm-up
    ours_t, peer_t = [], []
    _CPU.clear()
    for r in range(args.repeats):
        ours_t.append(_time_repeat(ours, sched, batches, seconds))
        if peer is not None:
            peer_t.append(peer.time_repeat(seconds))
        say(
            f"  repeat {r}: ours {1 / ours_t[-1]:8.2f} steps/s"
            + (f"   torch {1 / peer_t[-1]:8.2f} steps/s" if peer_t else "")
        )
    result = {
        "net": key,
        "batch": batch,
        "dtype": args.dtype,
        "path": _path(args),
        "threads": args.threads,
        "n_params": ours.n_params,
        "steps_per_s": 1.0 / statistics.median(ours_t),
        "step_ms_median": 1e3 * statistics.median(ours_t),
        "steps_per_s_repeats": [round(1.0 / s, 3) for s in ours_t],
        # CPU time per step: with --threads 1, less sensitive than wall time to other jobs
        "cpu_ms_per_step_median": 1e3 * statistics.median(_CPU),
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
            result["torch_sample_s_T1000"] = peer.sample_seconds(n_steps, n_points) * (
                sched.T / n_steps
            )
            say(f"  sampling: torch {result['torch_sample_s_T1000']:.2f} s")
    result["peak_rss_mb_process"] = round(peak_rss_mb(), 1)
    result["loadavg_1min"] = os.getloadavg()[0]
    result["versions"] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": __import__("numba").__version__,
    }
    if peer is not None:
        result["versions"]["torch"] = peer.version
        peer.close()
    print(json.dumps(result))
    return result


class TorchPeer:
    """benchmarks/torch_peer.py in its own process, fed the same pre-drawn batches.

    torch's OpenMP threads and ddpm_ref's Numba/OpenBLAS threads must not share a process: there
    both sides lost over an order of magnitude (docs/benchmarks.md). The peer only runs while
    this process waits for its answer, so the two never compete for the cores.
    """

    def __init__(self, args, sched, batches, x_shape):
        import subprocess
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="ddpm_ref_bench_")
        path = os.path.join(self._tmp.name, "batches.npz")
        arrays = {
            "n": np.array(len(batches)),
            "x_shape": np.array(x_shape),
            "beta": sched.beta,
            "alpha": sched.alpha,
            "alpha_bar": sched.alpha_bar,
        }
        for i, (x0, t, eps) in enumerate(batches):
            bshape = (len(t),) + (1,) * len(x_shape)  # (B, 1, ...) for broadcasting
            arrays[f"x0_{i}"] = x0.astype(np.float32)
            arrays[f"t_{i}"] = t.astype(np.int64)
            arrays[f"eps_{i}"] = eps.astype(np.float32)
            arrays[f"sab_{i}"] = np.sqrt(sched.alpha_bar[t]).astype(np.float32).reshape(bshape)
            arrays[f"s1mab_{i}"] = (
                np.sqrt(1.0 - sched.alpha_bar[t]).astype(np.float32).reshape(bshape)
            )
        np.savez(path, **arrays)
        python = args.peer_python or sys.executable
        here = os.path.dirname(os.path.abspath(__file__))
        cmd = [
            python,
            os.path.join(here, "torch_peer.py"),
            "serve",
            "--net",
            args.net,
            "--threads",
            str(args.threads),
            "--batches",
            path,
        ]
        if args.attention:
            cmd.append("--attention")
        probe = subprocess.run(
            [python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
        )
        if probe.returncode != 0:
            self._tmp.cleanup()
            raise RuntimeError(f"torch not importable by {python}")
        self.version = probe.stdout.strip()
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        first = self._proc.stdout.readline().split()
        if first[:1] != ["ready"]:
            self.close()
            raise RuntimeError(f"the torch peer did not start ({' '.join(cmd)})")
        self.n_params = int(first[1])

    def _ask(self, line: str) -> float:
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline()
        if not answer or answer.startswith("error"):
            raise SystemExit(f"torch peer failed on {line!r}: {answer.strip() or 'no answer'}")
        return float(answer)

    def time_repeat(self, seconds: float) -> float:
        """Seconds per training step over one repeat of about `seconds`."""
        return self._ask(f"train {seconds}")

    def sample_seconds(self, n_steps: int, n_points: int) -> float:
        return self._ask(f"sample {n_steps} {n_points}")

    def close(self):
        if self._proc.poll() is None:
            self._proc.stdin.write("quit\n")
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
        self._tmp.cleanup()


if __name__ == "__main__":
    sys.exit(0 if main(ARGS) else 1)
