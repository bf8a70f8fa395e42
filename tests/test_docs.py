"""The documentation is checked against the code: docs/paper_map.md, the links, the api examples.

docs/paper_map.md is a Markdown table whose cells hold backticked references:
``module:name`` (a function, class or attribute of ddpm_ref), ``tests/file.py::test_name`` (a test
function, found by parsing the file, not by running it) and ``notebooks/NN_x.ipynb`` followed by
one or more ``## heading`` spans (markdown lines of that notebook). Every Eq. (1)-(14) and
Algorithm 1-2 must have a row. Any ``tests/...::name`` or ``ddpm_ref...:name`` reference anywhere
in docs/*.md must resolve too, every relative link in docs/*.md and README.md must point to an
existing file, and the ```python blocks of docs/api.md must run.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAPER_MAP = DOCS / "paper_map.md"
API = DOCS / "api.md"
MD_FILES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]

FUNC_RE = re.compile(r"^(ddpm_ref(?:\.\w+)*):(\w+(?:\.\w+)*)$")  # `ddpm_ref.diffusion:q_sample`
TEST_RE = re.compile(r"^(tests/\w+\.py)::(\w+)$")  # `tests/test_diffusion.py::test_eq2_...`
NB_RE = re.compile(r"^notebooks/\d\d_\w+\.ipynb$")
SPAN_RE = re.compile(r"`([^`]+)`")
REQUIRED = [f"Eq. ({k})" for k in range(1, 15)] + ["Algorithm 1", "Algorithm 2"]


def _strip_code(text: str) -> str:
    """Markdown without fenced code blocks and inline code spans (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _items(cell: str) -> set[str]:
    """The paper items a first-column cell names: 'Eqs. (6)-(7)' -> {'Eq. (6)', 'Eq. (7)'}."""
    out = set()
    for a, b in re.findall(r"Eqs?\. \((\d+)\)(?:\s*[-\u2013]\s*\((\d+)\))?", cell):
        out |= {f"Eq. ({k})" for k in range(int(a), int(b or a) + 1)}
    out |= {f"Algorithm {k}" for k in re.findall(r"Algorithm (\d+)", cell)}
    return out


def _rows() -> list[dict]:
    """The rows of paper_map.md's tables, keyed by header (paper, function, test, notebook)."""
    rows, header = [], None
    text = PAPER_MAP.read_text(encoding="utf-8") if PAPER_MAP.is_file() else ""
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
        elif not set("".join(cells)) <= set("-: "):
            rows.append(dict(zip(header, cells, strict=False)))
    return rows


def _row_refs(key: str, pattern: re.Pattern) -> list[str]:
    refs = {s for r in _rows() for s in SPAN_RE.findall(r.get(key, "")) if pattern.match(s)}
    return sorted(refs)


def _notebook_refs() -> list[tuple[str, str]]:
    """(notebook, heading) pairs: a heading span belongs to the last notebook span before it."""
    out = set()
    for r in _rows():
        nb = None
        for s in SPAN_RE.findall(r.get("notebook", "")):
            if NB_RE.match(s):
                nb = s
            elif s.startswith("#") and nb is not None:
                out.add((nb, s))
    return sorted(out)


def _doc_refs(pattern: re.Pattern) -> list[str]:
    refs = set()
    for md in sorted(DOCS.glob("*.md")):
        refs |= {s for s in SPAN_RE.findall(md.read_text(encoding="utf-8")) if pattern.match(s)}
    return sorted(refs)


def _all_refs(key: str, pattern: re.Pattern) -> list[str]:
    return sorted(set(_row_refs(key, pattern)) | set(_doc_refs(pattern)))


def _resolve(ref: str):
    module, name = FUNC_RE.match(ref).groups()
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    return {n.name for n in ast.walk(tree) if isinstance(n, funcs)}


def test_paper_map_has_a_table_with_the_four_columns():
    rows = _rows()
    assert rows, "docs/paper_map.md: no table rows found"
    for key in ("paper", "function", "test", "notebook"):
        assert all(key in r for r in rows), f"docs/paper_map.md: a table lacks the {key!r} column"


def test_paper_map_covers_every_equation_and_both_algorithms():
    covered = set().union(*(_items(r["paper"]) for r in _rows()))
    missing = [item for item in REQUIRED if item not in covered]
    assert not missing, f"docs/paper_map.md has no row for {missing}"


def test_paper_map_every_row_names_a_function_a_test_and_a_notebook_section():
    for r in _rows():
        spans = {k: SPAN_RE.findall(r[k]) for k in ("function", "test", "notebook")}
        assert any(FUNC_RE.match(s) for s in spans["function"]), f"no function in row {r['paper']}"
        assert any(TEST_RE.match(s) for s in spans["test"]), f"no test in row {r['paper']}"
        assert any(NB_RE.match(s) for s in spans["notebook"]), f"no notebook in row {r['paper']}"
        assert any(s.startswith("#") for s in spans["notebook"]), f"no heading in row {r['paper']}"


@pytest.mark.parametrize("ref", _all_refs("function", FUNC_RE))
def test_named_function_exists(ref):
    try:
        _resolve(ref)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{ref} named in docs does not exist: {e}")


@pytest.mark.parametrize("ref", _all_refs("test", TEST_RE))
def test_named_test_exists(ref):
    path, name = TEST_RE.match(ref).groups()
    assert (ROOT / path).is_file(), f"{ref}: no file {path}"
    assert name in _test_names(ROOT / path), f"{ref}: no function {name} in {path}"


@pytest.mark.parametrize("nb, heading", _notebook_refs())
def test_named_notebook_section_exists(nb, heading):
    nbformat = pytest.importorskip("nbformat")
    path = ROOT / nb
    assert path.is_file(), f"docs/paper_map.md names {nb}, which does not exist"
    cells = nbformat.read(path, as_version=4).cells
    lines = {ln.strip() for c in cells if c.cell_type == "markdown" for ln in c.source.splitlines()}
    assert heading in lines, f"{nb} has no markdown line {heading!r}"


@pytest.mark.parametrize("md", MD_FILES, ids=[p.name for p in MD_FILES])
def test_relative_links_point_to_existing_files(md):
    if not md.is_file():
        pytest.skip(f"{md.name} does not exist")
    text = _strip_code(md.read_text(encoding="utf-8"))
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto:, or an anchor in the same page
        if not (md.parent / target.split("#")[0]).exists():
            bad.append(target)
    assert not bad, f"{md.relative_to(ROOT)}: broken relative links {bad}"


def _api_blocks() -> list[str]:
    if not API.is_file():
        return []
    return re.findall(r"^```python\n(.*?)^```", API.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_api_examples_run(tmp_path, monkeypatch):
    blocks = _api_blocks()
    if not blocks:
        pytest.skip("docs/api.md has no python examples yet")
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__api_md__"}
    for i, src in enumerate(blocks, 1):
        try:
            exec(compile(src, f"docs/api.md, python block {i}", "exec"), namespace)
        except Exception as e:  # report which block failed, with its first line
            first = src.strip().splitlines()[0]
            raise AssertionError(f"docs/api.md python block {i} ({first!r}) failed: {e!r}") from e
