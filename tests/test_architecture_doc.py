"""docs/architecture.md lists every module of ddpm_ref (one line each in its Modules table)."""

from pathlib import Path

import ddpm_ref

PKG = Path(ddpm_ref.__file__).parent
DOC = PKG.parent / "docs" / "architecture.md"
EXEMPT = {"__init__.py", "__main__.py"}  # package markers and re-exports


def _modules():
    return sorted(p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")
                  if p.name not in EXEMPT and "__pycache__" not in p.parts)


def _documented():
    """The backticked first cell of each row of the Modules table."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {cell.strip().strip("`") for row in rows for cell in row.split("|")[1].split(",")}


def test_every_module_is_in_architecture_md():
    modules = _modules()
    assert "elbo.py" in modules and "nn/layers.py" in modules  # the scan sees the package
    missing = [m for m in modules if m not in _documented()]
    assert not missing, (
        "docs/architecture.md's Modules table does not list: "
        + ", ".join(f"ddpm_ref/{m}" for m in missing)
        + " (add one row each: | `path` | what it owns |)")


def test_architecture_md_lists_no_missing_module():
    listed = {m for m in _documented() if m.endswith(".py") and Path(m).name not in EXEMPT}
    gone = sorted(listed - set(_modules()))
    assert not gone, f"docs/architecture.md lists modules that do not exist: {gone}"
