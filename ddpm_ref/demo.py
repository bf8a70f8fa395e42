r"""The demo job: train an MLP on 2-D data, sample, evaluate the bound, compare with the oracle.

Paper: Ho, Jain, Abbeel (2020): Algorithm 1 (training on L_simple, Eq. 14), Algorithm 2 (ancestral
sampling with sigma_t^2 = beta_t, §3.2), the variational bound Eq. (5) summed exactly over all T
terms. On ``gmm`` (a Gaussian mixture) the optimal eps* is known in closed form
(:mod:`ddpm_ref.analytic`), so the learned model's bound sits next to the best any network could
reach with the same schedule and estimator, and next to the exact -log q(x_0).

``run_demo(out_dir)`` writes: samples.npy (N, 2), report.json, checkpoint.npz, history.json and
the figures samples.png, forward.png, trajectory.png, per_t.png, training.png, and reverse.gif
(an animation of the reverse process, Algorithm 2).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ddpm_ref._io import save_npy, write_json  # re-exported: part of this module's API
from ddpm_ref.datasets import get_dataset
from ddpm_ref.evaluate import bound_report, mmd, mmd_floor
from ddpm_ref.sampling import sample
from ddpm_ref.schedule import scaled_schedule  # re-exported: ddpm_ref.demo.scaled_schedule
from ddpm_ref.train import TrainConfig, make_model_fn, save_state, train

__all__ = ["DemoConfig", "run_demo", "provenance", "write_json", "save_npy"]


@dataclass
class DemoConfig:
    """What the demo runs (defaults: about a minute on two cores).

    The training settings are :class:`ddpm_ref.train.TrainConfig`'s defaults, the 2-D recipe
    that ``ddpm-ref train`` uses as well (written once, there).
    """

    dataset: str = "gmm"  # a 2-D data set of ddpm_ref.datasets
    T: int = 1000  # diffusion steps (the paper's T): linear betas 1e-4 .. 0.02 times 1000 / T
    steps: int = TrainConfig.steps  # training steps (Algorithm 1)
    batch: int = TrainConfig.batch  # training batch
    lr: float = TrainConfig.lr  # Adam learning rate after warm-up
    warmup: int = TrainConfig.warmup  # warm-up steps
    ema_decay: float = TrainConfig.ema_decay  # EMA of the parameters (sampled and evaluated),
    # with TrainConfig's warm-up of the decay (train.ema_decay_at)
    n_samples: int = 2000  # samples drawn with Algorithm 2
    n_eval: int = 1000  # held-out points for the bound and the MMD
    seed: int = 0  # everything below is a function of this seed


def provenance() -> dict:
    """What produced a report: ddpm_ref, Python, NumPy, Numba versions and the git commit of the
    source tree (None when ddpm_ref is not run from a git checkout)."""
    import platform
    import subprocess

    import numba

    import ddpm_ref

    commit = None
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(ddpm_ref.__file__).parent,
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            commit = r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        pass
    return {"ddpm_ref": ddpm_ref.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "git_commit": commit}


def _bound_summary(rep):
    return {k: rep[k] for k in ("L_T", "L_sum", "L_0", "total")}


def run_demo(out_dir, cfg: DemoConfig | None = None, progress=False, log=print) -> dict:
    """Train, sample, evaluate, plot; write everything to ``out_dir``; return the report."""
    from ddpm_ref import plotting

    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from ddpm_ref._io import remove_stale_temporaries

    remove_stale_temporaries(out, names={"samples.npy", "report.json", "checkpoint.npz",
                                         "history.json"}, min_age_s=600)
    spec = get_dataset(cfg.dataset)
    if spec.x_shape != (2,):
        raise ValueError(f"dataset: the demo runs on 2-D data, got {cfg.dataset!r}")
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(cfg.seed).spawn(5)  # data, train, sample, eval, mmd
    data = spec.train_data(np.random.default_rng(seeds[0]))  # (N, 2)
    sched, sched_info = scaled_schedule("linear", cfg.T)
    net = spec.make_net()
    tcfg = TrainConfig(steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, warmup=cfg.warmup,
                       ema_decay=cfg.ema_decay, log_every=max(1, cfg.steps // 100),
                       seed=cfg.seed)
    log(f"training an MLP ({net.n_params()} parameters) on {cfg.dataset} for {cfg.steps} steps, "
        f"T = {cfg.T}")
    state, history = train(net, sched, data, tcfg, rng=np.random.default_rng(seeds[1]),
                           progress=progress)
    train_s = time.perf_counter() - t0
    save_state(out / "checkpoint.npz", net, sched, state, tcfg, dataset=cfg.dataset,
               schedule_info=sched_info)
    write_json(out / "history.json", history)
    model_fn = make_model_fn(net, state.ema)

    log(f"sampling {cfg.n_samples} points with Algorithm 2 ({cfg.T} steps)")
    trace_ts = np.unique(np.linspace(0, cfg.T, 101).round().astype(np.int64))  # every T/100
    samples, trace = sample(sched, model_fn, (cfg.n_samples, 2),
                            np.random.default_rng(seeds[2]), trace_steps=trace_ts,
                            progress=progress)
    save_npy(out / "samples.npy", samples)
    sample_s = time.perf_counter() - t0 - train_s

    log(f"evaluating the bound (Eq. 5, all {cfg.T} terms) on {cfg.n_eval} held-out points")
    x_eval = spec.test_data(cfg.n_eval, np.random.default_rng(seeds[3]))
    eval_seed = seeds[3].spawn(1)[0]  # the same x_t draws for the model and the oracle
    rep = bound_report(sched, model_fn, x_eval, np.random.default_rng(eval_seed),
                       decoder=spec.decoder, progress=progress)
    report = {"dataset": cfg.dataset, "T": cfg.T, "steps": cfg.steps,
              "n_params": net.n_params(), "bound": _bound_summary(rep),
              "l_simple": rep["l_simple"], "oracle_bound": None, "oracle_l_simple": None,
              "nll_exact": None}
    oracle = None
    if cfg.dataset == "gmm":
        from ddpm_ref.analytic import exact_nll, oracle_model_fn
        from ddpm_ref.data.toy2d import GMM

        oracle = bound_report(sched, oracle_model_fn(sched, GMM), x_eval,
                              np.random.default_rng(eval_seed), decoder=spec.decoder)
        report["oracle_bound"] = _bound_summary(oracle)
        report["oracle_l_simple"] = oracle["l_simple"]
        report["nll_exact"] = float(np.mean(exact_nll(GMM, x_eval)))
        report["bound_minus_oracle"] = rep["total"] - oracle["total"]

    eval_s = time.perf_counter() - t0 - train_s - sample_s
    rng_mmd = np.random.default_rng(seeds[4])
    report["mmd"] = mmd(samples, spec.test_data(cfg.n_samples, rng_mmd))
    report["mmd_floor"] = mmd_floor(spec.test_data, cfg.n_samples, cfg.n_samples, rng_mmd)
    report["mmd_ratio"] = report["mmd"] / report["mmd_floor"]
    report["steps_per_s"] = cfg.steps / train_s
    report["train_s"], report["sample_s"], report["eval_s"] = train_s, sample_s, eval_s

    plotting.plot_samples(data[: cfg.n_samples], samples, out / "samples.png")
    fwd_ts = sorted({0, cfg.T // 20, cfg.T // 5, cfg.T // 2, cfg.T})  # 0, 50, 200, 500, 1000
    plotting.plot_forward_process(sched, data[:1000], fwd_ts,
                                  np.random.default_rng(0), out / "forward.png")
    panels = [cfg.T, *(int(trace_ts[np.abs(trace_ts - f * cfg.T).argmin()])
                       for f in (0.5, 0.2, 0.05)), 0]
    plotting.plot_trajectory(trace["xt"][:, :1000], trace["t"], out / "trajectory.png", panels)
    keep = np.unique(np.linspace(0, len(trace["t"]) - 1, 51).round().astype(int))  # 51 frames
    plotting.animate_reverse_2d(trace["xt"][keep][:, :1000], trace["t"][keep], out / "reverse.gif",
                                data=data[:1000])
    plotting.plot_per_t(rep["per_t_L"], rep["per_t_eps_mse"], out / "per_t.png",
                        oracle_L=None if oracle is None else oracle["per_t_L"],
                        oracle_eps_mse=None if oracle is None else oracle["per_t_eps_mse"])
    plotting.plot_training_curve(history, out / "training.png")
    report["wall_s"] = time.perf_counter() - t0
    report["config"] = asdict(cfg)
    report["versions"] = provenance()
    write_json(out / "report.json", report)
    return report
