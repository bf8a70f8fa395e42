r"""Table 2 at 2-D scale: all six rows, plus Nichol & Dhariwal's hybrid, against the exact oracle.

Paper: Ho, Jain, Abbeel (2020), Table 2 (CIFAR10, IS / FID): mu_tilde prediction with the true bound
L and a learned diagonal Sigma (7.28 / 23.69) or a fixed isotropic Sigma (8.06 / 13.22), or the
unweighted ||mu_tilde - mu_theta||^2 (unstable); eps prediction with L and a learned diagonal Sigma
(unstable), L and a fixed isotropic Sigma (7.67 / 13.51), or ||eps - eps_theta||^2 = L_simple
(9.46 / 3.17). "Blank entries were unstable to train and generated poor samples with out-of-range
scores." §4.2; Table 1 for the NLL (<= 3.70 bits/dim for L with fixed Sigma, <= 3.75 for L_simple).
The hybrid row is Nichol & Dhariwal (2021), §3.1 (learned range of Sigma, L_hybrid).

Here every row trains the same MLP (``toy_net_config``) on the 2-D Gaussian mixture of
``ddpm_ref.data.toy2d`` ("gmm") with one budget, T = 1000 and the paper's betas, and is measured by

* sample quality: the squared MMD (``ddpm_ref.evaluate.mmd``) between Algorithm 2's samples and
  fresh data, next to the floor (the same statistic between two fresh data sets);
* the bound Eq. (5) in nats per point, all T terms (continuous Gaussian decoder), on held-out
  points with the same x_t draws for every row, next to the exact oracle eps*'s bound (the best
  an eps-model with sigma_t^2 = beta_t can do) and the exact -log q(x_0).

``ddpm-ref table2`` keeps the digit version (:mod:`ddpm_ref.experiments.table2`).

    python -m ddpm_ref.experiments.table2_2d --out runs/table2_2d
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["ROWS_2D", "Table2DConfig", "evaluate_model", "run_row_2d", "run_oracle",
           "run_table2_2d", "make_data", "paired_gap", "markdown_table_2d", "main"]

# name, the paper's label, mean_type, objective, variance, the paper's CIFAR10 (IS, FID); None:
# a blank entry of Table 2 ("unstable to train"); the last row is not in Table 2
ROWS_2D = [
    dict(name="mu_L_learned", label="mu_tilde prediction, L, learned diagonal Sigma",
         mean_type="mu", objective="vlb", variance="learned", paper=(7.28, 23.69)),
    dict(name="mu_L_fixed", label="mu_tilde prediction, L, fixed isotropic Sigma",
         mean_type="mu", objective="vlb", variance="fixedlarge", paper=(8.06, 13.22)),
    dict(name="mu_mse", label="mu_tilde prediction, ||mu_tilde - mu_theta||^2",
         mean_type="mu", objective="simple", variance="fixedlarge", paper=None),
    dict(name="eps_L_learned", label="eps prediction, L, learned diagonal Sigma",
         mean_type="eps", objective="vlb", variance="learned", paper=None),
    dict(name="eps_L_fixed", label="eps prediction, L, fixed isotropic Sigma",
         mean_type="eps", objective="vlb", variance="fixedlarge", paper=(7.67, 13.51)),
    dict(name="eps_simple", label="eps prediction, ||eps - eps_theta||^2 = L_simple",
         mean_type="eps", objective="simple", variance="fixedlarge", paper=(9.46, 3.17)),
    dict(name="eps_hybrid", label="eps prediction, L_hybrid, learned range (N&D 2021)",
         mean_type="eps", objective="hybrid", variance="learned_range", paper="not in Table 2"),
]


@dataclass
class Table2DConfig:
    """The budget every row gets (the paper: 800k steps of batch 128, a 35.7M-parameter U-Net)."""

    steps: int = 8000  # training steps per row
    batch: int = 256  # points per step
    lr: float = 1e-3  # Adam, after warm-up
    warmup: int = 200  # linear warm-up steps
    ema_decay: float = 0.995  # EMA of the weights (a few thousand steps want a short average)
    T: int = 1000  # diffusion steps, the paper's linear betas (scaled by 1000 / T if T differs)
    n_train: int = 50_000  # training points, drawn once
    n_samples: int = 2000  # Algorithm 2 samples per row, and fresh data points for the MMD
    n_eval: int = 500  # held-out points for the bound (all T terms each)
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch", "T", "n_train", "n_samples", "n_eval"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        if self.n_eval < 2 or self.n_samples < 2:
            raise ValueError("n_eval, n_samples: expected at least 2 (a standard error needs two)")


def make_data(cfg):
    """(sched, training data, held-out points for the bound, fresh points for the MMD) of cfg."""
    from ddpm_ref.data import toy2d
    from ddpm_ref.demo import scaled_schedule

    sched, _ = scaled_schedule("linear", cfg.T)
    rng = np.random.default_rng([cfg.seed, 1])
    data = toy2d.sample("gmm", cfg.n_train, rng)  # (n_train, 2)
    x_eval = toy2d.sample("gmm", cfg.n_eval, rng)  # held-out points for the bound
    x_ref = toy2d.sample("gmm", cfg.n_samples, rng)  # fresh data for the MMD
    return sched, data, x_eval, x_ref


def evaluate_model(sched, model_fn, cfg, x_eval, x_ref, mean_type="eps", variance="fixedlarge"):
    """Samples (Algorithm 2) and the bound (Eq. 5, all T terms) of one model, as a dict of numbers.

    The x_t draws of the bound and the sampler's noise come from fixed seeds, the same for every
    model, so that differences between rows are paired.
    """
    from ddpm_ref.bound import bound_terms
    from ddpm_ref.evaluate import mmd
    from ddpm_ref.sampling import sample

    x = sample(sched, model_fn, (cfg.n_samples, 2), np.random.default_rng([cfg.seed, 2]),
               mean_type=mean_type, variance=variance)
    finite = bool(np.all(np.isfinite(x)))
    terms = bound_terms(sched, model_fn, x_eval, np.random.default_rng([cfg.seed, 3]),
                        variance=variance, decoder="gaussian", mean_type=mean_type)
    total = terms["total"]  # (n_eval,) nats per point
    return {
        "mmd": mmd(x, x_ref) if finite else float("nan"),
        "bound": float(total.mean()),
        "bound_se": float(total.std(ddof=1) / math.sqrt(total.size)),
        "L_0": float(terms["L_0"].mean()),
        "l_simple": float(np.nanmean(terms["l_simple"][:, 1:])),
        "samples_finite": finite,
        "per_point": total,  # kept for paired differences (dropped from JSON)
    }


def run_row_2d(row, cfg: Table2DConfig, setup=None, progress=False, keep_model=False) -> dict:
    """Train one row with ``cfg``'s budget and measure it: a dict of numbers (module docstring).

    ``keep_model=True`` adds "model_fn", the trained EMA network as a model_fn(xt, t)."""
    from ddpm_ref.datasets import toy_net_config
    from ddpm_ref.diffusion import output_mult
    from ddpm_ref.nn import MLP
    from ddpm_ref.train import NonFiniteLossError, TrainConfig, make_model_fn, train

    sched, data, x_eval, x_ref = setup or make_data(cfg)
    net = MLP(**toy_net_config(output_mult(row["variance"])))
    tcfg = TrainConfig(steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, warmup=cfg.warmup,
                       ema_decay=cfg.ema_decay, objective=row["objective"],
                       mean_type=row["mean_type"], variance=row["variance"], decoder="gaussian",
                       log_every=max(1, cfg.steps // 20), seed=cfg.seed)
    t0 = time.perf_counter()
    res = {k: row[k] for k in ("name", "label", "mean_type", "objective", "variance", "paper")}
    try:
        state, history = train(net, sched, data, tcfg, rng=np.random.default_rng([cfg.seed, 4]),
                               progress=progress)
        res["diverged_at"] = None
    except NonFiniteLossError as e:  # Table 2's "unstable to train"
        state, history = None, []
        res["diverged_at"] = e.step
    res["train_s"] = time.perf_counter() - t0
    res["grad_norm"] = [h["grad_norm"] for h in history]  # per log window: how bumpy training is
    res["loss"] = [h["loss"] for h in history]
    if state is None:
        return res
    model_fn = make_model_fn(net, state.ema)
    if keep_model:
        res["model_fn"] = model_fn
    res.update(evaluate_model(sched, model_fn, cfg, x_eval, x_ref, row["mean_type"],
                              row["variance"]))
    res["total_s"] = time.perf_counter() - t0
    return res


def run_oracle(cfg: Table2DConfig, setup=None) -> dict:
    """The exact eps* (sigma_t^2 = beta_t) measured like a row, plus the exact NLL and the floor."""
    from ddpm_ref.analytic import exact_nll, oracle_model_fn
    from ddpm_ref.data import toy2d
    from ddpm_ref.evaluate import mmd_floor

    sched, _, x_eval, x_ref = setup or make_data(cfg)
    res = evaluate_model(sched, oracle_model_fn(sched, toy2d.GMM), cfg, x_eval, x_ref)
    nll = exact_nll(toy2d.GMM, x_eval)
    res["nll"] = float(nll.mean())
    res["nll_se"] = float(nll.std(ddof=1) / math.sqrt(nll.size))
    res["nll_per_point"] = nll
    res["mmd_floor"] = mmd_floor(lambda n, r: toy2d.sample("gmm", n, r), cfg.n_samples,
                                 cfg.n_samples, np.random.default_rng([cfg.seed, 5]))
    return res


def run_table2_2d(cfg: Table2DConfig, rows=None, progress=False, log=None,
                  keep_models=False) -> dict:
    """Every row (default :data:`ROWS_2D`) and the oracle: {"config", "oracle", "rows"}."""
    setup = make_data(cfg)
    out = {"config": asdict(cfg), "oracle": run_oracle(cfg, setup), "rows": []}
    for row in ROWS_2D if rows is None else rows:
        r = run_row_2d(row, cfg, setup, progress=progress, keep_model=keep_models)
        if log is not None:
            log(json.dumps({k: v for k, v in r.items()
                            if k not in ("per_point", "grad_norm", "loss", "model_fn")}))
        out["rows"].append(r)
    return out


def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec)


def paired_gap(row, oracle):
    """(mean, standard error) of the row's bound minus the oracle's, point by point (same x_t)."""
    d = np.asarray(row["per_point"]) - np.asarray(oracle["per_point"])  # (n_eval,)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def markdown_table_2d(result) -> str:
    """The rows as a Markdown table: the paper's CIFAR10 IS / FID next to our MMD and bound."""
    o = result["oracle"]
    floor = o["mmd_floor"]
    lines = ["| row (Table 2) | paper IS / FID (CIFAR10) | MMD² / floor | bound (nats/pt) "
             "| bound - oracle (paired) | train s |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        p = r["paper"]
        paper = ("unstable (blank)" if p is None else p if isinstance(p, str)
                 else f"{p[0]:.2f} / {p[1]:.2f}")
        label = r["label"].replace("|", "\\|")
        if r.get("diverged_at") is not None:
            lines.append(f"| {label} | {paper} | diverged at step {r['diverged_at']} | – | – "
                         f"| {r['train_s']:.0f} |")
            continue
        gap, gap_se = paired_gap(r, o)
        lines.append(f"| {label} | {paper} | {_fmt(r['mmd'] / floor, '.2f')} | "
                     f"{_fmt(r['bound'], '.3f')} ± {_fmt(r['bound_se'], '.3f')} | "
                     f"{_fmt(gap, '+.3f')} ± {_fmt(gap_se, '.3f')} | {r['train_s']:.0f} |")
    lines.append(f"| oracle eps*, sigma_t^2 = beta_t | – | {o['mmd'] / floor:.2f} | "
                 f"{o['bound']:.3f} ± {o['bound_se']:.3f} | 0 | – |")
    lines.append(f"\nExact -log q(x_0) on the same points: {o['nll']:.3f} ± {o['nll_se']:.3f} "
                 "nats; "
                 f"MMD² floor (two fresh data sets of {result['config']['n_samples']}): "
                 f"{floor:.2e}.")
    return "\n".join(lines)


def _jsonable(result):
    drop = ("per_point", "nll_per_point", "model_fn")
    clean = lambda d: {k: v for k, v in d.items() if k not in drop}
    return {"config": result["config"], "oracle": clean(result["oracle"]),
            "rows": [clean(r) for r in result["rows"]]}


def main(argv=None, prog="python -m ddpm_ref.experiments.table2_2d") -> int:
    d = Table2DConfig()
    p = argparse.ArgumentParser(prog=prog, description=(
        "Train all six rows of the paper's Table 2 (and N&D's hybrid) on the 2-D Gaussian mixture "
        "with one budget; report MMD to the data and the bound in nats against the exact oracle. "
        "Writes results.json and table.md to --out."))
    for name in ("steps", "batch", "warmup", "T", "n_train", "n_samples", "n_eval", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("lr", "ema_decay"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    p.add_argument("--rows", default=",".join(r["name"] for r in ROWS_2D),
                   help="comma-separated row names (default: all)")
    p.add_argument("--out", default="runs/table2_2d")
    args = p.parse_args(argv)
    names = args.rows.split(",")
    known = [r["name"] for r in ROWS_2D]
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"--rows: unknown row(s) {unknown}; known: {known}")
    try:
        cfg = Table2DConfig(**{k: getattr(args, k) for k in asdict(d)})
        result = run_table2_2d(cfg, [r for r in ROWS_2D if r["name"] in names], log=print)
    except ValueError as e:
        p.error(str(e))
    from ddpm_ref._io import atomic_write, write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", _jsonable(result))
    table = markdown_table_2d(result)
    atomic_write(out / "table.md", lambda f: f.write(table + "\n"), binary=False)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
