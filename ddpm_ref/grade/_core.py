r"""The grader's machinery: load a student's file, run checks on it, print points.

A check is a function ``check(m)`` of the student's module ``m`` that returns None (pass) or
raises ``AssertionError`` with a one-line reason (fail). The student's ``NotImplementedError``
is reported as "not implemented", a missing function as "missing", any other exception as one
line naming its type: never a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATUSES = ("pass", "FAIL", "not implemented", "missing", "error")


@dataclass(frozen=True)
class Check:
    name: str  # what is checked, in the paper's terms (printed)
    points: int
    run: object  # check(m) -> None, raises AssertionError on a wrong answer


@dataclass(frozen=True)
class Assignment:
    name: str  # the command-line name, e.g. "forward"
    title: str  # the lecture and equations it belongs to
    skeleton: str  # file name in notebooks/assignments/
    checks: tuple


@dataclass(frozen=True)
class Result:
    check: Check
    status: str  # one of STATUSES
    detail: str  # one line ("" on pass)

    @property
    def points(self) -> int:
        return self.check.points if self.status == "pass" else 0


class ImportFailed(ValueError):
    """The student's file exists but raised while being imported (a syntax error, ...)."""


class Missing(Exception):
    """The student's file does not define a function the check needs."""


def student_fn(m, name):
    fn = getattr(m, name, None)
    if not callable(fn):
        raise Missing(f"no function {name}() in the file")
    return fn


def load_solution(path) -> object:
    """Import the student's file as a fresh module (raises ValueError with one line)."""
    path = Path(path)
    if path.suffix != ".py" or not path.is_file():
        raise ValueError(f"solution: expected an existing .py file, got {str(path)!r}")
    name = f"_ddpm_ref_student_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a syntax error, a failing import: one line, where it happened
        tb = traceback.extract_tb(e.__traceback__)
        line = next((f.lineno for f in reversed(tb) if f.filename == str(path)), None)
        if isinstance(e, SyntaxError):
            line = e.lineno
        where = f" (line {line})" if line else ""
        raise ImportFailed(f"solution: {path} could not be imported{where}: "
                         f"{type(e).__name__}: {e}") from None
    return module


def run_check(check: Check, m) -> Result:
    try:
        with np.errstate(all="ignore"):
            check.run(m)
    except NotImplementedError:
        return Result(check, "not implemented", "")
    except Missing as e:
        return Result(check, "missing", str(e))
    except AssertionError as e:
        return Result(check, "FAIL", str(e).strip().split("\n")[0] or "wrong answer")
    except Exception as e:  # the student's code crashed: say where, in one line
        tb = traceback.extract_tb(e.__traceback__)
        frame = next((f for f in reversed(tb) if f.filename == getattr(m, "__file__", "")), None)
        where = f" at line {frame.lineno}" if frame else ""
        msg = str(e).strip().split("\n")[0]
        return Result(check, "error", f"{type(e).__name__}{where}: {msg}")
    return Result(check, "pass", "")


def grade(assignment: Assignment, path) -> list:
    m = load_solution(path)
    return [run_check(c, m) for c in assignment.checks]


def report(assignment: Assignment, path, results, out=None) -> None:
    out = sys.stdout if out is None else out
    total = sum(r.check.points for r in results)
    got = sum(r.points for r in results)
    print(f"{assignment.name}: {assignment.title}", file=out)
    print(f"solution: {path}", file=out)
    width = max(len(s) for s in STATUSES) + 2
    for r in results:
        tag = f"[{r.status}]".ljust(width)
        line = f"  {tag} {r.points:>2}/{r.check.points:<2}  {r.check.name}"
        print(line + (f"\n      {r.detail}" if r.detail else ""), file=out)
    n_pass = sum(r.status == "pass" for r in results)
    print(f"total: {got}/{total} points ({n_pass} of {len(results)} checks passed)", file=out)


# ---------------------------------------------------------------------------------------------
# Helpers the checks share (tolerances argued once, here)

# Exact identities in float64: a handful of operations, each rounding by at most 2^-53 relative;
# 1e-10 leaves room for any order of operations and is still far below the smallest real slip
# (an off-by-one t changes the linear schedule's beta_t by >= 2e-3 relative).
RTOL = 1e-10


def close(name, got, want, rtol=RTOL, atol=1e-12):
    """Assert got == want to rtol (elementwise), with a one-line reason."""
    got = np.asarray(got, dtype=np.float64) if got is not None else None
    want = np.asarray(want, dtype=np.float64)
    if got is None:
        raise AssertionError(f"{name}: got None (did you forget to return it?)")
    try:
        ok = np.broadcast_shapes(got.shape, want.shape) == want.shape
    except ValueError:
        ok = False
    if not ok:
        raise AssertionError(f"{name}: shape {got.shape}, expected {want.shape}")
    got = np.broadcast_to(got, want.shape)
    if not np.all(np.isfinite(got) == np.isfinite(want)):
        raise AssertionError(f"{name}: non-finite values where the answer is finite (or back)")
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    if np.any(bad):
        i = np.unravel_index(np.argmax(np.where(bad, err / (np.abs(want) + atol), 0)), bad.shape)
        at = tuple(int(k) for k in i)
        raise AssertionError(f"{name}: {np.count_nonzero(bad)} of {bad.size} values wrong, e.g. "
                             f"got {got[i]:.10g}, expected {want[i]:.10g} at index {at}")
