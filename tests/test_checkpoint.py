"""Tests for ddpm_ref.checkpoint: round trip, refusals with clear messages, atomic writes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np
import pytest

import ddpm_ref.checkpoint as ckpt_mod
from ddpm_ref.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from ddpm_ref.nn.mlp import MLP
from ddpm_ref.optim import adam_init
from ddpm_ref.schedule import make_schedule


def _setup(hidden=8):
    net = MLP(x_dim=2, hidden=hidden, depth=1, t_dim=4, fourier_freqs=0)
    rng = np.random.default_rng(0)
    params = net.init(rng)
    params = {k: v + rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
    ema = {k: 0.5 * v for k, v in params.items()}
    opt = adam_init(params)
    opt = {k: v + 1 if k != "step" else np.array(7, dtype=np.int64) for k, v in opt.items()}
    return net, make_schedule("linear", 50), params, ema, opt, rng


def _save(path, **kw):
    net, sched, params, ema, opt, rng = _setup()
    save_checkpoint(path, net, sched, params, ema=ema, opt_state=opt, step=7,
                    train_config={"lr": 1e-3, "steps": 10}, rng=rng, dataset="gmm",
                    schedule_info={"kind": "linear", "params": {}}, **kw)
    return net, sched, params, ema, opt, rng


def _rewrite(src, dst, **changes):
    """Copy a checkpoint archive with some entries replaced (None deletes one)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        k = k.replace("__", "/")
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(dst, **arrays)


def test_round_trip_restores_every_part(tmp_path):
    path = tmp_path / "c.npz"
    net, sched, params, ema, opt, rng = _save(path)
    ck = load_checkpoint(path)
    assert type(ck.net) is MLP and ck.net.config == net.config
    for a, b in ((ck.params, params), (ck.ema, ema), (ck.opt_state, opt)):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
    assert ck.step == 7 and ck.dataset == "gmm" and ck.image_size == 0
    assert ck.train_config == {"lr": 1e-3, "steps": 10}
    assert ck.schedule_info == {"T": 50, "kind": "linear", "params": {}}
    np.testing.assert_array_equal(ck.sched.beta, sched.beta)  # NaN at t = 0 compares equal
    np.testing.assert_array_equal(ck.sched.timesteps, sched.timesteps)
    # the restored Generator continues the original's stream
    assert np.array_equal(ck.rng.standard_normal(5), rng.standard_normal(5))


def test_suffix_added_and_no_temporary_left(tmp_path):
    _save(tmp_path / "run")
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    assert load_checkpoint(tmp_path / "run").step == 7  # found with or without the suffix


def test_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a ddpm_ref checkpoint"):
        load_checkpoint(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_checkpoint(tmp_path / "text.npz")


def test_refuses_another_format_version(tmp_path):
    _save(tmp_path / "c.npz")
    _rewrite(tmp_path / "c.npz", tmp_path / "v99.npz", format_version=np.array(99))
    with pytest.raises(ValueError, match=f"format version 99.*reads version {FORMAT_VERSION}"):
        load_checkpoint(tmp_path / "v99.npz")


def test_refuses_a_truncated_file(tmp_path):
    _save(tmp_path / "c.npz")
    raw = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.npz")


def test_refuses_a_corrupted_member(tmp_path):
    _save(tmp_path / "c.npz")
    raw = bytearray((tmp_path / "c.npz").read_bytes())
    i = raw.find(b"params/hidden.0.w.npy")  # the member's local header; its data follows
    raw[i + 200] ^= 0xFF  # flip one byte inside the weight data: the zip CRC catches it
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "bad.npz")


def test_refuses_params_of_another_architecture(tmp_path):
    _save(tmp_path / "c.npz")
    cfg = json.dumps(asdict(MLP(x_dim=2, hidden=16, depth=1, t_dim=4, fourier_freqs=0).config))
    _rewrite(tmp_path / "c.npz", tmp_path / "arch.npz", net_config=np.array(cfg))
    with pytest.raises(ValueError, match="params do not match the MLP in its config"):
        load_checkpoint(tmp_path / "arch.npz")
    _rewrite(tmp_path / "c.npz", tmp_path / "unk.npz", arch=np.array("Transformer"))
    with pytest.raises(ValueError, match="unknown architecture 'Transformer'"):
        load_checkpoint(tmp_path / "unk.npz")


def test_refuses_a_missing_entry(tmp_path):
    _save(tmp_path / "c.npz")
    _rewrite(tmp_path / "c.npz", tmp_path / "m.npz", schedule__beta=None)
    with pytest.raises(ValueError, match="lacks the entry 'schedule/beta'"):
        load_checkpoint(tmp_path / "m.npz")


def test_missing_file_and_unknown_shipped_name(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match=r"neither a file nor a shipped checkpoint \w+ \(shipped:"):
        load_checkpoint("no_such_shipped_name")


def test_failed_save_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    _save(path)
    before = path.read_bytes()

    def savez_then_crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")  # something is written, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.np, "savez", savez_then_crash)
    with pytest.raises(OSError, match="disk full"):
        _save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]  # the temporary file was removed


def test_refuses_to_save_non_finite_params(tmp_path):
    net, sched, params, *_ = _setup()
    bad = dict(params)
    bad["out.b"] = np.full_like(params["out.b"], np.nan)
    with pytest.raises(ValueError, match=r"params\['out.b'\]: expected finite values"):
        save_checkpoint(tmp_path / "c.npz", net, sched, bad)
    assert not (tmp_path / "c.npz").exists()


def test_save_checks_params_against_the_net(tmp_path):
    net, sched, params, *_ = _setup()
    other = MLP(x_dim=2, hidden=16, depth=1, t_dim=4, fourier_freqs=0)
    with pytest.raises(ValueError, match="params"):
        save_checkpoint(tmp_path / "c.npz", other, sched, params)


def test_saved_file_has_ordinary_permissions(tmp_path):
    _save(tmp_path / "c.npz")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "c.npz").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


@pytest.mark.parametrize("entry, value, words", [
    ("params", "nan", "params hold NaN or inf"),
    ("ema", "inf", "ema hold NaN or inf"),
    ("net_config", np.array("null"), "net_config: expected a JSON object, got NoneType"),
    ("net_config", np.array("[1, 2]"), "net_config: expected a JSON object, got list"),
    ("train_config", np.array("null"), "train_config: expected a JSON object"),
    ("format_version", np.array([1, 1]), "format_version: expected the integer 1, got [1, 1]"),
    ("format_version", np.array("one"), "format_version: expected the integer 1, got 'one'"),
    ("dataset", np.array("mnist"), "trained on 'mnist'"),
    ("image_size", np.array(28), "image_size 28 does not fit its MLP"),
])
def test_refuses_at_load_what_would_fail_later(tmp_path, entry, value, words):
    net, *_ = _save(tmp_path / "c.npz")
    if isinstance(value, str):  # poison one weight of the last array of params/ or ema/
        with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
            name = [k for k in z.files if k.startswith(entry + "/")][-1]
            a = z[name].copy()
        a.flat[0] = np.nan if value == "nan" else np.inf
        entry, value = name.replace("/", "__"), a
    _rewrite(tmp_path / "c.npz", tmp_path / "bad.npz", **{entry: value})
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path / "bad.npz")
    msg = str(e.value)
    assert msg.startswith("checkpoint: ") and str(tmp_path / "bad.npz") in msg, msg
    assert words in msg and "\n" not in msg, msg


def test_a_folder_and_random_bytes_are_named_as_such(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path / "run")
    (tmp_path / "noise.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a readable .npz") as e:
        load_checkpoint(tmp_path / "noise.npz")
    assert "allow_pickle" not in str(e.value)  # numpy's hint is no advice for a checkpoint


def test_repr_is_one_informative_line(tmp_path):
    net, *_ = _save(tmp_path / "c.npz")
    text = repr(load_checkpoint(tmp_path / "c.npz"))
    n = sum(v.size for v in net.init(np.random.default_rng(0)).values())
    assert "\n" not in text and len(text) < 400
    for words in ("MLP", f"{n:,} parameters", "gmm", "T = 50 linear schedule",
                  "7 training steps", "mean_type 'eps'", "variance 'fixedlarge'"):
        assert words in text, text
    shipped = repr(load_checkpoint("mnist"))
    assert "UNet, 789,217 parameters" in shipped and "5,500 training steps" in shipped


def test_model_options_read_the_train_config(tmp_path):
    _save(tmp_path / "c.npz")
    ck = load_checkpoint(tmp_path / "c.npz")
    assert ck.model_options() == {"mean_type": "eps", "variance": "fixedlarge"}  # the paper's
    ck.train_config = {"mean_type": "x0", "variance": "fixedsmall"}
    assert ck.model_options() == {"mean_type": "x0", "variance": "fixedsmall"}
