"""Solutions to the exercises of notebooks/09_mnist.ipynb.

Run: python 09_mnist.py (uses ddpm_ref/checkpoints/mnist.npz if shipped, else trains a tiny U-Net
for 300 steps on 14x14 digits first, a few minutes).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import ddpm_ref  # noqa: E402
from ddpm_ref.checkpoint import load_checkpoint  # noqa: E402
from ddpm_ref.data.mnist import from_model, load_digits, to_model  # noqa: E402
from ddpm_ref.elbo import bits_per_dim, bound_terms  # noqa: E402
from ddpm_ref.nn import UNet  # noqa: E402
from ddpm_ref.sampling import ddim_sample, sample  # noqa: E402
from ddpm_ref.schedule import make_schedule  # noqa: E402
from ddpm_ref.train import TrainConfig, make_model_fn, train  # noqa: E402

rng = np.random.default_rng(0)
if (Path(ddpm_ref.__file__).parent / "checkpoints" / "mnist.npz").is_file():
    ckpt = load_checkpoint("mnist")
    net, sched, params, size = ckpt.net, ckpt.sched, ckpt.ema, ckpt.image_size
else:
    size = 14
    net = UNet(image_shape=(1, 14, 14), ch=16, ch_mult=(1, 2), mid_attention=False, dropout=0.0,
               groups=8, temb_dim=64)
    sched = make_schedule("linear", 1000)
    cfg = TrainConfig(steps=300, batch=32, lr=1e-3, warmup=100, ema_decay=0.98, log_every=100)
    state, _ = train(net, sched, to_model(load_digits("train", 14)[0]), cfg, rng=rng)
    params = state.ema
model_fn = make_model_fn(net, params)
x_test = to_model(load_digits("test", size)[0]).astype(np.float64)
x_test = x_test[rng.permutation(len(x_test))]
D = x_test[0].size

# 9.1 Fewer steps: a crude quality number is the mean pixel and the background fraction, compared
# with the test digits (look at the images too: from_model(xs) is uint8). The answer depends on the
# model: Song et al. found DDIM (eta = 0) holds up better than ancestral sampling on CIFAR10 and
# CelebA; with the tiny, briefly trained fallback model DDIM's digits come out too bright at every K
# (the deterministic sampler follows the network's errors; ancestral noise partly washes them out).
ref = from_model(x_test)
print(f"test digits: mean pixel {ref.mean():.1f}, background fraction {np.mean(ref < 32):.2f}")
for K in (10, 50, 100):
    s = sched.respace(K)
    for name, fn in (("ancestral", sample), ("DDIM", ddim_sample)):
        xs = from_model(fn(s, model_fn, (16, 1, size, size), rng, clip_x0=True))
        print(f"9.1: K = {K:3d}, {name:9s}: mean pixel {xs.mean():5.1f}, "
              f"background fraction {np.mean(xs < 32):.2f}")

# 9.2 Clipping x0_hat inside the bound changes mu_theta, i.e. it evaluates a *different* reverse
# process (still a valid Markov chain of Gaussians, so its Eq. (5) is still an upper bound on ITS
# -log-likelihood; it is not the bound of the unclipped model of Eq. (11)).
seed = int(rng.integers(2**31))
plain = bound_terms(sched, model_fn, x_test[:2], np.random.default_rng(seed), decoder="discretized")
clip = bound_terms(sched, model_fn, x_test[:2], np.random.default_rng(seed), decoder="discretized",
                   clip_x0=True)
for name, b in (("unclipped", plain), ("clipped", clip)):
    print(f"9.2: {name:9s}: total {bits_per_dim(b['total'], D).mean():.3f} bits/dim, "
          f"L_0 {bits_per_dim(b['L_0'], D).mean():.3f}, "
          f"sum L_t-1 {bits_per_dim(b['L_sum'], D).mean():.3f}")
