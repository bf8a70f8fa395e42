"""Argument types and errors of the ``ddpm-ref`` command line (ddpm_ref.cli).

Every bad argument ends as ONE line on stderr and exit status 2: argparse's own errors through
:class:`Parser`, errors found after parsing through :class:`CLIError`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["CLIError", "Parser", "int_at_least", "positive_float", "writable_dir",
           "check_memory", "output_file", "image_suffixes", "FolderLock", "version_text"]


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
