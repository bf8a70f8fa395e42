# ruff: noqa: E402  (thread counts are set before torch is imported)
"""The reference networks of docs/benchmarks.md in PyTorch, for side-by-side timing with ddpm_ref.

bench_train.py runs this file as a separate process (``python torch_peer.py serve ...``) so that
torch's OpenMP pool never shares a process with ddpm_ref's Numba and OpenBLAS threads: in one
process both sides collapse (docs/benchmarks.md). The two processes take turns; the parent waits
while the peer runs a repeat. torch is not a dependency of ddpm_ref. The networks follow
docs/benchmarks.md ("Reference workloads") exactly; `n_params` must equal ddpm_ref's count
(37,762 / 789,217 / 805,985), which bench_train.py checks before timing anything.

Protocol (one line each way, on stdin/stdout): the peer prints ``ready N_PARAMS``; then
``train SECONDS`` -> seconds per step of one timed repeat; ``sample N_STEPS N`` -> seconds for
N_STEPS steps of Algorithm 2 on N examples; ``quit``.
"""

from __future__ import annotations

import math
import os
import sys

if __name__ == "__main__":  # thread counts before torch is imported
    _threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "2"
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """emb = [sin(t f), cos(t f)], f_k = exp(-ln(10000) k / (half - 1)), k = 0..half-1."""
    half = dim // 2
    f = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
    arg = t.float()[:, None] * f[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class TorchMLP(nn.Module):
    """concat(x, sinusoidal32(t)) -> 3 x [Linear(., 128), SiLU] -> Linear(128, 2)."""

    def __init__(self, x_dim=2, hidden=128, depth=3, t_dim=32):
        super().__init__()
        self.t_dim = t_dim
        layers, din = [], x_dim + t_dim
        for _ in range(depth):
            layers += [nn.Linear(din, hidden), nn.SiLU()]
            din = hidden
        layers.append(nn.Linear(hidden, x_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x, t):
        return self.net(torch.cat([x, sinusoidal(t, self.t_dim)], dim=1))


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb_dim, groups=8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups=8):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        N, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(N, 3, C, H * W).unbind(1)  # (N, C, HW) each
        a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(C), dim=-1)  # (N, HW, HW)
        h = (v @ a.transpose(1, 2)).reshape(N, C, H, W)
        return x + self.out(h)


class TorchUNet(nn.Module):
    """The reference U-Net (28x28x1; channels 32/64/64; optional middle attention)."""

    def __init__(self, attention=False, temb_dim=128):
        super().__init__()
        self.temb_dim = temb_dim
        self.t0 = nn.Linear(temb_dim, temb_dim)
        self.t1 = nn.Linear(temb_dim, temb_dim)
        self.conv_in = nn.Conv2d(1, 32, 3, padding=1)
        self.d0 = ResBlock(32, 32, temb_dim)
        self.down0 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.d1 = ResBlock(32, 64, temb_dim)
        self.down1 = nn.Conv2d(64, 64, 3, stride=2, padding=1)
        self.d2 = ResBlock(64, 64, temb_dim)
        self.m0 = ResBlock(64, 64, temb_dim)
        self.attn = AttnBlock(64) if attention else nn.Identity()
        self.m1 = ResBlock(64, 64, temb_dim)
        self.u2 = ResBlock(128, 64, temb_dim)
        self.up2 = nn.Conv2d(64, 64, 3, padding=1)
        self.u1 = ResBlock(128, 64, temb_dim)
        self.up1 = nn.Conv2d(64, 64, 3, padding=1)
        self.u0 = ResBlock(96, 32, temb_dim)
        self.out_norm = nn.GroupNorm(8, 32)
        self.out_conv = nn.Conv2d(32, 1, 3, padding=1)

    def forward(self, x, t):
        temb = self.t1(F.silu(self.t0(sinusoidal(t, self.temb_dim))))
        h = self.conv_in(x)
        s0 = self.d0(h, temb)
        s1 = self.d1(self.down0(s0), temb)
        s2 = self.d2(self.down1(s1), temb)
        h = self.m1(self.attn(self.m0(s2, temb)), temb)
        h = self.u2(torch.cat([h, s2], 1), temb)
        h = self.up2(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.u1(torch.cat([h, s1], 1), temb)
        h = self.up1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.u0(torch.cat([h, s0], 1), temb)
        return self.out_conv(F.silu(self.out_norm(h)))


class TorchRunner:
    """The reference training step and Algorithm 2 for a torch network."""

    def __init__(self, net_name, attention=False, threads=2, seed=0):
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.net = TorchMLP() if net_name == "mlp" else TorchUNet(attention=attention)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=2e-4)
        self.n_params = sum(p.numel() for p in self.net.parameters())

    def train_step(self, x0, t, eps, sqrt_ab, sqrt_1m_ab):
        """x0, eps float32 numpy; t int64 numpy; the Eq. (4) coefficients float32 (B, 1, ...)."""
        x0, eps = torch.from_numpy(x0), torch.from_numpy(eps)
        xt = torch.from_numpy(sqrt_ab) * x0 + torch.from_numpy(sqrt_1m_ab) * eps  # Eq. (4)
        loss = F.mse_loss(self.net(xt, torch.from_numpy(t)), eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def sample(self, sched, shape, n_steps, rng):
        """Algorithm 2 for the last n_steps steps t = n_steps..1, sigma_t^2 = beta_t.

        sched: anything with the arrays beta, alpha, alpha_bar indexed by the paper's t."""
        xt = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        for t in range(n_steps, 0, -1):
            eps_theta = self.net(xt, torch.full((shape[0],), t, dtype=torch.int64))
            a, ab, b = sched["alpha"][t], sched["alpha_bar"][t], sched["beta"][t]
            # Algorithm 2, line 4
            xt = (xt - (1 - a) / math.sqrt(1 - ab) * eps_theta) / math.sqrt(a)
            if t > 1:
                xt = xt + math.sqrt(b) * torch.randn(shape)
        return xt.numpy()


def serve(argv=None) -> int:
    """The peer process: build the network, then answer bench_train.py's requests."""
    import argparse

    ap = argparse.ArgumentParser(prog="torch_peer.py serve")
    ap.add_argument("--net", choices=["mlp", "unet"], required=True)
    ap.add_argument("--attention", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", required=True, help=".npz from bench_train.py")
    args = ap.parse_args(argv)
    with np.load(args.batches, allow_pickle=False) as z:
        n = int(z["n"])
        batches = [
            tuple(z[f"{k}{i}"] for k in ("x0_", "t_", "eps_", "sab_", "s1mab_")) for i in range(n)
        ]
        sched = {k: z[k] for k in ("beta", "alpha", "alpha_bar")}
        x_shape = tuple(int(d) for d in z["x_shape"])
    runner = TorchRunner(args.net, args.attention, args.threads)
    print(f"ready {runner.n_params}", flush=True)
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "train":
            seconds, k, t0 = float(rest[0]), 0, time.perf_counter()
            while True:
                runner.train_step(*batches[k % n])
                k += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds and k >= 3:
                    break
            print(elapsed / k, flush=True)
        elif cmd == "sample":
            n_steps, n_points = int(rest[0]), int(rest[1])
            t0 = time.perf_counter()
            runner.sample(sched, (n_points, *x_shape), n_steps, np.random.default_rng(1))
            print(time.perf_counter() - t0, flush=True)
        elif cmd == "quit":
            break
        else:
            print(f"error unknown command {cmd!r}", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        raise SystemExit(
            "usage: python torch_peer.py serve --net mlp|unet [--attention] "
            "[--threads N] --batches FILE.npz (bench_train.py starts it)"
        )
    sys.exit(serve(sys.argv[2:]))
