r"""The paper's image figures, on digits: progressive generation, shared latents, interpolation,
and the rate-distortion curve.

Paper: Ho, Jain, Abbeel (2020), §4.3 "Progressive coding":
  Fig. 6  x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_bar_t) along one
          reverse chain of Algorithm 2 (large-scale features appear first, details last);
  Fig. 7  samples x_0 ~ p_theta(x_0 | x_t) sharing one x_t ~ q(x_t | x_0) of a test digit, for
          several t (the larger t, the less of the digit they keep);
  Fig. 8  interpolation through x_t: mix the encodings of two digits, decode with the reverse
          process (Appendix D; t = 0 is plain pixel-space interpolation);
  Fig. 5 / Table 4  rate (bits/dim sent to reach x_t, L_T + sum_{s>t} L_{s-1}) against distortion
          (RMSE of x0_hat on the 0-255 scale), from :func:`ddpm_ref.mnist_eval.rate_distortion`.

Each figure is a function returning arrays (uint8 images) plus a small writer; the notebook
uses the same functions. One command writes them all:

    ddpm-ref figures --checkpoint mnist --out docs/figures
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ddpm_ref.data.mnist import from_model, image_grid
from ddpm_ref.diffusion import q_sample
from ddpm_ref.sampling import interpolate, sample, sample_from

__all__ = ["FIGURES", "progressive_generation", "shared_latent_samples", "interpolations",
           "rows_grid", "save_grid_png", "plot_rate_distortion", "model_fn_of", "write_figures",
           "main"]


def _steps(T, k):
    """k steps from T down to 0, evenly spaced and distinct (k <= T + 1)."""
    if not 2 <= int(k) <= T + 1:
        raise ValueError(f"n_steps: expected an integer in 2..{T + 1}, got {k}")
    return np.unique(np.round(np.linspace(0, T, int(k))).astype(np.int64))[::-1]


def progressive_generation(sched, model_fn, n, rng, n_steps=10, mean_type="eps",
                           variance="fixedlarge", progress=False):
    r"""Fig. 6: x0_hat along n reverse chains (Algorithm 2), at n_steps steps from T to 0.

    Returns:
        ts (K,) descending, with ts[-1] = 0 (the sample itself); images uint8 (n, K, H, W),
        images[i, j] = x0_hat of chain i at step ts[j] (clipped to [-1, 1] as in sampling).
    """
    ts = _steps(sched.T, n_steps)
    shape = (int(n),) + _x_shape(model_fn)
    _, trace = sample(sched, model_fn, shape, rng, mean_type=mean_type, variance=variance,
                      clip_x0=True, trace_steps=ts, progress=progress)
    x0_pred = trace["x0_pred"]  # (K, n, 1, H, W) in trace order (descending t)
    images = np.stack([from_model(x) for x in x0_pred], axis=1)  # (n, K, H, W)
    return np.asarray(trace["t"]), images


def shared_latent_samples(sched, model_fn, x0, ts, n, rng, mean_type="eps",
                          variance="fixedlarge", progress=False):
    r"""Fig. 7: for each t in ``ts``, one x_t ~ q(x_t | x0) (Eq. 4) of the digit x0 (1, H, W),
    and n samples of p_theta(x_0 | x_t) from it (the reverse chain from t).

    Returns:
        xt uint8 (K, H, W) (clipped to [-1, 1] for display); samples uint8 (K, n, H, W).
    """
    x0 = np.asarray(x0, dtype=np.float64)[None]  # (1, 1, H, W)
    xts, rows = [], []
    for t in ts:
        tt = np.array([int(t)])
        xt = q_sample(sched, x0, tt, rng.standard_normal(x0.shape))  # (1, 1, H, W)
        x = sample_from(sched, model_fn, np.repeat(xt, n, axis=0), int(t), rng,
                        mean_type=mean_type, variance=variance, clip_x0=True, progress=progress)
        xts.append(from_model(xt)[0])
        rows.append(from_model(x))
    return np.stack(xts), np.stack(rows)


def interpolations(sched, model_fn, x0_a, x0_b, ts, n, rng, mean_type="eps",
                   variance="fixedlarge", progress=False):
    r"""Fig. 8: n interpolants between digits x0_a and x0_b (each (1, H, W)) through x_t, for
    each t in ``ts`` (:func:`ddpm_ref.sampling.interpolate`). Returns uint8 (K, n, H, W)."""
    rows = [interpolate(sched, model_fn, x0_a, x0_b, int(t), n, rng, mean_type=mean_type,
                        variance=variance, clip_x0=True, progress=progress) for t in ts]
    return np.stack([from_model(r) for r in rows])


def _x_shape(model_fn):
    shape = getattr(model_fn, "x_shape", None)
    if shape is None:
        raise ValueError("model_fn: expected an attribute x_shape (the per-example shape); "
                         "use figures.model_fn_of(checkpoint)")
    return tuple(shape)


def model_fn_of(ck):
    """model_fn of a checkpoint's EMA weights, with ``x_shape`` attached."""
    from ddpm_ref.train import make_model_fn

    fn = make_model_fn(ck.net, ck.ema)
    fn.x_shape = tuple(ck.net.x_shape)
    return fn


def rows_grid(rows, pad=1):
    """uint8 (R, C, H, W) -> one uint8 image with R rows of C cells."""
    rows = np.asarray(rows)
    if rows.ndim != 4 or rows.dtype != np.uint8:
        raise ValueError(f"rows: expected uint8 (R, C, H, W), got {rows.dtype} {rows.shape}")
    R, C, H, W = rows.shape
    return image_grid(rows.reshape(R * C, H, W), nrow=C, pad=pad, pad_value=128)


def save_grid_png(grid, path, scale=3) -> Path:
    """Write a uint8 image as a grey PNG, each pixel a scale x scale block (0 = black)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ddpm_ref._io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = np.kron(np.asarray(grid, dtype=np.uint8), np.ones((scale, scale), dtype=np.uint8))
    atomic_write(path, lambda f: plt.imsave(f, big, cmap="gray", vmin=0, vmax=255, format="png"))
    return path


def plot_rate_distortion(t, rate, distortion, path, title="rate-distortion (Fig. 5)"):
    """Distortion against rate and both against t; marks every 100th step."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    ax[0].plot(rate, distortion)
    ax[0].set_xlabel("rate (bits/dim)")
    ax[0].set_ylabel("distortion (RMSE, 0-255)")
    ax[0].set_title(title)
    ax[1].plot(t, rate)
    ax[1].set_xlabel("reverse step t")
    ax[1].set_ylabel("rate (bits/dim)")
    ax[2].plot(t, distortion)
    ax[2].set_xlabel("reverse step t")
    ax[2].set_ylabel("distortion (RMSE, 0-255)")
    for a in ax[1:]:
        a.invert_xaxis()  # time runs T -> 0, as sampling does
    fig.tight_layout()
    from ddpm_ref._io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


FIGURES = ("progressive", "shared_latent", "interpolation", "rate_distortion")


def write_figures(checkpoint, out, seed=0, n_chains=8, n_steps=10, n_shared=6, ts=None,
                  n_interp=8, terms=None, n_rd=10, which=FIGURES, progress=False) -> dict:
    """Write every figure of this module as PNG to the folder ``out``.

    Args:
        checkpoint: a path or shipped name. ts: the steps of Figs. 7-8 (default: 1/4, 1/2, 3/4
            of T and T for Fig. 7; 0, 1/4, 1/2, 3/4 of T for Fig. 8).
        terms: a terms.npz written by ``ddpm-ref mnist-eval``; without it the
            rate-distortion curve is computed here on n_rd test digits.
        which: the figures to write (default all of :data:`FIGURES`).
    Returns:
        {figure name: Path}.
    """
    from ddpm_ref.checkpoint import load_checkpoint
    from ddpm_ref.mnist_eval import VARIANTS, bound_terms_all, held_out_digits, rate_distortion

    ck = load_checkpoint(checkpoint)
    ck.require_image_model("write_figures")
    kw = dict(**ck.model_options(), progress=progress)
    model_fn = model_fn_of(ck)
    sched, T = ck.sched, ck.sched.T
    rng = np.random.default_rng(seed)
    out = Path(out)
    bad = [w for w in which if w not in FIGURES]
    if bad:
        raise ValueError(f"which: expected names from {FIGURES}, got {bad}")
    paths = {}
    if "progressive" in which:
        _, imgs = progressive_generation(sched, model_fn, n_chains, rng, n_steps, **kw)
        paths["progressive"] = save_grid_png(rows_grid(imgs), out / "fig6_progressive.png")
    x0, labels = held_out_digits(500, ck.image_size or 28)
    a = int(np.flatnonzero(labels == 3)[0])
    b = int(np.flatnonzero(labels == 7)[0])
    if "shared_latent" in which:
        ts7 = ts or (T // 4, T // 2, 3 * T // 4, T)
        xt, samples = shared_latent_samples(sched, model_fn, x0[a], ts7, n_shared, rng, **kw)
        head = np.repeat(from_model(x0[a:a + 1]), len(ts7), axis=0)[:, None]  # (K, 1, H, W)
        grid = rows_grid(np.concatenate([head, xt[:, None], samples], axis=1))
        paths["shared_latent"] = save_grid_png(grid, out / "fig7_shared_xt.png")
    if "interpolation" in which:
        ts8 = ts or (0, T // 4, T // 2, 3 * T // 4)
        rows = interpolations(sched, model_fn, x0[a], x0[b], ts8, n_interp, rng, **kw)
        paths["interpolation"] = save_grid_png(rows_grid(rows), out / "fig8_interpolation.png")
    if "rate_distortion" not in which:
        return paths
    D = int(np.prod(ck.net.x_shape))
    if terms is not None:
        with np.load(terms, allow_pickle=False) as z:
            tm = {"L_T": z["L_T"], "x0_mse": z["x0_mse"],
                  "L": {v: z[f"L_{v}"] for v in VARIANTS}}
    else:
        xr, _ = held_out_digits(n_rd, ck.image_size or 28, seed)
        tm = bound_terms_all(sched, model_fn, xr, rng, mean_type=kw["mean_type"],
                             progress=progress, variance=kw["variance"])
    t, rate, dist = rate_distortion(tm, D)
    paths["rate_distortion"] = plot_rate_distortion(t, rate, dist, out / "fig5_rate_distortion.png")
    return paths


def _check_terms(path) -> None:
    """ValueError unless ``path`` is a terms.npz of ``ddpm-ref mnist-eval``."""
    from ddpm_ref.mnist_eval import VARIANTS

    need = {"L_T", "x0_mse", *(f"L_{v}" for v in VARIANTS)}
    try:
        with np.load(path, allow_pickle=False) as z:
            have = set(z.files)
    except Exception:
        raise ValueError(f"--terms: {path} is not a readable .npz file") from None
    if not need <= have:
        what = ("a checkpoint" if "format" in have else "missing " +
                ", ".join(sorted(need - have)))
        raise ValueError(f"--terms: {path} is not a terms.npz of ddpm-ref mnist-eval ({what}); "
                         f"run `ddpm-ref mnist-eval --out DIR` and pass DIR/terms.npz")


def main(argv=None, prog="python -m ddpm_ref.figures") -> int:
    from ddpm_ref._cli_args import Parser, int_at_least, writable_dir
    from ddpm_ref.checkpoint import load_checkpoint, shipped_checkpoints

    p = Parser(prog=prog, description=(
        "Write the paper's image figures (Figs. 5-8) for a digit checkpoint to --out."))
    p.add_argument("--checkpoint", default="mnist",
                   help="an image checkpoint file, or a shipped name "
                   f"({', '.join(shipped_checkpoints()) or 'none'}; default: %(default)s)")
    p.add_argument("--out", default="docs/figures",
                   help="output folder for the PNGs (default: %(default)s)")
    p.add_argument("--terms", default=None,
                   help="terms.npz from ddpm-ref mnist-eval, for Fig. 5 (default: compute the "
                   "rate-distortion terms here on 10 test digits)")
    p.add_argument("--which", default=",".join(FIGURES),
                   help="comma-separated figures to write, from "
                   f"{', '.join(FIGURES)} (default: all)")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="random seed (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    which = tuple(w.strip() for w in args.which.split(",") if w.strip())
    bad = [w for w in which if w not in FIGURES]
    if bad or not which:
        raise ValueError(f"--which: expected names from {', '.join(FIGURES)}, got "
                         f"{args.which!r}")
    # everything checked before minutes of sampling
    ck = load_checkpoint(args.checkpoint)
    ck.require_image_model("ddpm-ref figures")
    if args.terms is not None:
        _check_terms(args.terms)
    writable_dir(args.out)
    paths = write_figures(ck.path, args.out, seed=args.seed, terms=args.terms,
                          which=which, progress=not args.quiet)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
