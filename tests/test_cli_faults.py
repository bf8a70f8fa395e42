"""The command line under faults: Ctrl-C, a second run in one folder, bad resumes, wrong kinds
of checkpoint, output names, closed pipes, full disks, absurd sizes -- one line, nothing lost."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ddpm_ref.checkpoint import load_checkpoint
from ddpm_ref.cli import main

FAST = ["--T", "20", "--quiet"]
TINY = ["--dataset", "moons", "--batch", "16", "--log-every", "5", *FAST]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code, err, *words, status=2):
    assert code == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def run30(tmp_path_factory):
    out = tmp_path_factory.mktemp("run30")
    assert main(["train", *TINY, "--steps", "30", "--out", str(out)]) == 0
    return out


def test_ctrl_c_in_train_saves_and_the_printed_command_resumes_bit_for_bit(
        capsys, tmp_path, monkeypatch, run30):
    import ddpm_ref.nn.mlp as mlp

    real, calls = mlp.MLP.forward, []

    def forward(self, *a, **kw):  # Ctrl-C in the middle of the 18th step
        calls.append(1)
        if len(calls) == 18:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(mlp.MLP, "forward", forward)
        code, _, err = _run(capsys, "train", *TINY, "--steps", 30, "--ckpt-every", 0,
                            "--out", out)
    line = _one_line(code, err, "interrupted at step 17", f"saved {out / 'checkpoint.npz'}",
                     status=130)
    again = line.split("continue with: ")[1].split()
    assert again[:2] == ["ddpm-ref", "train"] and "--resume" in again
    hist = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in hist] == [5, 10, 15]  # the log is kept as it goes
    code, _, err = _run(capsys, *again[1:], "--steps", 30, "--quiet")
    assert code == 0, err
    a, b = load_checkpoint(out / "checkpoint.npz"), load_checkpoint(run30 / "checkpoint.npz")
    assert a.step == b.step == 30
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert [r["step"] for r in json.loads((out / "history.json").read_text())] == [
        5, 10, 15, 20, 25, 30]


def test_a_second_train_into_one_folder_is_refused(capsys, tmp_path):
    from ddpm_ref._cli_args import FolderLock

    with FolderLock(tmp_path):  # as a running `ddpm-ref train` holds it
        code, _, err = _run(capsys, "train", *TINY, "--steps", 2, "--out", tmp_path)
    _one_line(code, err, "is in use by ddpm-ref train (pid")
    assert not (tmp_path / "checkpoint.npz").exists()
    (tmp_path / ".checkpoint.npz.abcd1234.tmp").write_bytes(b"left by a killed run")
    code, _, err = _run(capsys, "train", *TINY, "--steps", 2, "--out", tmp_path)
    assert code == 0, err  # the lock went with its holder; the stale temporary too
    assert not list(tmp_path.glob(".checkpoint.npz.*.tmp"))


def test_resume_takes_a_new_lr_and_refuses_what_it_cannot_honour(capsys, tmp_path, run30):
    out = tmp_path / "r"
    shutil.copytree(run30, out)
    code, _, err = _run(capsys, "train", "--dataset", "moons", "--out", out, "--resume",
                        "--steps", 20, "--quiet")
    _one_line(code, err, "--steps", "at step 30 already")
    code, _, err = _run(capsys, "train", "--dataset", "moons", "--out", out, "--resume",
                        "--steps", 40, "--batch", 8, "--quiet")
    _one_line(code, err, "--batch: cannot change on --resume", "16")
    code, _, err = _run(capsys, "train", "--dataset", "moons", "--out", out, "--resume",
                        "--steps", 40, "--T", 50, "--quiet")
    _one_line(code, err, "--T: cannot change on --resume")
    code, _, err = _run(capsys, "train", "--dataset", "moons", "--out", out, "--resume",
                        "--steps", 40, "--lr-decay", "cosine", "--quiet")
    _one_line(code, err, "--lr-decay: cannot change on --resume", "'none'")
    code, _, err = _run(capsys, "train", "--dataset", "moons", "--out", out, "--resume",
                        "--steps", 35, "--lr", "1e-4", "--quiet")
    assert code == 0, err
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck.step == 35 and ck.train_config["lr"] == 1e-4
    (out / "history.json").write_text('[{"step": 5, "lo')  # truncated by hand
    code, _, err = _run(capsys, "train", "--dataset", "moons", "--out", out, "--resume",
                        "--steps", 40, "--quiet")
    _one_line(code, err, "history.json is unreadable")


def test_resume_of_a_checkpoint_without_rng_state(capsys, tmp_path):
    shutil.copy(load_checkpoint("mnist").path, tmp_path / "checkpoint.npz")
    code, _, err = _run(capsys, "train", "--dataset", "mnist", "--out", tmp_path, "--resume",
                        "--steps", 6000, "--quiet")
    _one_line(code, err, "holds no rng state", "cannot continue bit for bit")


@pytest.mark.parametrize("tool", ["figures", "mnist-eval"])
def test_image_tools_given_a_2d_checkpoint(capsys, tmp_path, run30, tool):
    code, _, err = _run(capsys, tool, "--checkpoint", run30 / "checkpoint.npz", "--out",
                        tmp_path / "o")
    _one_line(code, err, "is a 2-D checkpoint", "needs an image model")


def test_figures_terms_given_a_checkpoint(capsys, tmp_path):
    code, _, err = _run(capsys, "figures", "--terms", load_checkpoint("mnist").path, "--out",
                        tmp_path)
    _one_line(code, err, "--terms", "is not a terms.npz", "(a checkpoint)")


def test_sample_output_names(capsys, tmp_path, run30):
    ck = run30 / "checkpoint.npz"
    for bad, words in ((tmp_path / "x.jpg2", ["--out", "cannot write '.jpg2'", ".png"]),
                       (f"{tmp_path}/", ["--out", "is a folder"]),
                       ("", ["--out", "empty"])):
        code, _, err = _run(capsys, "sample", "--checkpoint", ck, "--n", 4, "--out", bad,
                            "--quiet")
        _one_line(code, err, *words)
    assert not (tmp_path.parent / f"{tmp_path.name}.npy").exists()  # nothing beside the folder
    code, out, err = _run(capsys, "sample", "--checkpoint", ck, "--n", 4, "--out",
                          tmp_path / "pts.jpg", "--quiet")
    assert code == 0, err
    assert (tmp_path / "pts.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, not a PNG
    assert np.load(tmp_path / "pts.npy").shape == (4, 2)  # and its raw samples
    code, _, err = _run(capsys, "sample", "--checkpoint", ck, "--n", 10**12, "--out",
                        tmp_path / "big.npy", "--quiet")
    _one_line(code, err, "--n", "would need at least", "of memory; this machine has")


def test_a_full_disk_is_one_line_and_the_old_file_survives(capsys, tmp_path, run30, monkeypatch):
    import ddpm_ref._io as io

    ck = run30 / "checkpoint.npz"
    assert _run(capsys, "sample", "--checkpoint", ck, "--n", 3, "--out", tmp_path / "s.npy",
                "--quiet")[0] == 0
    old = np.load(tmp_path / "s.npy")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    code, _, err = _run(capsys, "sample", "--checkpoint", ck, "--n", 3, "--seed", 1, "--out",
                        tmp_path / "s.npy", "--quiet")
    _one_line(code, err, "no space left on device", str(tmp_path / "s.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), old)


def test_evaluate_into_a_closed_pipe_prints_no_traceback(run30):
    p = subprocess.Popen([sys.executable, "-m", "ddpm_ref", "evaluate", "--checkpoint",
                          str(run30 / "checkpoint.npz"), "--n", "2", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # as `| head` does once it has what it wants
    with p.stderr:
        err = p.stderr.read().decode()
    p.wait()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert p.returncode == 141


def test_version_and_help_say_every_default(capsys):
    import numba

    code, out, _ = _run(capsys, "--version")
    assert code == 0 and "ddpm-ref 0.1.0" in out and np.__version__ in out
    assert numba.__version__ in out
    code, out, _ = _run(capsys, "sample", "--help")
    assert "(default: 64)" in out and "(default: 0)" in out and "mnist" in out
    code, out, _ = _run(capsys, "demo", "--help")
    assert "(default: 8000;" in out and "the demo's" not in out
    code, out, _ = _run(capsys, "train", "--help")
    assert "steps per log record (default: 100)" in out and "random seed (default: 0)" in out


@pytest.mark.parametrize("tool", ["mnist-eval", "figures", "table2", "classifier"])
def test_every_option_of_the_mnist_tools_has_help(monkeypatch, tool):
    import argparse

    seen = []

    def grab(self, args=None, namespace=None):
        seen.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    assert main([tool]) == 0
    actions = [a for a in seen[0]._actions if a.option_strings or a.dest == "samples"]
    assert actions and all(a.help for a in actions), [a.dest for a in actions if not a.help]


def test_table2_refuses_bad_sizes_before_training(capsys, tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("a file")
    for argv, words in ((["--T", "0"], ["--T"]),
                        (["--n-eval", "501"], ["--n-eval", "at most 500"]),
                        (["--sample-steps", "30", "--T", "20"], ["--sample-steps"]),
                        (["--n-samples", str(10**12)], ["--n-samples", "memory"]),
                        (["--out", str(blocker / "x")], ["--out", "cannot write"])):
        code, _, err = _run(capsys, "table2", *argv)
        _one_line(code, err, *words)
