"""The course site builds with warnings as errors, offline, with every numbered notebook as a page
(skipped where Sphinx and MyST-NB are not installed: pip install -e ".[docs]").

The browser check (math typeset by MathJax in Chromium, screenshots) is docs/check_site.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("sphinx_book_theme")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "html"
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-c", str(ROOT / "docs"), str(ROOT), str(out)],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_every_numbered_notebook_and_doc_is_a_page(site):
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        page = site / "notebooks" / (nb.stem + ".html")
        assert page.exists(), page
        html = page.read_text()
        # committed outputs shown, not re-executed: the notebook's PNGs are on its page
        n_png = nb.read_text().count('"image/png"')
        assert html.count("<img") >= n_png, (nb.name, n_png)
    for md in sorted((ROOT / "docs").glob("*.md")):
        assert (site / "docs" / (md.stem + ".html")).exists(), md
    assert (site / "index.html").exists() and (site / "search.html").exists()


def test_math_is_left_for_the_local_mathjax(site):
    page = (site / "docs" / "paper_map.html").read_text()
    assert re.search(r'<script[^>]+src="\.\./_static/mathjax/tex-chtml\.js', page)
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert page.count('class="math notranslate nohighlight"') >= 30  # Eqs. (1)-(14) and more


def test_nothing_is_loaded_from_the_network(site):
    remote = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//[^"]+"')
    for page in site.rglob("*.html"):
        hits = remote.findall(page.read_text())
        assert not hits, (page, hits[:3])


def test_paper_map_links_resolve(site):
    page = site / "docs" / "paper_map.html"
    for href in re.findall(r'<a class="reference internal" href="([^"#]+)', page.read_text()):
        assert (page.parent / href).resolve().exists(), href
