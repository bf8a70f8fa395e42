"""Execute every notebook fresh in fast mode (DDPM_REF_FAST=1) and check the paper is covered.

A notebook is also a test: its assert cells fail when a derivation or the code is wrong.
Cells tagged ``exercise`` (student exercises) are skipped here.
"""

import re
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def _headings():
    """All markdown lines starting with '## ' across the notebooks."""
    out = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                out += [ln.strip() for ln in cell.source.splitlines() if ln.startswith("## ")]
    return out


def test_every_equation_and_algorithm_has_a_section():
    heads = _headings()
    eqs = {int(m) for h in heads for m in re.findall(r"Eqs?\. \((\d+)\)", h)}
    # "## Eqs. (6)-(7): ..." covers both ends of a range
    for h in heads:
        for a, b in re.findall(r"\((\d+)\)\s*[-\u2013]\s*\((\d+)\)", h):
            eqs |= set(range(int(a), int(b) + 1))
    algs = {int(m) for h in heads for m in re.findall(r"Algorithm (\d)", h)}
    missing = set(range(1, 15)) - eqs
    assert missing == set(), f"equations without a section: {sorted(missing)}"
    assert {1, 2} - algs == set(), f"algorithms without a section: {({1, 2} - algs)}"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, monkeypatch):
    monkeypatch.setenv("DDPM_REF_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "exercise" not in c.get("metadata", {}).get("tags", [])]
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}
    )
    client.execute()  # raises CellExecutionError on any error or failed assert
