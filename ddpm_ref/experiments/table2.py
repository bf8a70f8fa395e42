r"""Table 2 at small scale: mean parametrisation x training objective x variance, on 14x14 digits.

Paper: Ho, Jain, Abbeel (2020), Table 2 (CIFAR10 ablation; FID 3.17 for eps prediction with
L_simple, 13.22 / 13.51 for mu_tilde / eps prediction with the true bound and fixed isotropic
Sigma; the mu_tilde-MSE row and eps with learned Sigma were unstable), §3.2-3.4 and Eqs. (5),
(11), (12), (14). The learned-Sigma row here is Nichol & Dhariwal's hybrid objective (the only
learned variance the trainer offers), not Table 2's "L, learned diagonal Sigma".

Each row trains the mnist14 U-Net with the same small budget (steps, batch, lr), then reports:
* sample quality: the Fréchet distance between the hidden features of
  :func:`ddpm_ref.classifier.default_classifier` on samples (Algorithm 2) and on the 500 test
  digits (FID's formula with our digit classifier), and the share of samples it labels with
  confidence > 0.9;
* the bound Eq. (5) in bits/dim on held-out digits, summed over all T terms (the row's variance).

    ddpm-ref table2 --steps 2000 --out runs/table2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ddpm_ref.diffusion import output_mult

__all__ = ["ROWS", "Table2Config", "run_row", "run_table2", "markdown_table", "main"]

# name, the paper's label, mean_type, objective, variance, the paper's CIFAR10 FID (None: unstable)
ROWS = [
    dict(name="mu_L_fixed", label="mu_tilde prediction, L, fixed isotropic Sigma",
         mean_type="mu", objective="vlb", variance="fixedlarge", paper_fid=13.22),
    dict(name="mu_mse", label="mu_tilde prediction, ||mu_tilde - mu_theta||^2",
         mean_type="mu", objective="simple", variance="fixedlarge", paper_fid=None),
    dict(name="eps_L_fixed", label="eps prediction, L, fixed isotropic Sigma",
         mean_type="eps", objective="vlb", variance="fixedlarge", paper_fid=13.51),
    dict(name="eps_simple", label="eps prediction, L_simple (Eq. 14)",
         mean_type="eps", objective="simple", variance="fixedlarge", paper_fid=3.17),
    dict(name="eps_hybrid_learned", label="eps prediction, L_hybrid, learned Sigma (N&D 2021)",
         mean_type="eps", objective="hybrid", variance="learned_range", paper_fid=None),
]


@dataclass
class Table2Config:
    """The budget every row gets (the paper: 800k steps of batch 128 on a TPU)."""

    steps: int = 2000  # training steps per row
    batch: int = 32  # examples per step
    lr: float = 5e-4  # Adam, after warm-up
    warmup: int = 200  # linear warm-up steps
    ema_decay: float = 0.995  # EMA of the weights (short runs need a short average)
    T: int = 1000  # diffusion steps (betas scaled by 1000 / T)
    n_samples: int = 100  # samples per row for the Fréchet distance
    n_eval: int = 50  # held-out digits for the bound
    sample_steps: int = 0  # 0: sample with all T steps; k: a respaced k-step sampler
    seed: int = 0
    net: dict = field(default_factory=dict)  # overrides of the mnist14 U-Net config (tests)
    clf_epochs: int = 20  # epochs of the digit classifier


def _net(spec, row, cfg):
    net = spec.make_net(output_mult(row["variance"]))
    if cfg.net:
        net = type(net)(**{**asdict(net.config), **cfg.net})
    return net


def run_row(row, cfg: Table2Config, classifier=None, progress=False) -> dict:
    """Train one row of Table 2 with ``cfg``'s budget and measure it; returns a dict of numbers."""
    from ddpm_ref.classifier import default_classifier, frechet_distance, train_classifier
    from ddpm_ref.data.mnist import from_model, load_digits
    from ddpm_ref.datasets import get_dataset
    from ddpm_ref.evaluate import bound_report
    from ddpm_ref.mnist_eval import held_out_digits
    from ddpm_ref.sampling import sample
    from ddpm_ref.schedule import scaled_schedule
    from ddpm_ref.train import NonFiniteLossError, TrainConfig, make_model_fn, train

    spec = get_dataset("mnist14")
    sched, _ = scaled_schedule("linear", cfg.T)
    net = _net(spec, row, cfg)
    tcfg = TrainConfig(steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, warmup=cfg.warmup,
                       ema_decay=cfg.ema_decay, objective=row["objective"],
                       mean_type=row["mean_type"], variance=row["variance"],
                       decoder="discretized", log_every=max(1, cfg.steps // 10), seed=cfg.seed)
    data = spec.train_data(np.random.default_rng(cfg.seed))
    t0 = time.perf_counter()
    try:
        state, history = train(net, sched, data, tcfg, rng=np.random.default_rng(cfg.seed),
                               progress=progress)
        diverged = False
    except NonFiniteLossError as e:  # report the row as unstable
        state, history, diverged = getattr(e, "state", None), [], True
    train_s = time.perf_counter() - t0
    res = {"name": row["name"], "label": row["label"], "paper_fid": row["paper_fid"],
           "train_s": train_s, "diverged": diverged, "steps": cfg.steps,
           "final_loss": history[-1]["loss"] if history else float("nan")}
    if diverged or state is None:
        return res
    model_fn = make_model_fn(net, state.ema)
    rng = np.random.default_rng([cfg.seed, 7])
    s_sched = sched.respace(cfg.sample_steps) if cfg.sample_steps else sched
    x = sample(s_sched, model_fn, (cfg.n_samples, *net.x_shape), rng,
               mean_type=row["mean_type"], variance=row["variance"], clip_x0=True,
               progress=progress)
    imgs = from_model(x)  # uint8 (n, 14, 14)
    if classifier is None:
        if cfg.clf_epochs == 20:
            classifier = default_classifier(14, cfg.seed)
        else:
            xi, yi = load_digits("train", 14)
            classifier = train_classifier(xi, yi, np.random.default_rng(cfg.seed),
                                          epochs=cfg.clf_epochs)
    test_imgs, _ = load_digits("test", 14)
    p = classifier.predict_proba(imgs)
    res["frechet"] = frechet_distance(classifier.features(imgs), classifier.features(test_imgs))
    res["confident"] = float(np.mean(p.max(axis=1) > 0.9))
    res["class_counts"] = np.bincount(p.argmax(axis=1), minlength=10).tolist()
    x0, _ = held_out_digits(cfg.n_eval, 14, cfg.seed)
    rep = bound_report(sched, model_fn, x0, np.random.default_rng([cfg.seed, 8]),
                       variance=row["variance"], decoder="discretized",
                       mean_type=row["mean_type"], progress=progress)
    res.update(bits_per_dim=rep["bits_per_dim"], l_simple=rep["l_simple"],
               total_s=time.perf_counter() - t0)
    return res


def run_table2(cfg: Table2Config, rows=None, classifier=None, progress=False, log=print) -> list:
    """Every row (default :data:`ROWS`) with the same budget; one result dict per row."""
    rows = ROWS if rows is None else rows
    results = []
    for row in rows:
        r = run_row(row, cfg, classifier=classifier, progress=progress)
        log(json.dumps(r))
        results.append(r)
    return results


def _fmt(v, spec):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown_table(results, frechet_floor=None) -> str:
    """The results as a Markdown table (the paper's FID next to ours)."""
    lines = ["| row | paper FID (CIFAR10) | Fréchet (digit features) | conf > 0.9 | bits/dim "
             "| train s |", "|---|---|---|---|---|---|"]
    for r in results:
        fr = "diverged" if r.get("diverged") else _fmt(r.get("frechet"), ".1f")
        label = r["label"].replace("|", "\\|")  # a literal | would split the cell
        lines.append(f"| {label} | {_fmt(r['paper_fid'], '.2f')} | {fr} | "
                     f"{_fmt(r.get('confident'), '.0%')} | {_fmt(r.get('bits_per_dim'), '.3f')} | "
                     f"{r['train_s']:.0f} |")
    if frechet_floor is not None:
        lines.append(f"\nFréchet distance between two sets of real digits: {frechet_floor:.1f}")
    return "\n".join(lines)


_HELP = {
    "steps": "training steps per row", "batch": "examples per training step",
    "warmup": "linear learning-rate warm-up steps", "T": "diffusion steps (betas x 1000/T)",
    "n_samples": "samples per row for the Fréchet distance (at least 2)",
    "n_eval": "held-out digits for the bound (1..500)",
    "sample_steps": "sampling steps: 0 all T, k a respaced k-step sampler",
    "seed": "random seed", "lr": "Adam learning rate after warm-up",
    "ema_decay": "EMA decay of the weights (with train's warm-up of the decay)",
}


def _ema_decay(s):
    try:
        v = float(s)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {s!r}")
    return v


def main(argv=None, prog="python -m ddpm_ref.experiments.table2") -> int:
    from ddpm_ref._cli_args import (
        Parser,
        check_memory,
        int_at_least,
        positive_float,
        writable_dir,
    )

    d = Table2Config()
    p = Parser(prog=prog, description=(
        "Train every row of the paper's Table 2 on 14x14 digits with one budget and report "
        "sample quality and bits/dim. Writes results.json and table.md to --out."))
    lows = dict(steps=1, batch=1, warmup=0, T=1, n_samples=2, n_eval=1, sample_steps=0, seed=0)
    for name, lo in lows.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int_at_least(lo),
                       default=getattr(d, name), help=_HELP[name] + " (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=d.lr,
                   help=_HELP["lr"] + " (default: %(default)s)")
    p.add_argument("--ema-decay", type=_ema_decay, default=d.ema_decay,
                   help=_HELP["ema_decay"] + " (default: %(default)s)")
    p.add_argument("--rows", default=",".join(r["name"] for r in ROWS),
                   help="comma-separated row names (default: all)")
    p.add_argument("--out", default="runs/table2",
                   help="output folder for results.json and table.md (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    cfg = Table2Config(**{k: getattr(args, k) for k in ("steps", "batch", "warmup", "T",
                                                         "n_samples", "n_eval", "sample_steps",
                                                         "seed", "lr", "ema_decay")})
    names = args.rows.split(",")
    unknown = [n for n in names if n not in {r["name"] for r in ROWS}]
    if unknown:
        p.error(f"--rows: unknown row(s) {unknown}; known: {[r['name'] for r in ROWS]}")
    # everything checked before hours of training
    if cfg.n_eval > 500:
        p.error(f"--n-eval: expected at most 500 (the bundled test digits), got {cfg.n_eval}")
    if cfg.sample_steps > cfg.T:
        p.error(f"--sample-steps: expected at most T = {cfg.T}, got {cfg.sample_steps}")
    check_memory("--T", f"T = {cfg.T}", 8 * 12 * (cfg.T + 1))
    check_memory("--n-samples", f"{cfg.n_samples} samples", 5 * 8 * cfg.n_samples * 196)
    check_memory("--n-eval", f"the bound on {cfg.n_eval} digits", 8 * 3 * cfg.n_eval * (cfg.T + 1))
    check_memory("--batch", f"a batch of {cfg.batch}", 64 * 8 * cfg.batch * 196)
    rows = [r for r in ROWS if r["name"] in names]
    out = writable_dir(args.out)
    results = run_table2(cfg, rows, progress=not args.quiet)
    from ddpm_ref._io import atomic_write, write_json

    write_json(out / "results.json", {"config": asdict(cfg), "rows": results})
    table = markdown_table(results)
    atomic_write(out / "table.md", lambda f: f.write(table + "\n"), binary=False)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
