#!/usr/bin/env bash
# Build the course site into docs/_build/html with warnings as errors (what CI runs).
#   pip install -e ".[docs]" && bash docs/build_site.sh     # then open docs/_build/html/index.html
# The notebooks are shown with their committed outputs (never executed); nothing is downloaded.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
builddir="${BUILDDIR:-$here/_build}"
python -m sphinx -W --keep-going -q -b html -c "$here" "$here/.." "$builddir/html"
echo "site: $builddir/html/index.html"
