"""Sphinx configuration of the course site (docs/ and notebooks/ as one book).

Build: ``make -C docs html`` (or ``bash docs/build_site.sh``); open ``docs/_build/html/index.html``.
The source folder is the repository root, so the links docs/*.md make to ``../notebooks/*.ipynb``
work on the site as they do on GitHub; ``include_patterns`` picks what is part of the site.
Notebooks are shown with their committed outputs and never executed (``nb_execution_mode``).
Nothing is downloaded: MathJax 3 comes from the ``sphinx-mathjax-offline`` package and is copied
into ``_static/mathjax``; the theme ships its own fonts and scripts.
"""

from __future__ import annotations

import datetime
import os

project = "ddpm_ref"
author = "the ddpm_ref authors"
copyright = f"{datetime.date.today().year}, {author}"  # noqa: A001 (Sphinx's name)

extensions = [
    "myst_nb",  # Markdown (MyST) and .ipynb sources
    "sphinx-mathjax-offline",  # a local MathJax 3 (the default one is fetched from a CDN)
]

root_doc = "docs/index"
# Sphinx reads only these (the source folder is the repository root); every numbered
# notebook is picked up by the glob, here and in docs/index.md's table of contents.
include_patterns = [
    "docs/*.md",
    "notebooks/[0-9][0-9]_*.ipynb",
    "notebooks/README.md",
    "notebooks/assignments/README.md",
    "benchmarks/README.md",
]
exclude_patterns = [".venv", "**/.ipynb_checkpoints", "docs/_build", "build", "dist", "runs"]

# MyST: $...$ and $$...$$ math as GitHub renders it, heading anchors for #links.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_double_inline = True  # $$...$$ inside a paragraph (the docs use it that way)
myst_heading_anchors = 3
nb_execution_mode = "off"  # show the committed outputs; the site build never runs a notebook
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_title = "ddpm_ref: DDPM in NumPy, a course"
html_static_path = []
html_extra_path = ["_static/root"]  # index.html at the top that forwards to docs/index.html
html_theme_options = {
    "repository_url": os.environ.get("DDPM_REF_REPO_URL", ""),
    "use_repository_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
html_copy_source = False
mathjax3_config = {"tex": {"tags": "ams"}}

# docs/index.md lists docs/notebook_times.md (generated; it may not exist yet in a branch):
# _optional_pages drops such an entry while its file is missing. Any other link to a missing
# page or file stays a warning, which -W makes an error.
OPTIONAL_PAGES = ["notebook_times"]


def _optional_pages(app, docname, source):
    from pathlib import Path

    if docname != "docs/index":
        return
    for page in OPTIONAL_PAGES:
        if not (Path(app.srcdir) / "docs" / f"{page}.md").exists():
            source[0] = "\n".join(
                line for line in source[0].split("\n") if line.strip() != page
            )


def _folder_links_as_paths(app):
    """A Markdown link to a folder (``[solutions](../notebooks/solutions/)``) works on GitHub but
    is no page of the site: show it as the folder's path in the repository instead of warning."""
    from pathlib import Path

    from docutils import nodes
    from sphinx import addnodes
    from sphinx.transforms.post_transforms import SphinxPostTransform

    class FolderLinks(SphinxPostTransform):
        default_priority = 8  # before MyST resolves (and warns about) its links, at 9

        def run(self, **kwargs):
            root = Path(self.env.srcdir)
            for node in list(self.document.findall(addnodes.pending_xref)):
                target = node.get("reftarget", "")
                if node.get("reftype") != "myst" or not target.endswith("/"):
                    continue
                folder = (root / self.env.docname).parent / target
                if folder.is_dir():
                    rel = folder.resolve().relative_to(root.resolve()).as_posix() + "/"
                    node.replace_self(nodes.literal(rel, rel))

    app.add_post_transform(FolderLinks)


def setup(app):
    app.connect("source-read", _optional_pages)
    _folder_links_as_paths(app)
