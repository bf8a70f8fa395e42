"""Tests for ddpm_ref._io: atomic writes that Ctrl-C cannot tear, stale temporaries, full disks."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from ddpm_ref import _io
from ddpm_ref._io import atomic_write, deferred_sigint, remove_stale_temporaries, save_npy


def test_sigint_inside_a_write_waits_until_the_file_is_complete(tmp_path):
    path = tmp_path / "a.npy"
    save_npy(path, np.zeros(3))
    done = []

    def write(f):
        np.save(f, np.arange(5.0))
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the write
        f.write(b"")  # the write goes on
        done.append(True)

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, write)
    assert done == [True]
    np.testing.assert_array_equal(np.load(path), np.arange(5.0))  # the new file, whole
    assert list(tmp_path.glob(".*.tmp")) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_deferred_sigint_without_a_signal_is_transparent():
    with deferred_sigint():
        x = 1
    assert x == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigkill_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    code = ("import os, signal, sys; from ddpm_ref._io import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write(b'x' * 1000), f.flush(), "
            "os.kill(os.getpid(), signal.SIGKILL)))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "checkpoint.npz")])
    assert r.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".checkpoint.npz.*.tmp"))
    assert len(left) == 1 and not (tmp_path / "checkpoint.npz").exists()
    (tmp_path / ".notes.tmp").write_text("not ours")  # not atomic_write's name pattern
    assert remove_stale_temporaries(tmp_path, names={"other.npy"}) == []  # another file's
    assert remove_stale_temporaries(tmp_path, min_age_s=3600) == []  # too recent to be sure
    assert remove_stale_temporaries(tmp_path) == left
    assert (tmp_path / ".notes.tmp").exists()


@pytest.mark.parametrize("err", [OSError(errno.ENOSPC, "No space left on device"),
                                 OSError("10000 requested and 1008 written")])
def test_a_full_disk_is_named_and_the_old_file_survives(tmp_path, monkeypatch, err):
    path = tmp_path / "a.npy"
    save_npy(path, np.zeros(3))
    monkeypatch.setattr(_io, "_no_space", lambda p: True)  # numpy's message: check free space

    def write(f):
        raise err

    with pytest.raises(OSError) as e:
        atomic_write(path, write)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    np.testing.assert_array_equal(np.load(path), np.zeros(3))
    assert list(tmp_path.glob(".*.tmp")) == []
