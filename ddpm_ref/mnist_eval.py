r"""The variational bound on held-out digits in bits/dim, term by term, four variants at once.

Paper: Ho, Jain, Abbeel (2020), Eq. (5) (L = L_T + sum_{t>1} L_{t-1} + L_0), §4.2 and Table 2
(the NLL column: "<= 3.75" bits/dim on CIFAR10, the bound summed exactly over all T terms),
§3.2 (sigma_t^2 = beta_t or beta_tilde_t) and Eq. (11) (mu_theta from eps_theta; the official
evaluation also clips x0_hat to [-1, 1] before forming the posterior mean, which Eq. 11 does not).
§4.3, Table 4 and Fig. 5: the rate-distortion curve built from the same terms.

For every test digit and every t = 1..T one x_t ~ q(x_t | x_0) (Eq. 4) is drawn and the network
is evaluated ONCE; the four variants (sigma^2 = beta or beta_tilde, x0_hat clipped or not) and
L_simple (Eq. 14) are all computed from that one eps_theta by :func:`ddpm_ref.elbo.bound_terms`.

    ddpm-ref mnist-eval --checkpoint mnist --n 500 --workers 2 --out runs/mnist_eval
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from ddpm_ref.elbo import bound_terms

__all__ = ["VARIANTS", "variants_for", "bound_terms_all", "summarize", "summarize_totals",
           "rate_distortion", "held_out_digits", "evaluate_checkpoint", "main"]

# name -> (variance, clip_x0)
VARIANTS = {
    "beta": ("fixedlarge", False),
    "beta_clip": ("fixedlarge", True),
    "beta_tilde": ("fixedsmall", False),
    "beta_tilde_clip": ("fixedsmall", True),
}


def variants_for(variance="fixedlarge") -> dict:
    """The variants scored for a network whose own reverse variance is ``variance``: the four
    fixed ones always (a learned-variance network's mean read with sigma^2 = beta / beta_tilde),
    plus its learned sigma^2 with clipping off / on ("learned", "learned_clip") if it learns it."""
    from ddpm_ref.diffusion import VARIANCE_TABLE

    if not VARIANCE_TABLE[variance].learned:
        return dict(VARIANTS)
    return {**VARIANTS, "learned": (variance, False), "learned_clip": (variance, True)}


def bound_terms_all(sched, model_fn, x0, rng, mean_type="eps", t_chunk=None, progress=False,
                    variance="fixedlarge"):
    r"""Every term of Eq. (5) for the variants of :func:`variants_for` (``variance``: the
    network's own), from one network call per (t, example).

    Args:
        sched: the Schedule. model_fn: model_fn(xt, t) -> eps_theta (docs/architecture.md).
        x0: (B, C, H, W) images on the 256-level grid in [-1, 1].
        rng: np.random.Generator for the eps draws (one per t and example).
        mean_type: what the network predicts ("eps", "x0" or "mu").
        t_chunk: timesteps per model call (default: about 128 images per call).
        progress: tqdm bar over the calls.
    Returns:
        dict of float64 arrays (nats per example unless stated; column 0 is NaN):
        "L_T" (B,); "L": {variant: (B, T+1)} with L[v][:, t] = L_{t-1} (L[v][:, 1] = L_0);
        "l_simple" (B, T+1): ||eps - eps_theta||^2 / D (Eq. 14 per dimension, eps networks);
        "x0_mse" (B, T+1): mean over pixels of (x0 - clip(x0_hat))^2 on the [-1, 1] scale.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.ndim != 4:
        raise ValueError(f"x0: expected images of shape (B, C, H, W), got {x0.shape}")
    chunk = max(1, 128 // x0.shape[0]) if t_chunk is None else t_chunk  # bound_terms checks it
    terms = bound_terms(sched, model_fn, x0, rng, decoder="discretized", mean_type=mean_type,
                        t_chunk=chunk, progress=progress, variants=variants_for(variance))
    l_simple = terms["l_simple"] if mean_type == "eps" else np.full_like(terms["l_simple"], np.nan)
    return {"L_T": terms["L_T"], "L": terms["L"], "l_simple": l_simple,
            "x0_mse": terms["x0_mse"]}


def summarize(terms, D) -> dict:
    """The bound's terms in bits/dim (means over examples) for each variant.

    Returns:
        {variant: {"L_T", "L_sum" (sum_{t>=2} L_{t-1}), "L_0", "total", "total_se"}}, plus
        "l_simple" (mean over t of the per-t eps-MSE) and "n" (examples). ``total_se`` is the
        standard error of the total over the examples.
    """
    to_bpd = 1.0 / (D * math.log(2.0))
    L_T = np.asarray(terms["L_T"])
    rep = {"n": int(L_T.shape[0])}
    for name, L in terms["L"].items():
        L_sum = L[:, 2:].sum(axis=1)
        total = L_T + L_sum + L[:, 1]  # (B,)
        rep[name] = {
            "L_T": float(L_T.mean() * to_bpd),
            "L_sum": float(L_sum.mean() * to_bpd),
            "L_0": float(L[:, 1].mean() * to_bpd),
            "total": float(total.mean() * to_bpd),
            "total_se": float(total.std(ddof=1) / math.sqrt(len(total)) * to_bpd)
            if len(total) > 1 else float("nan"),
        }
    rep["l_simple"] = float(np.nanmean(terms["l_simple"][:, 1:]))
    return rep


def summarize_totals(est, D) -> dict:
    """:func:`summarize` for the per-example totals of :func:`ddpm_ref.elbo.bound_stratified`."""
    to_bpd = 1.0 / (D * math.log(2.0))
    L_T = np.asarray(est["L_T"])
    rep = {"n": int(L_T.shape[0])}
    for name, part in est.items():
        if not isinstance(part, dict):
            continue
        total = part["total"]
        rep[name] = {
            "L_T": float(L_T.mean() * to_bpd),
            "L_sum": float(part["L_sum"].mean() * to_bpd),
            "L_0": float(part["L_0"].mean() * to_bpd),
            "total": float(total.mean() * to_bpd),
            "total_se": float(total.std(ddof=1) / math.sqrt(len(total)) * to_bpd)
            if len(total) > 1 else float("nan"),
        }
    return rep


def rate_distortion(terms, D, variant="beta_tilde_clip"):
    r"""Progressive lossy compression (§4.3, Table 4, Fig. 5): rate and distortion at each t.

    The receiver holding x_t has been sent x_T (cost L_T) and then x_{s-1} given x_s for
    s = T..t+1 (cost L_{s-1} each): rate(t) = L_T + sum_{s=t+1}^{T} L_{s-1}, in bits/dim.
    rate(0) is the whole bound. Distortion is the RMSE between x_0 and x0_hat(x_t) on the 0-255
    scale, with x0_hat = 0 error at t = 0 (the receiver then has x_0 itself).

    Returns:
        t (T+1,) = 0..T, rate (T+1,) bits/dim, distortion (T+1,) grey levels.
    """
    to_bpd = 1.0 / (D * math.log(2.0))
    L = terms["L"][variant].mean(axis=0)  # (T+1,), L[s] = L_{s-1}
    T = L.shape[0] - 1
    tail = np.concatenate([np.cumsum(L[:0:-1])[::-1], [0.0]])  # tail[t] = sum_{s=t+1}^T L[s]
    rate = (float(np.mean(terms["L_T"])) + tail) * to_bpd  # (T+1,)
    mse = np.asarray(terms["x0_mse"]).mean(axis=0)  # (T+1,)
    mse[0] = 0.0
    distortion = np.sqrt(mse) * 127.5
    return np.arange(T + 1), rate, distortion


def held_out_digits(n=500, size=28, seed=0):
    """(x0 (n, 1, size, size) float64 in model scale, labels (n,)): n of the 500 test digits,
    the same number from each class when 10 divides n (a fixed, seeded choice)."""
    from ddpm_ref.data.mnist import load_digits, to_model

    if not 1 <= int(n) <= 500:
        raise ValueError(f"n: expected an integer in 1..500, got {n}")
    images, labels = load_digits("test", size)
    if n < 500:
        rng = np.random.default_rng([seed, 3])
        per = -(-n // 10)
        idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per]
                              for c in range(10)])
        idx = np.sort(rng.permutation(idx)[:n])
        images, labels = images[idx], labels[idx]
    return to_model(images).astype(np.float64), labels


def _shard(args):
    path, x0, seed, shard, t_chunk, progress, strata = args
    from ddpm_ref.checkpoint import load_checkpoint
    from ddpm_ref.elbo import bound_stratified
    from ddpm_ref.train import make_model_fn

    ck = load_checkpoint(path)
    model_fn = make_model_fn(ck.net, ck.ema)
    opts = ck.model_options()
    rng = np.random.default_rng([seed, shard])
    if strata is not None:  # (exact_upto, stride): the stratified estimate
        return bound_stratified(ck.sched, model_fn, x0, rng, exact_upto=strata[0],
                                stride=strata[1], mean_type=opts["mean_type"], t_chunk=t_chunk,
                                progress=progress, variants=variants_for(opts["variance"]))
    return bound_terms_all(ck.sched, model_fn, x0, rng, mean_type=opts["mean_type"],
                           t_chunk=t_chunk, progress=progress, variance=opts["variance"])


def evaluate_checkpoint(checkpoint, n=500, seed=0, workers=1, t_chunk=None, progress=False,
                        strata=None):
    """bound_terms_all on n test digits for a checkpoint's EMA weights, split over processes.

    ``strata=(exact_upto, stride)`` computes :func:`ddpm_ref.elbo.bound_stratified` instead
    (every t <= exact_upto, one t per block of ``stride`` above: unbiased, ~stride times cheaper
    for the large t): per-example totals only, no per-t tables.

    Returns:
        (terms, labels): the merged dict of :func:`bound_terms_all` (or of bound_stratified)
        and the digits' labels.
    """
    from ddpm_ref.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    x0, labels = held_out_digits(n, ck.image_size or 28, seed)
    parts = np.array_split(np.arange(len(x0)), max(1, min(int(workers), len(x0))))
    jobs = [(ck.path, x0[p], seed, i, t_chunk, progress and i == 0, strata)
            for i, p in enumerate(parts)]
    if len(jobs) == 1:
        results = [_shard(jobs[0])]
    else:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(len(jobs)) as pool:
            results = pool.map(_shard, jobs)
    names = list(variants_for(ck.model_options()["variance"]))
    if strata is not None:
        est = {"L_T": np.concatenate([r["L_T"] for r in results])}
        for v in names:
            est[v] = {k: np.concatenate([r[v][k] for r in results])
                      for k in ("L_0", "L_sum", "total")}
        return est, labels
    terms = {
        "L_T": np.concatenate([r["L_T"] for r in results]),
        "L": {v: np.concatenate([r["L"][v] for r in results]) for v in names},
        "l_simple": np.concatenate([r["l_simple"] for r in results]),
        "x0_mse": np.concatenate([r["x0_mse"] for r in results]),
    }
    return terms, labels


def main(argv=None, prog="python -m ddpm_ref.mnist_eval") -> int:
    from ddpm_ref._cli_args import Parser, check_memory, int_at_least, writable_dir
    from ddpm_ref.checkpoint import load_checkpoint, shipped_checkpoints

    p = Parser(prog=prog, description=(
        "The bound of Eq. (5) in bits/dim on the bundled test digits, summed over all T terms, "
        "for sigma^2 = beta / beta_tilde with x0_hat clipping off / on. Writes summary.json and "
        "terms.npz (per-example, per-t terms) to --out."))
    p.add_argument("--checkpoint", default="mnist",
                   help="an image checkpoint file, or a shipped name "
                   f"({', '.join(shipped_checkpoints()) or 'none'}; default: %(default)s)")
    p.add_argument("--n", type=int_at_least(1), default=500,
                   help="test digits (1..500, default %(default)s)")
    p.add_argument("--workers", type=int_at_least(1), default=1,
                   help="processes, each taking a share of the digits (default: %(default)s)")
    p.add_argument("--t-chunk", type=int_at_least(1), default=None,
                   help="timesteps per network call (default: as many as fit a batch of 64)")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="random seed of the x_t draws (default: %(default)s)")
    p.add_argument("--t-stride", type=int_at_least(1), default=1,
                   help="1 (the default): sum all T terms exactly; K > 1: the stratified "
                   "estimate, every t <= --t-exact and one t per block of K above (unbiased, "
                   "writes summary.json and per-digit totals, no per-t terms)")
    p.add_argument("--t-exact", type=int_at_least(1), default=100,
                   help="with --t-stride K > 1: the timesteps summed exactly (default: "
                   "%(default)s)")
    p.add_argument("--out", default="runs/mnist_eval",
                   help="output folder for summary.json and terms.npz (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    # everything checked before the hours of network calls
    ck = load_checkpoint(args.checkpoint)
    ck.require_image_model("ddpm-ref mnist-eval")
    if args.n > 500:
        raise ValueError(f"--n: expected at most 500 (the bundled test digits), got {args.n}")
    check_memory("--n", f"the term tables of {args.n} digits",
                 8 * args.n * (len(VARIANTS) + 4) * (ck.sched.T + 1))
    if args.t_stride > 1 and args.t_exact > ck.sched.T:
        raise ValueError(f"--t-exact: expected at most T = {ck.sched.T}, got {args.t_exact}")
    strata = (args.t_exact, args.t_stride) if args.t_stride > 1 else None
    out = writable_dir(args.out)
    t0 = time.perf_counter()
    terms, labels = evaluate_checkpoint(ck.path, args.n, args.seed, args.workers,
                                        args.t_chunk, progress=not args.quiet, strata=strata)
    wall = time.perf_counter() - t0
    D = int(np.prod(ck.net.x_shape))
    from ddpm_ref._io import atomic_write, write_json

    if strata is not None:
        rep = {"checkpoint": ck.path, "step": ck.step, "T": ck.sched.T, "wall_s": wall,
               "units": "bits/dim", "estimate": f"stratified: t <= {strata[0]} exactly, one t "
               f"per block of {strata[1]} above", **summarize_totals(terms, D)}
        write_json(out / "summary.json", rep)
        arrays = {"L_T": terms["L_T"], "labels": labels,
                  **{f"total_{v}": terms[v]["total"] for v in terms if v != "L_T"}}
        atomic_write(out / "totals.npz", lambda f: np.savez(f, **arrays))
        print(json.dumps(rep, indent=2))
        return 0
    rep = {"checkpoint": ck.path, "step": ck.step, "T": ck.sched.T, "wall_s": wall,
           "units": "bits/dim", **summarize(terms, D)}
    write_json(out / "summary.json", rep)
    arrays = dict(L_T=terms["L_T"], labels=labels, l_simple=terms["l_simple"],
                  x0_mse=terms["x0_mse"], **{f"L_{v}": a for v, a in terms["L"].items()})
    atomic_write(out / "terms.npz", lambda f: np.savez(f, **arrays))
    print(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
