"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

An exception mid-write leaves any existing file at ``path`` untouched and no temporary file
behind; readers never see a half-written file. Ctrl-C (SIGINT) is held back while a file is
written and raised as KeyboardInterrupt once the file is complete (or cleaned up), so that it never
tears a write or its cleanup. A process killed outright (SIGKILL, power cut) can still leave its
``.NAME.XXXX.tmp`` behind: :func:`remove_stale_temporaries` deletes those on the next run.
A full disk is reported as ``OSError(ENOSPC)`` naming the file (numpy's own message for it is
"N requested and M written").
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "save_npy", "write_json", "deferred_sigint",
           "remove_stale_temporaries"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def deferred_sigint():
    """Hold back SIGINT inside the block; raise KeyboardInterrupt at its end if one came.

    Only in the main thread with Python's default SIGINT handler installed (elsewhere signals
    cannot be caught, or someone else handles them): there the block runs as is.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    got = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if got:
        raise KeyboardInterrupt


def _no_space(path) -> bool:
    try:
        return shutil.disk_usage(Path(path).parent).free < 16 * 2**20  # < 16 MB left
    except OSError:
        return False


def atomic_write(path, write, binary=True) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then move it onto ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 minus the umask),
    not mkstemp's private 0600. SIGINT is deferred until the write is complete (or undone).
    Raises OSError(ENOSPC, ..., path) when the disk is full.
    """
    path = Path(path)
    with deferred_sigint():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb" if binary else "w") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(e, OSError) and (e.errno == errno.ENOSPC or
                                           (e.errno is None and _no_space(path))):
                raise OSError(errno.ENOSPC, "no space left on device", str(path)) from None
            raise
    return path


def remove_stale_temporaries(folder, names=None, min_age_s: float = 0.0) -> list[Path]:
    """Delete the ``.NAME.XXXXXXXX.tmp`` files that :func:`atomic_write` left in ``folder``.

    Only a killed process leaves one. ``names``: only those of these file names (default: any).
    ``min_age_s``: keep those modified more recently (a write of another process may be in
    flight); 0 when the caller holds the folder's lock. Returns the paths removed.
    """
    removed = []
    now = time.time()
    pattern = re.compile(r"^\.(.+)\.[A-Za-z0-9_]{8}\.tmp$")  # mkstemp's 8 random characters
    for p in Path(folder).glob(".*.tmp"):
        m = pattern.match(p.name)
        if m is None or (names is not None and m.group(1) not in names):
            continue
        try:
            if p.is_file() and now - p.stat().st_mtime >= min_age_s:
                p.unlink()
                removed.append(p)
        except OSError:  # gone already, or not ours to remove
            pass
    return removed


def save_npy(path, array) -> Path:
    """np.save through a temporary file in the same folder (never a half-written file)."""
    return atomic_write(path, lambda f: np.save(f, array))


def write_json(path, obj) -> Path:
    """JSON through a temporary file in the same folder."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2) + "\n"), binary=False)
