"""Run every worked solution in notebooks/solutions/ in fast mode (DDPM_REF_FAST=1).

Each solution is a script that asserts its answers (a wrong derivation or a wrong library result
makes it fail), so running it is the test: a non-zero exit status, with the assert's traceback,
fails here.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SOL_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"
SOLUTIONS = sorted(SOL_DIR.glob("[0-9][0-9]_*.py"))


def test_there_is_a_solution_file_per_notebook():
    notebooks = {p.stem for p in SOL_DIR.parent.glob("[0-9][0-9]_*.ipynb")}
    exercises = set()
    for nb in notebooks:
        text = (SOL_DIR.parent / f"{nb}.ipynb").read_text(encoding="utf-8")
        if '"exercise"' in text:
            exercises.add(nb)
    missing = exercises - {p.stem for p in SOLUTIONS}
    assert missing == set(), f"notebooks with exercises but no solutions/NN_*.py: {sorted(missing)}"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_runs_and_its_asserts_hold(path):
    env = dict(os.environ, DDPM_REF_FAST="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, path.name],
        cwd=SOL_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (
        f"{path.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    assert "assert" in path.read_text(encoding="utf-8"), f"{path.name} asserts nothing"
