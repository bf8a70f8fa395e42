r"""The ``ddpm-ref`` commands demo | train | sample | evaluate: what each one does.

Paper: Ho, Jain, Abbeel (2020): ``train`` runs Algorithm 1, ``sample`` Algorithm 2 (or DDIM),
``evaluate`` the bound of Eq. (5) summed over all T terms; ``demo`` does all three on 2-D data.
:mod:`ddpm_ref.cli` parses the arguments and calls these with them; every user mistake is a
:class:`~ddpm_ref._cli_args.CLIError` (one line, exit status 2), raised before any work starts.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ddpm_ref._cli_args import (
    CLIError,
    FolderLock,
    bound_bytes,
    check_memory,
    image_suffixes,
    output_file,
    read_history,
    resume_config,
    sample_bytes,
    schedule_bytes,
    writable_dir,
)
from ddpm_ref._threads import blas_threads_for
from ddpm_ref.datasets import DATASETS
from ddpm_ref.diffusion import FIXED_VARIANCES, output_mult

__all__ = ["cmd_demo", "cmd_train", "cmd_sample", "cmd_evaluate"]


def _load(path_or_name):
    from ddpm_ref.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path_or_name)
    except ValueError as e:
        raise CLIError(str(e)) from None


def _spec_of(ckpt):
    if ckpt.dataset not in DATASETS:
        raise CLIError(f"checkpoint: trained on {ckpt.dataset!r}, which this ddpm_ref does not "
                       f"know (known: {', '.join(DATASETS)})")
    return DATASETS[ckpt.dataset]


def cmd_demo(args) -> int:
    from ddpm_ref.demo import DemoConfig, run_demo

    out = writable_dir(args.out)
    check_memory("--T", f"T = {args.T}", schedule_bytes(args.T))
    check_memory("--n-samples", f"{args.n_samples} samples", sample_bytes(args.n_samples, (2,)))
    check_memory("--n-eval", f"the bound on {args.n_eval} points",
                 bound_bytes(args.n_eval, args.T, (2,)))
    cfg = DemoConfig(dataset=args.dataset, T=args.T, steps=args.steps, n_eval=args.n_eval,
                     n_samples=args.n_samples, seed=args.seed)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    with blas_threads_for((2,)):
        rep = run_demo(out, cfg, progress=not args.quiet, log=log)
    b = rep["bound"]
    print(f"bound (Eq. 5): {b['total']:.4f} nats/point "
          f"(L_T {b['L_T']:.2e}, sum L_t-1 {b['L_sum']:.4f}, L_0 {b['L_0']:.4f})")
    if rep["oracle_bound"] is not None:
        print(f"oracle eps* bound: {rep['oracle_bound']['total']:.4f} nats/point "
              f"(model - oracle {rep['bound_minus_oracle']:+.4f}); exact -log q(x0): "
              f"{rep['nll_exact']:.4f}")
    print(f"MMD^2 samples vs data: {rep['mmd']:.3g} (floor between two data sets: "
          f"{rep['mmd_floor']:.3g}, ratio {rep['mmd_ratio']:.2f})")
    print(f"wrote {out}/ in {rep['wall_s']:.0f} s ({rep['steps_per_s']:.0f} training steps/s)")
    return 0


def cmd_train(args) -> int:
    from ddpm_ref._io import remove_stale_temporaries, write_json
    from ddpm_ref.demo import scaled_schedule
    from ddpm_ref.plotting import plot_training_curve
    from ddpm_ref.train import TrainConfig, TrainingInterrupted, state_from_checkpoint, train

    spec = DATASETS[args.dataset]
    out = writable_dir(args.out)
    with FolderLock(out), blas_threads_for(spec.x_shape):
        remove_stale_temporaries(out)  # left by a killed run; we hold the folder's lock
        ckpt_path = out / "checkpoint.npz"
        hist_path = out / "history.json"
        history = []
        if args.resume:  # the checkpoint's own settings, with the new --steps (and --lr ...)
            if not ckpt_path.exists():
                raise CLIError(f"--resume: no checkpoint to resume in {out} "
                               f"({ckpt_path} does not exist)")
            ck = _load(ckpt_path)
            cfg, changed = resume_config(args, ck, ckpt_path)
            net, sched, state = ck.net, ck.sched, state_from_checkpoint(ck)
            sched_info = {k: v for k, v in ck.schedule_info.items() if k != "T"}
            history = read_history(hist_path, ck.step)
            if changed and not args.quiet:
                print("resuming with " + ", ".join(f"{k} = {v:g}" for k, v in changed.items())
                      + " (the run's others kept)", file=sys.stderr)
        else:
            if ckpt_path.exists():
                raise CLIError(f"--out: {ckpt_path} exists; pass --resume to continue it, or "
                               f"choose another --out")
            check_memory("--T", f"T = {args.T}", schedule_bytes(args.T))
            check_memory("--batch", f"a batch of {args.batch}",
                         64 * 8 * args.batch * int(np.prod(spec.x_shape)))
            variance = args.variance or (
                "learned_range" if args.objective == "hybrid" else "fixedlarge")
            try:
                cfg = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr,
                                  warmup=args.warmup, lr_decay=args.lr_decay,
                                  ema_decay=args.ema_decay,
                                  ema_warmup=not args.no_ema_warmup,
                                  objective=args.objective, mean_type=args.mean_type,
                                  variance=variance, decoder=spec.decoder,
                                  log_every=args.log_every, ckpt_every=args.ckpt_every,
                                  seed=args.seed)
                sched, sched_info = scaled_schedule(args.schedule, args.T)
            except ValueError as e:
                raise CLIError(str(e)) from None
            net = spec.make_net(output_mult(variance))
            state = None
        rng = np.random.default_rng(cfg.seed)
        data = spec.train_data(np.random.default_rng([cfg.seed, 1]))
        if not args.quiet:
            print(f"training {type(net).__name__} ({net.n_params()} parameters) on "
                  f"{args.dataset} ({len(data)} examples), T = {sched.T}, {cfg.objective} "
                  f"objective", file=sys.stderr)
        meta = dict(dataset=args.dataset, image_size=spec.image_size,
                    schedule_info=sched_info)

        def log(record):  # history.json after every record: a killed run keeps its log
            history.append(record)
            write_json(hist_path, history)

        try:
            state, _ = train(net, sched, data, cfg, rng=rng, state=state, ckpt_path=ckpt_path,
                             ckpt_meta=meta, progress=not args.quiet, callback=log)
        except TrainingInterrupted as e:
            write_json(hist_path, history)
            again = f"ddpm-ref train --dataset {args.dataset} --out {out} --resume"
            if e.saved is None:
                print(f"ddpm-ref train: interrupted at step {e.state.step}; nothing saved",
                      file=sys.stderr)
            else:
                print(f"ddpm-ref train: interrupted at step {e.state.step}; saved {e.saved}; "
                      f"continue with: {again}", file=sys.stderr)
            return 130
        if history:
            plot_training_curve(history, out / "training.png")
    print(f"wrote {ckpt_path} (step {state.step})")
    return 0


def cmd_sample(args) -> int:
    from ddpm_ref._io import remove_stale_temporaries, save_npy
    from ddpm_ref.sampling import ddim_sample, sample
    from ddpm_ref.train import make_model_fn

    out = output_file("--out", args.out, (".npy", *image_suffixes()), ".npy")
    ck = _load(args.checkpoint)
    spec = _spec_of(ck)
    check_memory("--n", f"{args.n} samples", sample_bytes(args.n, spec.x_shape))
    gif = None
    if args.gif is not None:
        gif = output_file("--gif", args.gif, (".gif",), ".gif")
    npy = out.with_suffix(".npy")  # a picture comes with its raw samples (for `classifier`)
    remove_stale_temporaries(out.parent, names={out.name, npy.name}, min_age_s=600)
    sched = ck.sched
    if args.steps is not None:
        if args.steps > sched.T:
            raise CLIError(f"--steps: expected at most T = {sched.T} steps, got {args.steps}")
        sched = sched.respace(args.steps)
    opts = ck.model_options()
    if args.variance is not None:
        if opts["variance"] not in FIXED_VARIANCES:
            raise CLIError(f"--variance: the checkpoint learned its variance "
                           f"({opts['variance']!r}); only a fixed-variance model's can be chosen")
        opts["variance"] = args.variance
    if args.eta is not None and args.sampler != "ddim":
        raise CLIError("--eta: only with --sampler ddim")
    if args.sampler == "ddim" and args.variance is not None:
        raise CLIError("--variance: DDIM's variance is set by --eta, not --variance")
    clip_x0 = spec.image_size > 0 if args.clip_x0 is None else args.clip_x0
    model_fn = make_model_fn(ck.net, ck.params if args.no_ema else ck.ema)
    # the animation's frames: about 100 steps of the (respaced) chain, T first and x_0 last
    trace_steps = (np.unique(np.linspace(0, sched.T, min(sched.T, 100) + 1).round()
                             .astype(np.int64)) if gif else None)
    with blas_threads_for(spec.x_shape):
        shape, rng = (args.n, *spec.x_shape), np.random.default_rng(args.seed)
        if args.sampler == "ddim":
            x = ddim_sample(sched, model_fn, shape, rng, eta=args.eta or 0.0,
                            mean_type=opts["mean_type"], clip_x0=clip_x0,
                            progress=not args.quiet, trace_steps=trace_steps)
        else:  # Algorithm 2
            x = sample(sched, model_fn, shape, rng, **opts, clip_x0=clip_x0,
                       progress=not args.quiet, trace_steps=trace_steps)
    if gif:
        from ddpm_ref import plotting

        x, trace = x
        ts = sched.timesteps[trace["t"]]  # the original schedule's steps, for the titles
        if spec.image_size:
            plotting.animate_reverse_digits(trace["xt"], ts, gif)
        else:
            plotting.animate_reverse_2d(trace["xt"][:, :2000], ts, gif,
                                        data=spec.test_data(2000, np.random.default_rng(0)))
    if spec.image_size:
        from ddpm_ref.data.mnist import from_model

        x = from_model(x)  # uint8 (N, H, W)
    save_npy(npy, x)
    wrote = [npy]
    if out.suffix.lower() != ".npy":
        from ddpm_ref import plotting
        from ddpm_ref._io import atomic_write

        if spec.image_size:
            fig = plotting.plot_image_grid(x, None, nrow=int(np.ceil(np.sqrt(args.n))))
        else:
            fig = plotting.plot_samples(spec.test_data(args.n, np.random.default_rng(0)), x)
        fmt = out.suffix[1:].lower()  # matplotlib's format name for the suffix
        atomic_write(out, lambda f: fig.savefig(f, format=fmt, dpi=100))
        wrote.insert(0, out)
    if gif:
        wrote.append(gif)
    print(f"wrote {' and '.join(map(str, wrote))} ({args.n} samples, {sched.T} steps)")
    return 0


def cmd_evaluate(args) -> int:
    from ddpm_ref.evaluate import bound_report
    from ddpm_ref.train import make_model_fn

    ck = _load(args.checkpoint)
    spec = _spec_of(ck)
    n = args.n or (1000 if not spec.image_size else 100)
    check_memory("--n", f"the bound on {n} examples", bound_bytes(n, ck.sched.T, spec.x_shape))
    x0 = spec.test_data(n, np.random.default_rng([args.seed, 2]))
    model_fn = make_model_fn(ck.net, ck.params if args.no_ema else ck.ema)
    with blas_threads_for(spec.x_shape):
        rep = bound_report(ck.sched, model_fn, x0, np.random.default_rng(args.seed),
                           decoder=spec.decoder, **ck.model_options(), progress=not args.quiet,
                           clip_x0=spec.image_size > 0)  # images: x0_hat clipped, as Ho et al.
    per_t = {k: rep.pop(k) for k in ("per_t_L", "per_t_eps_mse")}
    rep = {"checkpoint": ck.path, "dataset": ck.dataset, "step": ck.step, "n": len(x0),
           "T": ck.sched.T, "units": "nats per example", **rep}
    if args.per_t:
        rep.update({k: [None if np.isnan(v) else float(v) for v in a] for k, a in per_t.items()})
    print(json.dumps(rep, indent=2))
    return 0
