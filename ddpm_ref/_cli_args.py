"""Argument types and errors of the ``ddpm-ref`` command line (ddpm_ref.cli).

Every bad argument ends as ONE line on stderr and exit status 2: argparse's own errors through
:class:`Parser`, errors found after parsing through :class:`CLIError`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["CLIError", "Parser", "int_at_least", "positive_float", "writable_dir"]


class CLIError(Exception):
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
