"""Open the built course site in headless Chromium and check that the pages are there and the
math rendered.

    python docs/check_site.py                  # build (docs/build_site.sh), then check
    python docs/check_site.py --no-build       # check docs/_build/html as it is
    python docs/check_site.py --shots DIR      # also write a PNG screenshot of each page to DIR

For each page below: the file exists; Chromium (``--dump-dom``, after MathJax has run) shows at
least ``min_math`` typeset formulas (``<mjx-container>`` elements) and no TeX left unrendered in
the text (``$$``, ``\\(``, ``\\[``, ``\\frac``... outside code); every ``<img>`` points at a file
that exists. The search page, opened with a query, must list results. Exit status 0 when all
pass, 1 otherwise. Needs Chromium (Debian: ``apt-get install chromium``); the browser runs with
networking off, so a page that needed the network to render would fail here.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

HERE = Path(__file__).resolve().parent

# (page, minimum number of typeset formulas, minimum number of images)
PAGES = [
    ("docs/index.html", 0, 0),
    ("docs/paper_map.html", 30, 0),
    ("docs/teaching.html", 20, 1),  # 1 image: the reverse-process GIF
    ("docs/derivations.html", 20, 0),
    ("notebooks/02_posterior.html", 10, 1),
    ("notebooks/07_sampling_2d.html", 5, 1),
]
SEARCH = ("search.html?q=posterior", "02_posterior")  # a query and a page it must find

# TeX that MathJax would have replaced: its presence in visible text means math did not render.
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\frac|\\bar|\\mathcal|\\epsilon|\\alpha")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--allow-file-access-from-files",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]  # no network


class _Text(HTMLParser):
    """Visible text outside code/script/style/typeset math, the number of typeset formulas and
    the images' sources."""

    SKIP = {"script", "style", "pre", "code", "mjx-container", "textarea", "noscript",
            "title"}  # <title> (the browser tab) cannot hold typeset math

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.text: list[str] = []
        self.n_math = 0
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "mjx-container":
            self.n_math += 1
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.text.append(data)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_site: no Chromium found (Debian: apt-get install chromium)")


def chromium(browser: str, url: str, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
               "--window-size=1280,1400", *args, url]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise RuntimeError(f"chromium exited {run.returncode}: {run.stderr.strip()[-300:]}")
    return run.stdout


def check_page(browser, site: Path, page: str, min_math: int, min_img: int, shots) -> list[str]:
    path = site / page
    if not path.exists():
        return [f"{page}: missing"]
    dom = _Text()
    dom.feed(chromium(browser, path.as_uri(), "--dump-dom"))
    text = " ".join(dom.text)
    problems = []
    if dom.n_math < min_math:
        problems.append(f"{page}: {dom.n_math} typeset formulas, expected at least {min_math}")
    raw = sorted(set(RAW_TEX.findall(text)))
    if raw:
        i = RAW_TEX.search(text).start()
        problems.append(f"{page}: unrendered TeX {raw}, e.g. ...{text[max(0, i - 40):i + 40]!r}")
    local = [s for s in dom.images if not urlparse(s).scheme or urlparse(s).scheme == "file"]
    if len(local) < min_img:
        problems.append(f"{page}: {len(local)} images, expected at least {min_img}")
    for src in local:
        target = (path.parent / unquote(urlparse(src).path)).resolve()
        if not src.startswith("data:") and not target.exists():
            problems.append(f"{page}: image {src} not found")
    if shots is not None:
        png = shots / (page.replace("/", "_").replace(".html", ".png"))
        chromium(browser, path.as_uri(), f"--screenshot={png}")
    print(f"{'ok  ' if not problems else 'FAIL'} {page}: {dom.n_math} formulas, "
          f"{len(local)} images")
    return problems


def check_search(browser, site: Path) -> list[str]:
    query, expect = SEARCH
    url = (site / "search.html").as_uri() + query[len("search.html"):]
    dom = chromium(browser, url, "--dump-dom")
    ok = expect in dom and "search-summary" in dom
    print(f"{'ok  ' if ok else 'FAIL'} {query}: {'finds' if ok else 'does not find'} {expect}")
    return [] if ok else [f"{query}: the search page did not list {expect}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default=str(HERE / "_build" / "html"))
    ap.add_argument("--no-build", action="store_true", help="check the site as it is")
    ap.add_argument("--shots", default=None, help="folder for PNG screenshots of the pages")
    args = ap.parse_args(argv)
    site = Path(args.build_dir).resolve()
    if not args.no_build:
        subprocess.run(["bash", str(HERE / "build_site.sh")], check=True,
                       env={**os.environ, "BUILDDIR": str(site.parent)})
    shots = None
    if args.shots:
        shots = Path(args.shots)
        shots.mkdir(parents=True, exist_ok=True)
    browser = find_chromium()
    problems = []
    for page, min_math, min_img in PAGES:
        problems += check_page(browser, site, page, min_math, min_img, shots)
    problems += check_search(browser, site)
    for p in problems:
        print("  " + p)
    print(f"{len(PAGES) + 1 - len({p.split(':')[0] for p in problems})} passed, "
          f"{len({p.split(':')[0] for p in problems})} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
