"""Argument types, checks and errors of the ``ddpm-ref`` command line (ddpm_ref.cli).

Every bad argument ends as ONE line on stderr and exit status 2: argparse's own errors through
:class:`Parser`, errors found after parsing through :class:`CLIError`, everything a run can meet
(a full disk, no memory, a closed pipe, Ctrl-C) through :func:`run_reporting_errors`. Sizes are
checked against the machine's memory before the work starts; ``--resume`` is checked against the
checkpoint (:func:`resume_config`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["CLIError", "Parser", "int_at_least", "nonnegative_float", "positive_float",
           "writable_dir", "check_memory", "output_file", "image_suffixes", "FolderLock",
           "version_text", "resume_config", "read_history", "run_reporting_errors"]


class CLIError(ValueError):
    """A bad argument found after parsing: reported on one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(lo):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {s!r}")
        return v

    return parse


def nonnegative_float(s):
    try:
        v = float(s)
    except ValueError:
        v = None
    if v is None or not (v >= 0 and np.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}")
    return v


def positive_float(s):
    try:
        v = float(s)
    except ValueError:
        v = None
    if v is None or not (v > 0 and np.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {s!r}")
    return v


def writable_dir(path, flag="--out") -> Path:
    """Create ``path`` if needed and check that a file can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise CLIError(f"{flag}: cannot write to the folder {str(path)!r}: "
                       f"{e.strerror or e}") from None
    return path


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1024 or unit == "PB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} PB"  # pragma: no cover


def physical_memory() -> int | None:
    """This machine's RAM in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def check_memory(flag: str, what: str, nbytes: float) -> None:
    """CLIError before the work starts if ``nbytes`` (an estimate, a lower bound) exceeds RAM."""
    ram = physical_memory()
    if ram is not None and nbytes > ram:
        raise CLIError(f"{flag}: {what} would need at least {_human(nbytes)} of memory; "
                       f"this machine has {_human(ram)}")


def output_file(flag: str, value, allowed: tuple, default_suffix: str) -> Path:
    """A file to write: not empty, not a folder; suffix one of ``allowed`` (none: the default).

    The folder it goes to must be writable (:func:`writable_dir`). All checked before any work.
    """
    text = str(value)
    if not text.strip():
        raise CLIError(f"{flag}: expected a file name, got an empty string")
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise CLIError(f"{flag}: {text!r} is a folder; expected a file name such as "
                       f"{str(path / ('samples' + default_suffix))!r}")
    if path.suffix == "":
        path = path.with_name(path.name + default_suffix)
    elif path.suffix.lower() not in allowed:
        raise CLIError(f"{flag}: cannot write {path.suffix!r} files; expected one of "
                       f"{', '.join(allowed)}")
    writable_dir(path.parent, flag)
    return path


def image_suffixes() -> tuple:
    """The picture formats matplotlib writes (".png", ".pdf", ".svg", ".jpg", ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted("." + k for k in FigureCanvasBase.get_supported_filetypes()))


class FolderLock:
    """An exclusive lock on a folder for one ``ddpm-ref train`` (``fcntl.flock`` on a file in it).

    The OS drops the lock when the process ends, however it ends: a killed run never leaves a
    stale lock. A second run into the same folder is refused naming the holder's pid.
    """

    def __init__(self, folder, name=".ddpm-ref-train.lock"):
        self.path = Path(folder) / name
        self.f = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            f.close()
            raise CLIError(f"--out: {self.path.parent} is in use by ddpm-ref train (pid {pid}); "
                           f"wait for it, or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self.f = f
        return self

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()  # releases the lock
        return False


def version_text() -> str:
    """``ddpm-ref --version``: ddpm_ref, Python, NumPy, Numba versions."""
    import platform

    import numba

    import ddpm_ref

    return (f"ddpm-ref {ddpm_ref.__version__} (Python {platform.python_version()}, NumPy "
            f"{np.__version__}, Numba {numba.__version__})")


# Lower bounds of the memory a job needs, so that an absurd size is refused at once with the
# number (a MemoryError deep in NumPy says neither which flag nor how much)
def sample_bytes(n, x_shape):  # x, eps, mean, sigma * z, the model output: float64 each
    return 5 * 8 * n * int(np.prod(x_shape))


def bound_bytes(n, T, x_shape):  # the (n, T+1) float64 term tables, plus one x_t batch
    return 8 * n * (3 * (T + 1) + 4 * int(np.prod(x_shape)))


def schedule_bytes(T):  # a dozen float64 arrays of length T+1
    return 12 * 8 * (T + 1)


# train options a resumed run may change, and those it must keep (they define the model)
_RESUME_MAY_CHANGE = ("lr", "log_every", "ckpt_every")
_RESUME_KEEPS = ("batch", "warmup", "lr_decay", "ema_decay", "objective", "mean_type", "variance",
                 "seed")


def resume_config(args, ck, ckpt_path):
    """The TrainConfig of ``--resume``: the checkpoint's, with --steps and the options above."""
    from ddpm_ref.train import TrainConfig

    if ck.dataset != args.dataset:
        raise CLIError(f"--resume: {ckpt_path} was trained on {ck.dataset!r}, "
                       f"not {args.dataset!r}")
    if ck.rng is None or not ck.opt_state:
        raise CLIError(f"--resume: {ckpt_path} holds no {'rng' if ck.rng is None else 'optimiser'}"
                       f" state (a checkpoint saved for sampling, like the shipped ones), so "
                       f"training cannot continue bit for bit; train a new run instead")
    try:
        old = TrainConfig.from_dict(ck.train_config)
    except (ValueError, TypeError) as e:
        raise CLIError(f"checkpoint: {ckpt_path} has an unusable train config: {e}") from None
    changed = {}
    for key in _RESUME_KEEPS:
        value = getattr(args, key)
        if value is not None and value != getattr(old, key):
            raise CLIError(f"--{key.replace('_', '-')}: cannot change on --resume (the run "
                           f"was trained with {getattr(old, key)!r}); start a new --out instead")
    if args.no_ema_warmup and old.ema_warmup:
        raise CLIError("--no-ema-warmup: cannot change on --resume (the run warms its EMA up)")
    if args.T is not None and args.T != ck.sched.T:
        raise CLIError(f"--T: cannot change on --resume (the run has T = {ck.sched.T})")
    kind = ck.schedule_info.get("kind")
    if args.schedule is not None and kind is not None and args.schedule != kind:
        raise CLIError(f"--schedule: cannot change on --resume (the run has {kind!r})")
    for key in _RESUME_MAY_CHANGE:
        value = getattr(args, key)
        if value is not None and value != getattr(old, key):
            changed[key] = value
    steps = old.steps if args.steps is None else args.steps
    if steps <= ck.step:
        raise CLIError(f"--steps: {ckpt_path} is at step {ck.step} already; give --steps "
                       f"greater than {ck.step} to train more")
    try:
        return TrainConfig.from_dict({**ck.train_config, "steps": steps, **changed}), changed
    except (ValueError, TypeError) as e:
        raise CLIError(f"checkpoint: {ckpt_path} has an unusable train config: {e}") from None


def read_history(path, upto):
    if not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, list) or not all(isinstance(r, dict) for r in old):
            raise ValueError("not a list of records")
    except (ValueError, OSError) as e:
        raise CLIError(f"--resume: {path} is unreadable ({' '.join(str(e).split())[:60]}); "
                       f"move it away to resume without the old log") from None
    return [r for r in old if isinstance(r.get("step"), int) and r["step"] <= upto]


def _one_line(e) -> str:
    return " ".join(str(e).split())


def _os_error(e: OSError) -> str:
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    return f"cannot write or read {where}{e.strerror or _one_line(e)}"


def run_reporting_errors(command: str, job, args=None) -> int:
    """Run ``job()``; every expected failure becomes one line on stderr and an exit status."""
    from ddpm_ref.train import NonFiniteLossError

    def err(msg, status=2):
        print(f"ddpm-ref {command}: error: {msg}", file=sys.stderr)
        return status

    try:
        return int(job() or 0)
    except SystemExit as e:  # argparse: --help (0) or a bad argument (2, already reported)
        return e.code if isinstance(e.code, int) else 2
    except CLIError as e:
        return err(_one_line(e))
    except NonFiniteLossError as e:
        hint = ""
        if args is not None and e.ckpt_step is not None:
            lr = f"{args.lr / 10:g}" if args.lr else "SMALLER"
            hint = (f"; to continue from there with a smaller rate: ddpm-ref train --dataset "
                    f"{args.dataset} --out {args.out} --resume --lr {lr}")
        return err(f"{e}{hint}", 1)
    except BrokenPipeError:  # e.g. `ddpm-ref evaluate ... | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail again
        return 141
    except MemoryError:
        return err("out of memory; try smaller sizes (--n, --batch, --T, --n-samples)")
    except OSError as e:  # a full disk, a folder made read-only during the run, ...
        return err(_os_error(e))
    except ValueError as e:  # bad input found after parsing (the MNIST tools): one line
        return err(_one_line(e))
    except KeyboardInterrupt:
        print(f"ddpm-ref {command}: interrupted", file=sys.stderr)
        return 130
