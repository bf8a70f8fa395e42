"""Execute every notebook fresh in fast mode (DDPM_REF_FAST=1) and check the paper is covered.

A notebook is also a test: its assert cells fail when a derivation or the code is wrong.
Cells tagged ``exercise`` (student exercises) are skipped here. The committed notebooks are
executed in full mode; every cell of theirs that draws a figure must carry it (an image/png output).
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


# a code cell "draws a figure" if it shows, saves or displays one
_DRAWS = re.compile(r"\bplt\.show\(|\.savefig\(|\bdisplay\(\s*fig")


def _figure_cells_without_png(nb):
    """Indices of code cells that draw a figure but have no image/png output."""
    missing = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "exercise" in cell.get("metadata", {}).get("tags", []):
            continue
        code = "\n".join(ln.split("#", 1)[0] for ln in cell.source.splitlines())  # ignore comments
        if not _DRAWS.search(code):
            continue
        if not any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
            missing.append(i)
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_every_figure(path):
    nb = nbformat.read(path, as_version=4)
    missing = _figure_cells_without_png(nb)
    assert missing == [], (
        f"{path.name}: code cells {missing} draw a figure but have no image/png output; "
        "re-execute the notebook with the inline backend (MPLBACKEND unset): "
        f"cd notebooks && jupyter execute --inplace {path.name}"
    )


def test_figure_check_would_catch_a_lost_figure():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nplt.show()"),  # no output: caught
        nbformat.v4.new_code_cell("x = 1  # plt.show() only in a comment"),
        nbformat.v4.new_code_cell(
            "fig.savefig('a.png')",
            outputs=[
                nbformat.v4.new_output(
                    "display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
                )
            ],
        ),
    ]
    assert _figure_cells_without_png(nb) == [0]


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
    assert {1, 2} - algs == set(), f"algorithms without a section: { ({1, 2} - algs) }"


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
