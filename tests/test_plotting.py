"""The figures: mathtext labels (no raw pseudo-LaTeX), labelled axes, atomic writes, and the GIFs of
the reverse process (frames, size, duration; bad paths refused in one line)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from ddpm_ref import plotting
from ddpm_ref.schedule import make_schedule


def _frames(path):
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        return im.size, im.n_frames, durations


def _trace(K, N, shape, seed=0):
    # distinct frames (Pillow merges identical consecutive frames into one)
    return np.random.default_rng(seed).standard_normal((K, N, *shape))


def test_animate_reverse_2d_frames_size_and_duration(tmp_path):
    K, hold = 7, 3
    ts = np.linspace(50, 0, K).round().astype(int)
    path = plotting.animate_reverse_2d(_trace(K, 200, (2,)), ts, tmp_path / "rev.gif",
                                       data=_trace(1, 100, (2,), 1)[0], fps=10, dpi=50, hold=hold)
    size, n, durations = _frames(path)
    assert size == (4 * 50, 4 * 50)  # 4 x 4 inches at dpi 50
    # K + hold frames of equal duration; Pillow may merge identical consecutive ones (the held
    # copies of x_0), adding up their durations
    assert K <= n <= K + hold
    assert sum(durations) == (K + hold) * durations[0]
    assert [p.name for p in tmp_path.iterdir()] == ["rev.gif"]  # no temporary file left


def test_animate_reverse_digits_frames_and_size(tmp_path):
    K = 5
    trace = np.clip(_trace(K, 6, (1, 8, 8)), -1, 1)
    path = plotting.animate_reverse_digits(trace, [40, 30, 20, 10, 0], tmp_path / "d.gif",
                                           nrow=3, dpi=50, hold=0)
    size, n, _ = _frames(path)
    assert n == K
    grid_w, grid_h = 3 * 9 + 1, 2 * 9 + 1  # image_grid: 1-pixel borders around 8x8 images
    assert size == (round((grid_w * 0.03 + 0.4) * 50), round((grid_h * 0.03 + 0.6) * 50))


@pytest.mark.parametrize("name, message", [("rev.png", "ending in .gif"),
                                           ("nofolder/rev.gif", "does not exist")])
def test_gif_bad_path_is_refused_in_one_line(tmp_path, name, message):
    with pytest.raises(ValueError, match=message) as e:
        plotting.animate_reverse_2d(_trace(2, 5, (2,)), [1, 0], tmp_path / name)
    assert str(e.value).startswith("path: ") and "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())


def test_gif_bad_trace_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^trace: expected \(K, N, 2\)"):
        plotting.animate_reverse_2d(_trace(2, 5, (3,)), [1, 0], tmp_path / "a.gif")
    with pytest.raises(ValueError, match=r"^ts: expected 2 steps"):
        plotting.animate_reverse_2d(_trace(2, 5, (2,)), [2, 1, 0], tmp_path / "a.gif")


def test_gif_failure_leaves_existing_file(tmp_path, monkeypatch):
    path = tmp_path / "rev.gif"
    path.write_bytes(b"old")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("matplotlib.animation.PillowWriter.grab_frame", boom)
    with pytest.raises(RuntimeError):
        plotting.animate_reverse_2d(_trace(2, 5, (2,)), [1, 0], path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["rev.gif"]


def _texts(fig):
    out = []
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        leg = ax.get_legend()
        out += [t.get_text() for t in leg.get_texts()] if leg else []
    return out + [fig._suptitle.get_text() if fig._suptitle else ""]


def _assert_mathtext(fig):
    texts = _texts(fig)
    for raw in ("eps", "theta", "abar", "alpha_bar", "x_t", "^2", "||", "<="):
        bad = [t for t in texts if raw in t.replace("\\epsilon", "").replace("\\theta", "")
               .replace("$", " $ ") and not _inside_math(t, raw)]
        assert not bad, f"raw {raw!r} outside mathtext in {bad}"
    for ax in fig.axes:  # every axis with a scale is labelled
        if ax.axison and ax.get_xticks().size:
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()


def _inside_math(text, raw):
    parts = text.split("$")
    return all(raw not in p for p in parts[0::2])  # even parts are outside $...$


def test_per_t_and_training_labels_are_mathtext():
    T = 20
    rng = np.random.default_rng(0)
    L, mse = rng.uniform(0.1, 1, T + 1), rng.uniform(0.1, 1, T + 1)
    fig = plotting.plot_per_t(L, mse, oracle_L=L * 0.9, oracle_eps_mse=mse * 0.9)
    _assert_mathtext(fig)
    assert r"$\Vert\epsilon - \epsilon_\theta\Vert^2 / D$" in _texts(fig)
    hist = [{"step": s, "loss": 1.0 / s, "l_simple": 1.0 / s,
             **{f"l_simple_q{q}": q / s for q in range(1, 5)}} for s in range(1, 6)]
    _assert_mathtext(plotting.plot_training_curve(hist))


def test_forward_and_trajectory_labels_are_mathtext():
    sched = make_schedule("linear", 100)
    x0 = np.random.default_rng(0).standard_normal((50, 2))
    fig = plotting.plot_forward_process(sched, x0, [0, 50, 100], np.random.default_rng(1))
    _assert_mathtext(fig)
    assert any(r"\bar\alpha_t" in t for t in _texts(fig))
    fig = plotting.plot_trajectory(_trace(5, 20, (2,)), [100, 50, 20, 5, 0])
    _assert_mathtext(fig)
    _assert_mathtext(plotting.plot_samples(x0, x0))
