r"""Figures for the demos and notebooks (matplotlib is imported lazily, inside each function).

Paper: Ho, Jain, Abbeel (2020): the forward process (Eq. 4), the reverse trajectory of Algorithm 2
(Fig. 6 shows progressive generation), the per-t terms L_{t-1} of the bound (Eq. 5) next to the
eps-MSE of L_simple (Eq. 14), sample grids (Fig. 1), and the reverse process as an animated GIF
(:func:`animate_reverse_2d`, :func:`animate_reverse_digits`, through matplotlib's PillowWriter).

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot, so no global state and no
GUI backend is needed: safe under Agg, in threads and in CI), saves it when ``path`` is given
(atomically: temporary file, then ``os.replace``), and returns it so a notebook can show it.
Labels are mathtext (r"$\bar\alpha_t$"), and every axis with a scale is labelled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddpm_ref._io import _umask, atomic_write

__all__ = ["save_figure", "plot_samples", "plot_forward_process", "plot_trajectory",
           "plot_per_t", "plot_training_curve", "plot_image_grid", "animate_reverse_2d",
           "animate_reverse_digits"]


def _figure(ncols=1, nrows=1, width=4.0, height=4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig, path, dpi=100) -> Path:
    """Write ``fig`` as PNG to ``path`` via a temporary file in the same folder."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def _done(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def _scatter(ax, x, title, lim, color="C0"):
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color=color, linewidths=0)
    ax.set_title(title)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$x^{(1)}$")
    ax.set_ylabel(r"$x^{(2)}$")


def _lim(*xs):
    return float(max(np.percentile(np.abs(x), 99.5) for x in xs)) * 1.15 + 1e-9


def plot_samples(data, samples, path=None, title="samples (Algorithm 2)"):
    """Data (left) next to model samples (right), same axes; data/samples (N, 2)."""
    fig, ax = _figure(2)
    lim = _lim(data, samples)
    _scatter(ax[0, 0], data, f"data ($n = {len(data)}$)", lim)
    _scatter(ax[0, 1], samples, f"{title} ($n = {len(samples)}$)", lim, color="C1")
    return _done(fig, path)


def plot_forward_process(sched, x0, ts, rng, path=None):
    """x_t ~ q(x_t | x_0) (Eq. 4) at the steps ``ts`` for points x0 (N, 2)."""
    from ddpm_ref.diffusion import q_sample

    ts = list(ts)
    fig, ax = _figure(len(ts), width=3.0, height=3.0)
    for i, t in enumerate(ts):
        if t == 0:
            xt = np.asarray(x0, dtype=np.float64)
        else:
            tt = np.full(len(x0), t, dtype=np.int64)
            xt = q_sample(sched, x0, tt, rng.standard_normal(x0.shape))
        _scatter(ax[0, i], xt, rf"$t = {t}$, $\bar\alpha_t = {sched.alpha_bar[t]:.3g}$", 3.5)
    fig.suptitle(r"forward process $q(x_t \mid x_0)$, Eq. (4)")
    return _done(fig, path)


def plot_trajectory(trace, ts, path=None, panels=None, n_paths=8):
    """The reverse process of Algorithm 2 from a trace of x_t.

    Args:
        trace: (K, N, 2), x_t at the steps ``ts`` (K,), in sampling order (T first, 0 last),
            e.g. ``sample(..., trace_steps=...)[1]["xt"]`` with its ``"t"``.
        panels: the steps shown as scatter plots (default: 4 of ``ts`` and the last).
        n_paths: number of points whose whole path through every traced step is drawn.
    """
    trace = np.asarray(trace)
    ts = [int(t) for t in ts]
    if panels is None:
        panels = [ts[int(round(i))] for i in np.linspace(0, len(ts) - 1, 5)]
    fig, ax = _figure(len(panels) + 1, width=3.0, height=3.0)
    for i, t in enumerate(panels):
        _scatter(ax[0, i], trace[ts.index(t)], rf"$x_{{{t}}}$", 3.5, color="C1")
    a = ax[0, -1]
    for j in range(min(n_paths, trace.shape[1])):
        a.plot(trace[:, j, 0], trace[:, j, 1], lw=0.7, alpha=0.8)
        a.plot(trace[-1, j, 0], trace[-1, j, 1], "k.", ms=6)  # where the path ends: x_0
    a.set_title(rf"{min(n_paths, trace.shape[1])} paths, $t = {ts[0]}$ to ${ts[-1]}$")
    a.set_xlim(-3.5, 3.5)
    a.set_ylim(-3.5, 3.5)
    a.set_aspect("equal")
    a.set_xlabel(r"$x^{(1)}$")
    a.set_ylabel(r"$x^{(2)}$")
    fig.suptitle("reverse process, Algorithm 2")
    return _done(fig, path)


def plot_per_t(per_t_L, per_t_eps_mse, path=None, oracle_L=None, oracle_eps_mse=None):
    """Per-t terms of the bound, L_{t-1} (Eq. 5; index t, t = 1 is L_0), next to the per-t
    eps-MSE of L_simple (Eq. 14); arrays (T+1,) with index 0 unused.

    With the oracle's curves (same points, same x_t draws), a third panel shows where the
    model's bound loses to the oracle's: the excess sum_{s <= t} (L_{s-1} - L*_{s-1}).
    """
    per_t_L, per_t_eps_mse = np.asarray(per_t_L), np.asarray(per_t_eps_mse)
    fig, ax = _figure(2 if oracle_L is None else 3, width=4.5, height=3.6)
    t = np.arange(1, len(per_t_L))
    a = ax[0, 0]
    a.plot(t, np.abs(per_t_L[1:]), lw=1, label="model")
    if oracle_L is not None:
        a.plot(t, np.abs(np.asarray(oracle_L)[1:]), lw=1, ls="--", label=r"oracle $\epsilon^*$")
    a.set_ylabel(r"$|L_{t-1}|$ (nats/point; $t = 1$: $|L_0|$)")
    a.set_title("bound terms, Eq. (5)")
    a = ax[0, 1]
    a.plot(t, per_t_eps_mse[1:], lw=1, label="model")
    if oracle_eps_mse is not None:
        a.plot(t, np.asarray(oracle_eps_mse)[1:], lw=1, ls="--", label=r"oracle $\epsilon^*$")
    a.set_ylabel(r"$\Vert\epsilon - \epsilon_\theta\Vert^2 / D$")
    a.set_title(r"$\epsilon$-MSE, Eq. (14)")
    for a in ax[0, :2]:
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel(r"$t$")
        a.legend()
    if oracle_L is not None:
        a = ax[0, 2]
        a.plot(t, np.cumsum(per_t_L[1:] - np.asarray(oracle_L)[1:]), lw=1.2, color="C3")
        a.axhline(0.0, color="k", lw=0.5)
        a.set_xscale("log")
        a.set_xlabel(r"$t$")
        a.set_ylabel("nats/point")
        a.set_title(r"model $-$ oracle, summed over $s \leq t$")
    return _done(fig, path)


def plot_training_curve(history, path=None):
    """Loss and the eps-MSE per quarter of t (q1 = smallest t) against the step."""
    fig, ax = _figure(2, width=5.0, height=3.8)
    step = np.array([r["step"] for r in history])
    ax[0, 0].plot(step, [r["loss"] for r in history], lw=1)
    ax[0, 0].set_title("training loss (window mean)")
    ax[0, 0].set_ylabel("loss")
    ax[0, 1].plot(step, [r["l_simple"] for r in history], lw=1.5, color="k", label="all t")
    for q in range(1, 5):
        y = [r[f"l_simple_q{q}"] for r in history]
        ax[0, 1].plot(step, y, lw=1, label=rf"$t$ in quarter {q} of $1..T$")
    ax[0, 1].set_title(r"$\epsilon$-MSE per quarter of $t$")
    ax[0, 1].set_ylabel(r"$\Vert\epsilon - \epsilon_\theta\Vert^2 / D$")
    ax[0, 1].legend(fontsize=8)
    for a in ax[0]:
        a.set_xlabel("step")
        a.set_yscale("log")
    return _done(fig, path)


def plot_image_grid(images, path=None, nrow=8, title=None):
    """A grid of grey-scale images, uint8 (N, H, W) with 0 = black (as from data.mnist)."""
    from ddpm_ref.data.mnist import image_grid

    grid = image_grid(images, nrow)  # (rows (H + 1) + 1, nrow (W + 1) + 1) uint8
    scale = 0.02  # inches per pixel
    fig, ax = _figure(1, width=grid.shape[1] * scale + 0.3, height=grid.shape[0] * scale + 0.5)
    ax[0, 0].imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax[0, 0].axis("off")
    if title:
        ax[0, 0].set_title(title)
    return _done(fig, path)


# ---------------------------------------------------------------------------------------------
# The reverse process as an animation (Algorithm 2, one frame per traced step)


def _check_gif_path(path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"path: expected a file name ending in .gif, got {str(path)!r}")
    if not path.parent.is_dir():
        raise ValueError(f"path: the folder {str(path.parent)!r} does not exist")
    return path


def _check_trace(trace, ts, ndim, what):
    trace = np.asarray(trace, dtype=np.float64)
    ts = [int(t) for t in np.asarray(ts).reshape(-1)]
    if trace.ndim != ndim or trace.shape[0] < 1 or (ndim == 3 and trace.shape[2] != 2):
        raise ValueError(f"trace: expected {what}, got shape {trace.shape}")
    if len(ts) != trace.shape[0]:
        raise ValueError(f"ts: expected {trace.shape[0]} steps (one per frame of trace), "
                         f"got {len(ts)}")
    return trace, ts


def _write_gif(fig, draw, n_frames, path, fps, dpi, hold) -> Path:
    """Grab ``draw(i)`` for i in 0..n_frames-1 (the last ``hold`` times more) into a GIF, written
    to a temporary name in the target folder and renamed onto ``path``."""
    import os
    import tempfile

    from matplotlib.animation import PillowWriter

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".gif")
    os.close(fd)
    try:
        writer = PillowWriter(fps=fps)
        writer.setup(fig, tmp, dpi)  # not writer.saving(): its finally would mask an error
        for i in [*range(n_frames), *[n_frames - 1] * hold]:
            draw(i)
            writer.grab_frame()
        writer.finish()
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def animate_reverse_2d(trace, ts, path, data=None, fps=12, dpi=80, hold=12, lim=3.5):
    r"""An animated GIF of the reverse process on 2-D data: x_t from t = T down to x_0.

    Paper: Algorithm 2 (ancestral sampling), one frame per traced step.

    Args:
        trace: (K, N, 2) float, x_t at the steps ``ts`` in sampling order (T first, 0 last), as
            from ``sample(..., trace_steps=ts)[1]["xt"]`` with ts = its ``"t"``.
        ts: (K,) the steps of the frames.
        path: the output file, ``*.gif``; its folder must exist.
        data: optional (M, 2) data points, drawn faintly in every frame for reference.
        fps, dpi, hold: frames per second, resolution (the GIF is 4 x 4 inches, so 320 x 320
            pixels at dpi 80), and how many extra frames hold the final x_0.
    Returns:
        the path written.
    """
    path = _check_gif_path(path)
    trace, ts = _check_trace(trace, ts, 3, "(K, N, 2): K steps of N points in 2-D")
    fig, ax = _figure(1, width=4.0, height=4.0)
    a = ax[0, 0]
    if data is not None:
        data = np.asarray(data, dtype=np.float64)
        a.scatter(data[:, 0], data[:, 1], s=2, color="0.8", linewidths=0, label="data")
    pts = a.scatter(trace[0, :, 0], trace[0, :, 1], s=3, alpha=0.5, color="C1", linewidths=0)
    a.set_xlim(-lim, lim)
    a.set_ylim(-lim, lim)
    a.set_aspect("equal")
    a.set_xlabel(r"$x_t^{(1)}$")
    a.set_ylabel(r"$x_t^{(2)}$")
    title = a.set_title("")

    def draw(i):
        pts.set_offsets(trace[i])
        title.set_text(rf"$x_t$, $t = {ts[i]}$ (Algorithm 2)" if ts[i] else r"$x_0$, the samples")

    return _write_gif(fig, draw, len(ts), path, fps, dpi, hold)


def animate_reverse_digits(trace, ts, path, nrow=8, fps=12, dpi=100, hold=12):
    r"""An animated GIF of the reverse process on digits: a grid of x_t from t = T to x_0.

    Paper: Algorithm 2 on images (Fig. 6 shows the same chain as still frames).

    Args:
        trace: (K, N, 1, H, W) or (K, N, H, W) float in model space (data in [-1, 1]), x_t at
            the steps ``ts`` in sampling order, as from ``sample(..., trace_steps=ts)[1]["xt"]``.
        ts: (K,) the steps of the frames. path: ``*.gif`` in an existing folder.
        nrow: images per row of the grid.
    Returns:
        the path written.
    """
    from ddpm_ref.data.mnist import image_grid

    path = _check_gif_path(path)
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim == 5 and trace.shape[2] == 1:
        trace = trace[:, :, 0]  # (K, N, H, W)
    trace, ts = _check_trace(trace, ts, 4, "(K, N, 1, H, W) or (K, N, H, W) images")
    # model space [-1, 1] -> grey levels 0..255 (x_t at large t leaves [-1, 1]: clipped to show)
    frames = np.clip(np.round((trace + 1.0) * 127.5), 0, 255).astype(np.uint8)
    grids = [image_grid(f, nrow) for f in frames]  # each (rows (H+1)+1, nrow (W+1)+1) uint8
    scale = 0.03  # inches per grid pixel
    fig, ax = _figure(1, width=grids[0].shape[1] * scale + 0.4,
                      height=grids[0].shape[0] * scale + 0.6)
    a = ax[0, 0]
    im = a.imshow(grids[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    a.set_xticks([])
    a.set_yticks([])
    a.set_xlabel(rf"{trace.shape[1]} chains of Algorithm 2")
    title = a.set_title("")

    def draw(i):
        im.set_data(grids[i])
        title.set_text(rf"$x_t$, $t = {ts[i]}$" if ts[i] else r"$x_0$")

    return _write_gif(fig, draw, len(ts), path, fps, dpi, hold)
