r"""The ``ddpm-ref`` command: demo | train | sample | evaluate, and the MNIST tools.

``ddpm-ref mnist-eval | figures | classifier | table2 | grade ARGS`` run the ``main`` of
:mod:`ddpm_ref.mnist_eval`, :mod:`ddpm_ref.figures`, :mod:`ddpm_ref.classifier`,
:mod:`ddpm_ref.experiments.table2` and :mod:`ddpm_ref.grade` with ARGS (the same as
``python -m ddpm_ref.X ARGS``).

Paper: Ho, Jain, Abbeel (2020): ``train`` runs Algorithm 1, ``sample`` Algorithm 2, ``evaluate`` the
bound of Eq. (5) summed over all T terms; ``demo`` does all three on 2-D data in about a minute.
This module parses the arguments; :mod:`ddpm_ref._cli_commands` holds what each command does.

Bad arguments (unknown data set, T < 1, a missing or corrupt checkpoint, an unwritable output
folder, sizes that cannot fit in memory, ...) print ONE line on stderr and exit with status 2,
without a traceback, and are found before any computation starts. Every output file is written to
a temporary name and renamed (Ctrl-C waits until the file is complete), so nothing already written
is lost half-way; a full disk is one line too. Ctrl-C in ``train`` saves the last completed step
and prints the command that continues it. Exit status: 0 ok, 1 training diverged, 2 bad input or
a failed write, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from ddpm_ref._cli_args import (
    Parser,
    int_at_least,
    nonnegative_float,
    positive_float,
    run_reporting_errors,
    version_text,
)
from ddpm_ref._cli_commands import cmd_demo, cmd_evaluate, cmd_sample, cmd_train
from ddpm_ref.checkpoint import shipped_checkpoints
from ddpm_ref.datasets import DATASETS, TRAIN_DEFAULTS
from ddpm_ref.diffusion import FIXED_VARIANCES, MEAN_TYPES, VARIANCES
from ddpm_ref.objectives import OBJECTIVES
from ddpm_ref.optim import LR_DECAYS
from ddpm_ref.schedule import TRAIN_KINDS

__all__ = ["main", "build_parser"]

SAMPLERS = ("ancestral", "ddim")  # sample --sampler: Algorithm 2, or DDIM

TOY = [name for name, spec in DATASETS.items() if spec.x_shape == (2,)]

# command -> (module whose main(argv) it runs, one-line help)
TOOLS = {
    "mnist-eval": ("ddpm_ref.mnist_eval",
                   "the bound in bits/dim on the test digits, term by term, four variants"),
    "figures": ("ddpm_ref.figures", "the paper's image figures (Fig. 5-8) on digits"),
    "classifier": ("ddpm_ref.classifier",
                   "train the digit classifier / score samples (confidence, balance, copies)"),
    "table2": ("ddpm_ref.experiments.table2", "the Table 2 ablation grid on 14x14 digits"),
    "grade": ("ddpm_ref.grade",
              "grade an assignment (notebooks/assignments/): run its checks on your solution"),
}


def _checkpoint_help() -> str:
    return (f"checkpoint file, or a shipped name ({', '.join(shipped_checkpoints()) or 'none'})")




# ---------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ddpm-ref", description=(
        "Denoising diffusion probabilistic models (Ho, Jain, Abbeel 2020) in pure NumPy. "
        "Start with `ddpm-ref demo`: it trains a small model on 2-D data in about a minute and "
        "writes pictures and numbers to runs/demo/."),
        epilog="MNIST tools (each takes its own --help): " + "; ".join(
            f"{name}: {text}" for name, (_, text) in TOOLS.items()) + ". Shipped checkpoints: "
        + (", ".join(shipped_checkpoints()) or "none") + ".")
    p.add_argument("--version", action="version", version=version_text())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    from ddpm_ref.demo import DemoConfig
    from ddpm_ref.train import TrainConfig

    demo_defaults = DemoConfig()

    d = sub.add_parser("demo", help="train, sample and evaluate on 2-D data (about a minute)",
                       description="Train an MLP on a 2-D data set (default gmm, a Gaussian "
                       "mixture whose optimal denoiser is known exactly), sample it with "
                       "Algorithm 2, and compare its variational bound with the oracle's. Writes "
                       "samples.npy, report.json, checkpoint.npz and PNG figures to --out.")
    d.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    d.add_argument("--dataset", choices=TOY, default="gmm", help="2-D data set (default: gmm)")
    d.add_argument("--steps", type=int_at_least(1), default=None,
                   help=f"training steps (default: {demo_defaults.steps}; the other training "
                   f"settings are train's 2-D defaults: batch {demo_defaults.batch}, lr "
                   f"{demo_defaults.lr:g}, warm-up {demo_defaults.warmup}, EMA decay "
                   f"{demo_defaults.ema_decay:g} with warm-up)")
    d.add_argument("--T", type=int_at_least(1), default=None,
                   help=f"diffusion steps (default: {demo_defaults.T})")
    d.add_argument("--n-samples", type=int_at_least(2), default=None,
                   help=f"samples to draw (default: {demo_defaults.n_samples})")
    d.add_argument("--n-eval", type=int_at_least(1), default=None,
                   help=f"held-out points for the bound (default: {demo_defaults.n_eval})")
    d.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a model with Algorithm 1",
                       description="Train an eps-network with Algorithm 1 and write "
                       "checkpoint.npz, history.json (after every log record) and training.png "
                       "to --out. Ctrl-C saves the last completed step; --resume continues it "
                       "bit for bit. The EMA of the weights (what sample and evaluate use) warms "
                       "up its decay as TensorFlow's ExponentialMovingAverage does, "
                       "min(decay, (1 + s) / (10 + s)) after s updates, so it is right at any "
                       "run length.")
    t.add_argument("--dataset", choices=list(DATASETS), required=True,
                   help="2-D point sets (gmm, moons, ...) train an MLP; mnist (28x28 digits) "
                   "and mnist14 (14x14) a U-Net")
    t.add_argument("--out", default=None, help="output folder (default: runs/DATASET)")
    mn = DATASETS["mnist"].train_defaults

    def per_data(key):
        return f"(default: {TRAIN_DEFAULTS[key]:g} for 2-D data, {mn[key]:g} for mnist)"

    t.add_argument("--steps", type=int_at_least(1), default=None,
                   help="total training steps " + per_data("steps"))
    t.add_argument("--batch", type=int_at_least(1), default=None,
                   help="batch size " + per_data("batch"))
    t.add_argument("--lr", type=positive_float, default=None,
                   help="Adam learning rate " + per_data("lr"))
    t.add_argument("--warmup", type=int_at_least(0), default=None,
                   help="warm-up steps " + per_data("warmup"))
    t.add_argument("--lr-decay", choices=LR_DECAYS, default=None,
                   help="learning rate after the warm-up: none (constant, the paper's) or "
                   "cosine (a half cosine down to 0 at --steps) (default: "
                   f"{TRAIN_DEFAULTS['lr_decay']} for 2-D data, {mn['lr_decay']} for mnist)")
    t.add_argument("--ema-decay", type=float, default=None,
                   help="EMA decay of the weights, reached after a warm-up (see above) "
                   + per_data("ema_decay"))
    t.add_argument("--no-ema-warmup", action="store_true",
                   help="a fixed EMA decay from the first step (as before the warm-up existed; "
                   "the shipped mnist checkpoint was trained so)")
    t.add_argument("--T", type=int_at_least(1), default=None,
                   help="diffusion steps (default: 1000, the paper's; betas are scaled by "
                   "1000/T so that x_T stays close to N(0, I))")
    t.add_argument("--schedule", choices=TRAIN_KINDS,
                   default=None, help="beta schedule (default: linear, the paper's)")
    t.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="simple: L_simple (Eq. 14, the paper's); vlb: the true bound (Eq. 5); "
                   "hybrid: L_simple + 0.001 L_vlb with learned variances (Nichol & Dhariwal) "
                   f"(default: {TRAIN_DEFAULTS['objective']} for 2-D data, {mn['objective']} "
                   "for mnist)")
    t.add_argument("--mean-type", choices=MEAN_TYPES, default=None,
                   help="what the network predicts (default: eps, Eq. 11)")
    t.add_argument("--variance", choices=VARIANCES,
                   default=None, help="reverse variance: fixedlarge (beta_t), fixedsmall "
                   "(beta_tilde_t), learned (log sigma_t^2 output; vlb only), learned_range "
                   "(hybrid's default; hybrid or vlb)")
    t.add_argument("--log-every", type=int_at_least(1), default=None,
                   help="steps per log record (default: %s)" % TrainConfig.log_every)
    t.add_argument("--ckpt-every", type=int_at_least(0), default=None,
                   help="steps between checkpoints, 0: only at the end " + per_data("ckpt_every"))
    t.add_argument("--resume", action="store_true",
                   help="continue OUT/checkpoint.npz up to --steps (default: its own) with its "
                   "own settings (bit for bit as if never interrupted); --lr, --log-every and "
                   "--ckpt-every may be changed, the others must match")
    t.add_argument("--seed", type=int_at_least(0), default=None,
                   help="random seed (default: %s)" % TrainConfig.seed)
    t.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw samples with Algorithm 2",
                       description="Sample a trained model. FILE.npy gets the raw samples "
                       "(uint8 (N, H, W) images, or float (N, 2) points); a picture (FILE.png, "
                       ".pdf, .svg, .jpg, ...: the formats matplotlib writes) comes with "
                       "FILE.npy beside it, for `ddpm-ref classifier FILE.npy`.")
    s.add_argument("--checkpoint", required=True, help=_checkpoint_help())
    s.add_argument("--n", type=int_at_least(1), default=64,
                   help="number of samples (default: %(default)s)")
    s.add_argument("--out", required=True,
                   help="output FILE.npy, or a picture FILE.png (.pdf, .svg, .jpg, ...) plus "
                   "FILE.npy; no suffix: FILE.npy")
    s.add_argument("--steps", type=int_at_least(1), default=None,
                   help="sampling steps (default: all T; fewer uses a respaced schedule)")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    s.add_argument("--seed", type=int_at_least(0), default=0,
                   help="random seed (default: %(default)s)")
    s.add_argument("--sampler", choices=SAMPLERS, default="ancestral",
                   help="ancestral: Algorithm 2 (default); ddim: DDIM (Song et al. 2021), "
                   "deterministic at --eta 0")
    s.add_argument("--eta", type=nonnegative_float, default=None,
                   help="DDIM's eta (only with --sampler ddim; default: 0, deterministic; 1: "
                   "Algorithm 2 with sigma_t^2 = beta_tilde_t)")
    s.add_argument("--variance", choices=FIXED_VARIANCES, default=None,
                   help="Algorithm 2's sigma_t^2: fixedlarge (beta_t) or fixedsmall "
                   "(beta_tilde_t) (default: the checkpoint's; a learned variance is the "
                   "network's own and cannot be replaced)")
    s.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=None,
                   help="clip the predicted x0 to [-1, 1] in every step (default: on for "
                   "images, as Ho et al., off for 2-D points)")
    s.add_argument("--gif", default=None, metavar="PATH.gif",
                   help="also write an animation of the reverse process (Algorithm 2) there")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("evaluate", help="print the variational bound (Eq. 5) as JSON",
                       description="Sum all T terms of the bound on held-out data and print "
                       "L_T, sum L_t-1, L_0, total (nats per example; bits/dim for images).")
    e.add_argument("--checkpoint", required=True, help=_checkpoint_help())
    e.add_argument("--n", type=int_at_least(1), default=None,
                   help="held-out examples (default: 1000 points or 100 images)")
    e.add_argument("--per-t", action="store_true", help="include the per-t arrays")
    e.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    e.add_argument("--seed", type=int_at_least(0), default=0,
                   help="random seed (default: %(default)s)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)
    return p


# train options whose default does not depend on the data set (None in the parser so that
# --resume can tell "given" from "not given")
NON_DATA_DEFAULTS = dict(T=1000, schedule="linear", mean_type="eps")


def fill_train_defaults(args) -> None:
    """Fill the ``train`` options left unset from the data set's defaults (datasets.py)."""
    if args.out is None:
        args.out = f"runs/{args.dataset}"
    if args.resume:  # the checkpoint's own settings (and its --steps unless given)
        return
    defaults = {**TRAIN_DEFAULTS, **DATASETS[args.dataset].train_defaults,
                **NON_DATA_DEFAULTS}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _main(argv) -> int:
    if argv and argv[0] in TOOLS:
        import importlib

        tool = importlib.import_module(TOOLS[argv[0]][0])
        return run_reporting_errors(
            argv[0], lambda: tool.main(argv[1:], prog=f"ddpm-ref {argv[0]}"))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help/--version (0) or a bad argument (2, already reported)
        return int(e.code or 0)
    if args.command is None:
        print("ddpm-ref: error: choose a command: demo, train, sample, evaluate, "
              f"{', '.join(TOOLS)} (see ddpm-ref --help)", file=sys.stderr)
        return 2
    if args.command == "train":
        fill_train_defaults(args)
    if args.command == "demo":
        from ddpm_ref.demo import DemoConfig

        defaults = DemoConfig()
        for name in ("steps", "T", "n_samples", "n_eval"):
            if getattr(args, name) is None:
                setattr(args, name, getattr(defaults, name))
    return run_reporting_errors(args.command, lambda: args.func(args),
                                args if args.command == "train" else None)


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 training diverged, 2 bad input or a
    failed write, 130 interrupted, 141 output pipe closed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # during start-up (imports, argument parsing)
        print("ddpm-ref: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
