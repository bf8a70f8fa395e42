"""Tests for the ddpm-ref command line: one-line errors with status 2, every command's outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ddpm_ref.cli import main

FAST = ["--T", "20", "--quiet"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0]
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained through the CLI (shared by the sample/evaluate tests)."""
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--dataset", "moons", "--steps", "30", "--batch", "16",
                 "--log-every", "10", "--out", str(out), *FAST])
    assert code == 0
    return out


@pytest.mark.parametrize("argv, words", [
    (["train", "--dataset", "nosuchdata"], ["--dataset", "invalid choice", "'nosuchdata'"]),
    (["train", "--dataset", "gmm", "--T", "0"], ["--T", "expected an integer >= 1, got '0'"]),
    (["train", "--dataset", "gmm", "--batch", "0"], ["--batch", "expected an integer >= 1"]),
    (["train", "--dataset", "gmm", "--steps", "ten"], ["--steps", "got 'ten'"]),
    (["train", "--dataset", "gmm", "--lr", "-1"], ["--lr", "expected a number > 0"]),
    (["train", "--dataset", "gmm", "--objective", "nope"], ["--objective", "invalid choice"]),
    (["demo", "--dataset", "mnist"], ["--dataset", "invalid choice"]),
    (["demo", "--T", "0"], ["--T"]),
    (["sample", "--out", "x.npy"], ["--checkpoint", "required"]),
    ([], ["choose a command"]),
])
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, words):
    code, _, err = _run(capsys, *argv)
    _assert_one_line_error(code, err, *words)


def test_help_exits_0(capsys):
    code, out, _ = _run(capsys, "train", "--help")
    assert code == 0 and "--dataset" in out and "Algorithm 1" in out


def test_train_defaults_depend_on_the_data_set():
    from ddpm_ref.cli import build_parser, fill_train_defaults
    from ddpm_ref.datasets import DATASETS, TRAIN_DEFAULTS

    def settings(*argv):
        args = build_parser().parse_args(["train", *argv])
        fill_train_defaults(args)
        return {k: getattr(args, k) for k in TRAIN_DEFAULTS}

    assert settings("--dataset", "moons") == TRAIN_DEFAULTS
    mnist = settings("--dataset", "mnist")
    assert mnist == {**TRAIN_DEFAULTS, **DATASETS["mnist"].train_defaults}
    assert mnist["batch"] == 32 and mnist["batch"] != TRAIN_DEFAULTS["batch"]
    assert settings("--dataset", "mnist", "--batch", "8", "--lr", "2e-4") == {
        **mnist, "batch": 8, "lr": 2e-4}  # given options win
    resumed = build_parser().parse_args(["train", "--dataset", "mnist", "--resume"])
    fill_train_defaults(resumed)
    assert resumed.steps is None and resumed.batch is None  # the checkpoint's own settings


def test_mnist_tools_run_through_ddpm_ref(capsys, tmp_path):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for name in ("mnist-eval", "figures", "classifier", "table2"):
        assert name in out
    code, out, _ = _run(capsys, "figures", "--help")
    assert code == 0 and "usage: ddpm-ref figures" in out
    assert "Figs. 5-8" in out and "--terms" in out
    code, out, err = _run(capsys, "mnist-eval", "--n", "0", "--out", tmp_path / "ev")
    _assert_one_line_error(code, err, "mnist-eval", "--n: expected an integer >= 1, got '0'")
    code, out, err = _run(capsys, "mnist-eval", "--n", "501", "--out", tmp_path / "ev")
    _assert_one_line_error(code, err, "mnist-eval", "--n: expected at most 500")
    assert not (tmp_path / "ev").exists()  # refused before anything is made


def test_missing_and_corrupt_checkpoints(capsys, tmp_path):
    code, _, err = _run(capsys, "sample", "--checkpoint", tmp_path / "none.npz", "--out",
                        tmp_path / "s.npy")
    _assert_one_line_error(code, err, "file not found")
    code, _, err = _run(capsys, "evaluate", "--checkpoint", "nosuchname")
    _assert_one_line_error(code, err, "shipped")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = _run(capsys, "evaluate", "--checkpoint", tmp_path / "bad.npz")
    _assert_one_line_error(code, err, "corrupt or truncated")


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    code, _, err = _run(capsys, "demo", "--out", blocker / "sub", *FAST)
    _assert_one_line_error(code, err, "--out", "cannot write")
    code, _, err = _run(capsys, "train", "--dataset", "gmm", "--out", blocker, *FAST)
    _assert_one_line_error(code, err, "--out")


def test_bad_combination_is_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--dataset", "gmm", "--objective", "hybrid",
                        "--variance", "fixedlarge", "--out", tmp_path, *FAST)
    _assert_one_line_error(code, err, "variance: expected one of ('learned_range',)")


def test_train_refuses_to_overwrite_and_resumes(capsys, tmp_path, trained):
    code, _, err = _run(capsys, "train", "--dataset", "moons", "--out", trained, *FAST)
    _assert_one_line_error(code, err, "exists", "--resume")
    out = tmp_path / "copy"
    out.mkdir()
    for name in ("checkpoint.npz", "history.json"):
        (out / name).write_bytes((trained / name).read_bytes())
    code, stdout, _ = _run(capsys, "train", "--dataset", "moons", "--steps", "40", "--resume",
                           "--out", out, "--quiet")
    assert code == 0 and "step 40" in stdout
    hist = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in hist] == [10, 20, 30, 40]


def test_sample_writes_npy_and_png(capsys, tmp_path, trained):
    ck = trained / "checkpoint.npz"
    code, _, _ = _run(capsys, "sample", "--checkpoint", ck, "--n", 7, "--out", tmp_path / "s",
                      "--quiet")
    x = np.load(tmp_path / "s.npy")
    assert code == 0 and x.shape == (7, 2) and x.dtype == np.float64
    code, _, _ = _run(capsys, "sample", "--checkpoint", ck, "--n", 7, "--steps", 5, "--out",
                      tmp_path / "s.png", "--quiet")
    assert code == 0 and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = _run(capsys, "sample", "--checkpoint", ck, "--steps", 21, "--out",
                        tmp_path / "t.npy", "--quiet")
    _assert_one_line_error(code, err, "--steps", "at most T = 20")


def test_sample_sampler_variance_and_clip_are_the_library_calls(capsys, tmp_path, trained):
    """--sampler ddim --eta, --variance and --clip-x0 reach ddim_sample / sample unchanged."""
    from ddpm_ref.checkpoint import load_checkpoint
    from ddpm_ref.sampling import ddim_sample, sample
    from ddpm_ref.train import make_model_fn

    ck = load_checkpoint(trained / "checkpoint.npz")
    sched, fn = ck.sched.respace(5), make_model_fn(ck.net, ck.ema)
    runs = {  # CLI flags -> the library call they must equal, seed for seed
        ("--sampler", "ddim", "--eta", "0.5", "--clip-x0"): lambda rng: ddim_sample(
            sched, fn, (6, 2), rng, eta=0.5, mean_type="eps", clip_x0=True),
        ("--variance", "fixedsmall"): lambda rng: sample(
            sched, fn, (6, 2), rng, mean_type="eps", variance="fixedsmall", clip_x0=False),
    }
    for i, (flags, call) in enumerate(runs.items()):
        code, _, _ = _run(capsys, "sample", "--checkpoint", ck.path, "--n", 6, "--steps", 5,
                          "--seed", 3, "--out", tmp_path / f"s{i}.npy", *flags, "--quiet")
        assert code == 0
        np.testing.assert_array_equal(np.load(tmp_path / f"s{i}.npy"),
                                      call(np.random.default_rng(3)))
    code, _, err = _run(capsys, "sample", "--checkpoint", ck.path, "--eta", "1", "--out",
                        tmp_path / "e.npy", "--quiet")
    _assert_one_line_error(code, err, "--eta", "--sampler ddim")
    code, _, err = _run(capsys, "sample", "--checkpoint", ck.path, "--sampler", "ddim",
                        "--eta", "-1", "--out", tmp_path / "e.npy", "--quiet")
    assert code == 2 and "--eta" in err and "Traceback" not in err


def test_sample_gif_animates_the_reverse_process(capsys, tmp_path, trained):
    ck = trained / "checkpoint.npz"
    code, out, _ = _run(capsys, "sample", "--checkpoint", ck, "--n", 7, "--steps", 5, "--out",
                        tmp_path / "s.npy", "--gif", tmp_path / "r.gif", "--quiet")
    assert code == 0 and "r.gif" in out and np.load(tmp_path / "s.npy").shape == (7, 2)
    with Image.open(tmp_path / "r.gif") as gif:  # one frame per step of the respaced chain (6)
        assert gif.format == "GIF" and gif.n_frames > 1
    code, _, err = _run(capsys, "sample", "--checkpoint", ck, "--out", tmp_path / "t.npy",
                        "--gif", tmp_path / "r.mp4", "--quiet")
    _assert_one_line_error(code, err, "--gif", "'.mp4'")
    assert not (tmp_path / "t.npy").exists()  # refused before any sampling


def test_evaluate_prints_the_bound_as_json(capsys, trained):
    code, out, _ = _run(capsys, "evaluate", "--checkpoint", trained / "checkpoint.npz", "--n",
                        20, "--per-t", "--quiet")
    rep = json.loads(out)
    assert code == 0 and rep["dataset"] == "moons" and rep["n"] == 20
    assert rep["total"] == pytest.approx(rep["L_T"] + rep["L_sum"] + rep["L_0"], rel=1e-12)
    assert len(rep["per_t_L"]) == 21 and rep["per_t_L"][0] is None


def test_demo_fast_writes_every_file(capsys, tmp_path):
    code, out, _ = _run(capsys, "demo", "--out", tmp_path, "--steps", 50, "--n-eval", 20,
                        "--n-samples", 40, *FAST)
    assert code == 0 and "bound (Eq. 5)" in out
    for name in ("samples.npy", "report.json", "checkpoint.npz", "samples.png", "forward.png",
                 "trajectory.png", "per_t.png", "training.png", "reverse.gif"):
        assert (tmp_path / name).is_file(), name
    assert np.load(tmp_path / "samples.npy").shape == (40, 2)
    with Image.open(tmp_path / "reverse.gif") as gif:  # an animation, not a still
        assert gif.format == "GIF" and gif.n_frames > 1
    rep = json.loads((tmp_path / "report.json").read_text())
    for k in ("dataset", "steps", "wall_s", "bound", "oracle_bound", "nll_exact", "l_simple",
              "mmd", "mmd_floor", "steps_per_s"):
        assert k in rep, k
    assert set(rep["bound"]) == set(rep["oracle_bound"]) == {"L_T", "L_sum", "L_0", "total"}
    assert rep["dataset"] == "gmm" and rep["steps"] == 50


def test_python_dash_m_runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "ddpm_ref", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "demo" in res.stdout


def test_diverging_training_stops_with_one_line_and_status_1(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--dataset", "gmm", "--lr", "1e30", "--warmup", "0",
                        "--steps", "20", "--batch", "8", "--out", tmp_path, *FAST)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "training stopped at step" in lines[0]


@pytest.mark.slow  # ~3 s with Numba, ~50 s under NUMBA_DISABLE_JIT=1 (the U-Net kernels in Python)
def test_images_train_sample_and_evaluate(capsys, tmp_path):
    code, _, _ = _run(capsys, "train", "--dataset", "mnist14", "--steps", 2, "--batch", 2,
                      "--T", 5, "--out", tmp_path, "--quiet")
    assert code == 0
    ck = tmp_path / "checkpoint.npz"
    code, _, _ = _run(capsys, "sample", "--checkpoint", ck, "--n", 3, "--out",
                      tmp_path / "digits.npy", "--quiet")
    x = np.load(tmp_path / "digits.npy")
    assert code == 0 and x.shape == (3, 14, 14) and x.dtype == np.uint8
    code, _, _ = _run(capsys, "sample", "--checkpoint", ck, "--n", 2, "--out",
                      tmp_path / "grid.png", "--gif", tmp_path / "grid.gif", "--quiet")
    assert code == 0 and (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    with Image.open(tmp_path / "grid.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames > 1
    code, out, _ = _run(capsys, "evaluate", "--checkpoint", ck, "--n", 2, "--quiet")
    rep = json.loads(out)
    assert code == 0 and rep["bits_per_dim"] == pytest.approx(
        rep["total"] / (14 * 14 * np.log(2.0)), rel=1e-12)


def test_blas_rule_one_thread_for_points_only():
    """One place decides: models of 2-D points get one BLAS thread, images the default."""
    from threadpoolctl import threadpool_info

    from ddpm_ref._threads import blas_threads_for

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    with blas_threads_for((2,)):
        assert blas_threads() and all(n == 1 for n in blas_threads())
    with blas_threads_for((1, 28, 28)):
        assert blas_threads() == before
    assert blas_threads() == before


def test_every_2d_command_asks_the_blas_rule(capsys, monkeypatch, trained, tmp_path):
    """demo, train, sample and evaluate all run their work inside blas_threads_for(x_shape)."""
    import contextlib

    import ddpm_ref._cli_commands as cli  # where the commands live

    seen = []

    def record(x_shape):
        seen.append(tuple(x_shape))
        return contextlib.nullcontext()

    monkeypatch.setattr(cli, "blas_threads_for", record)
    ck = trained / "checkpoint.npz"
    assert _run(capsys, "sample", "--checkpoint", ck, "--n", 3, "--out",
                tmp_path / "s.npy", *FAST[2:])[0] == 0
    assert _run(capsys, "evaluate", "--checkpoint", ck, "--n", 2, "--quiet")[0] == 0
    assert _run(capsys, "train", "--dataset", "moons", "--steps", 2, "--batch", 4,
                "--out", tmp_path / "r", *FAST)[0] == 0
    assert seen == [(2,), (2,), (2,)]
