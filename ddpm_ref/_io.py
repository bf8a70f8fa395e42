"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A crash (or an exception) mid-write leaves any existing file at ``path`` untouched and no
temporary file behind; readers never see a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, binary=True) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then move it onto ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 minus the umask),
    not mkstemp's private 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_npy(path, array) -> Path:
    """np.save through a temporary file in the same folder (never a half-written file)."""
    return atomic_write(path, lambda f: np.save(f, array))


def write_json(path, obj) -> Path:
    """JSON through a temporary file in the same folder."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2) + "\n"), binary=False)
