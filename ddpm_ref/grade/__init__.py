r"""Graded "implement it yourself" assignments: the grader.

    python -m ddpm_ref.grade ASSIGNMENT path/to/solution.py
    python -m ddpm_ref.grade --list

A student copies a skeleton from ``notebooks/assignments/`` (function signatures and docstrings,
bodies ``raise NotImplementedError``), fills in the bodies, and runs the grader on the file. Each
check calls the student's functions and holds them to the paper's identities and to the library's
reference functions (Eq. (2) composed against Eq. (4), Eqs. (6)-(7) against Bayes' rule, Eq. (12)
against the KL of Eq. (5), Eq. (13)'s bins summing to 1, Algorithm 2 seed for seed, backward
passes against centred finite differences with :func:`ddpm_ref.nn.gradcheck.check_layer`).
It prints each check as pass / FAIL / not implemented / missing / error with its points and a
total, and exits 0 when every check passes, 1 otherwise, 2 on a usage error (one line, no
traceback).
"""

from __future__ import annotations

import argparse
import sys

from ddpm_ref.grade import algorithms, backward, bound, forward, posterior
from ddpm_ref.grade._core import Assignment, Check, ImportFailed, Result, grade, report

ASSIGNMENTS: dict[str, Assignment] = {
    a.name: a for a in (forward.ASSIGNMENT, posterior.ASSIGNMENT, bound.ASSIGNMENT,
                        algorithms.ASSIGNMENT, backward.ASSIGNMENT)
}

__all__ = ["ASSIGNMENTS", "Assignment", "Check", "Result", "grade", "main"]


def _parser(prog="python -m ddpm_ref.grade"):
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Grade an assignment: run its checks on your solution file.")
    ap.add_argument("assignment", nargs="?", help=f"one of: {', '.join(ASSIGNMENTS)}")
    ap.add_argument("solution", nargs="?", help="your .py file (a filled-in skeleton)")
    ap.add_argument("--list", action="store_true", help="list the assignments and their checks")
    return ap


def main(argv=None, prog="python -m ddpm_ref.grade") -> int:
    args = _parser(prog).parse_args(argv)
    if args.list:
        for a in ASSIGNMENTS.values():
            pts = sum(c.points for c in a.checks)
            print(f"{a.name:<11} {pts:>2} points  {a.title}  (notebooks/assignments/{a.skeleton})")
        return 0
    if args.assignment not in ASSIGNMENTS:
        print(f"grade: assignment: expected one of {', '.join(ASSIGNMENTS)}, got "
              f"{args.assignment!r}", file=sys.stderr)
        return 2
    if args.solution is None:
        print("grade: solution: expected the path of your .py file", file=sys.stderr)
        return 2
    a = ASSIGNMENTS[args.assignment]
    try:
        results = grade(a, args.solution)
    except ImportFailed as e:  # the student's bug: no points, exit 1
        print(f"grade: {e}", file=sys.stderr)
        print(f"total: 0/{sum(c.points for c in a.checks)} points (the file did not import)")
        return 1
    except ValueError as e:
        print(f"grade: {e}", file=sys.stderr)
        return 2
    report(a, args.solution, results)
    return 0 if all(r.status == "pass" for r in results) else 1
