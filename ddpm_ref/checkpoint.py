r"""Checkpoints: one ``.npz`` file per training state, loadable without pickle.

Paper: Ho, Jain, Abbeel (2020), Appendix B (the state Algorithm 1 carries: parameters, their EMA,
the Adam moments, the step) and §4 (the schedule beta_1..beta_T the model was trained for).

Layout of the archive (every entry a plain array; strings are 0-d unicode arrays):

    format, format_version      "ddpm_ref-checkpoint", 1
    arch, net_config            the network class name and its config dataclass as JSON
    train_config                the TrainConfig as JSON ("{}" if none)
    schedule                    JSON {"T", "kind", "params"} (kind/params informative only)
    schedule/beta, schedule/timesteps   the exact float64 betas (T+1,) and int64 step map
    step                        int64 0-d, number of updates made
    rng_state                   numpy Generator bit_generator.state as JSON ("null" if none)
    dataset, image_size         data set name and image side (0 for 2-D points)
    params/<key>, ema/<key>, opt/<key>   parameters, their EMA, optimiser state

The file is written to a temporary file in the target folder and moved into place with
``os.replace``: a crash mid-write leaves any existing checkpoint untouched.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddpm_ref._io import atomic_write
from ddpm_ref.schedule import Schedule

FORMAT = "ddpm_ref-checkpoint"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"

# Architecture name -> "module:Class"; resolved lazily so that importing this module is cheap.
_ARCHITECTURES = {"MLP": "ddpm_ref.nn.mlp:MLP", "UNet": "ddpm_ref.nn.unet:UNet"}

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "register_architecture",
           "shipped_checkpoints", "rng_from_state", "FORMAT_VERSION"]


def register_architecture(cls, name: str | None = None) -> None:
    """Make a network class loadable from checkpoints under ``name`` (default: its class name)."""
    _ARCHITECTURES[name or cls.__name__] = cls


def _resolve_architecture(name: str):
    if name not in _ARCHITECTURES:
        raise ValueError(
            f"checkpoint: unknown architecture {name!r}; known: {sorted(_ARCHITECTURES)}"
        )
    target = _ARCHITECTURES[name]
    if isinstance(target, str):
        module, cls_name = target.split(":")
        target = getattr(importlib.import_module(module), cls_name)
    return target


@dataclass(repr=False)
class Checkpoint:
    """Everything :func:`load_checkpoint` read back; ``net`` is rebuilt from its config.

    ``print(ckpt)`` gives one line (architecture, parameter count, data, T and schedule, steps
    trained, what is stored), not the weights.
    """

    net: object
    params: dict
    ema: dict
    opt_state: dict
    step: int
    sched: Schedule
    train_config: dict
    rng: np.random.Generator | None
    dataset: str = ""
    image_size: int = 0
    schedule_info: dict = field(default_factory=dict)
    path: str = ""

    def model_options(self) -> dict:
        """``{"mean_type": ..., "variance": ...}`` the model was trained for (its train config;
        "eps" and "fixedlarge", the paper's, when it says nothing): pass as ``**`` to sample,
        bound_report, ..."""
        tc = self.train_config or {}
        return {"mean_type": tc.get("mean_type", "eps"),
                "variance": tc.get("variance", "fixedlarge")}

    def __repr__(self) -> str:
        n = sum(int(np.size(a)) for a in self.params.values())
        kind = self.schedule_info.get("kind", "custom") if self.schedule_info else "custom"
        opts = self.model_options()
        stored = ", ".join(w for w, ok in (("EMA", bool(self.ema)), ("optimiser", bool(
            self.opt_state)), ("rng", self.rng is not None)) if ok) or "params only"
        data = self.dataset or "unknown data"
        shape = "x".join(map(str, getattr(self.net, "x_shape", ())))
        return (f"Checkpoint({type(self.net).__name__}, {n:,} parameters, {data} ({shape}), "
                f"T = {self.sched.T} {kind} schedule, {self.step:,} training steps, "
                f"mean_type {opts['mean_type']!r}, variance {opts['variance']!r}, "
                f"stores {stored}{', ' + repr(self.path) if self.path else ''})")

    def require_image_model(self, tool: str) -> None:
        """ValueError unless this is an image model (``tool``: who asks, for the message)."""
        if not self.image_size:
            raise ValueError(
                f"checkpoint: {self.path or 'this'} is a 2-D checkpoint ({self.dataset or 'points'}"
                f", {type(self.net).__name__}); {tool} needs an image model (e.g. the shipped "
                f"'mnist', or one trained with ddpm-ref train --dataset mnist)")


def _jsonable(obj):
    """A config (dataclass or dict) as plain JSON types; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.loads(json.dumps(obj if obj is not None else {}, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _str(s) -> np.ndarray:
    return np.array(str(s))  # 0-d unicode array: loads without pickle


def _check_finite(name: str, d: dict) -> None:
    for k, a in d.items():
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise ValueError(f"{name}[{k!r}]: expected finite values; refusing to save a bad state")


def save_checkpoint(path, net, sched, params, *, ema=None, opt_state=None, step=0,
                    train_config=None, rng=None, dataset="", image_size=0,
                    schedule_info=None) -> Path:
    """Write one checkpoint atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        path: target file (``.npz`` is appended if missing).
        net: the network (its class name and ``net.config`` are stored, not its code).
        sched: the :class:`Schedule` trained for (its exact betas are stored).
        params, ema, opt_state: flat dicts of arrays (ema defaults to params, opt_state to {}).
        step: number of updates made. train_config: dataclass or dict. rng: the training
            Generator (its state is stored so that training resumes bit for bit).
        dataset, image_size: data set name and image side (0 for points).
        schedule_info: optional {"kind": ..., "params": {...}} describing how sched was made.
    Returns:
        the Path written.
    Raises:
        ValueError: params that do not match ``net`` or contain NaN/inf.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    net.check_params(params)
    ema = params if ema is None else ema
    net.check_params(ema)
    opt_state = {} if opt_state is None else opt_state
    _check_finite("params", params)
    _check_finite("ema", ema)
    info = {"T": sched.T, **(schedule_info or {})}
    arrays = {
        "format": _str(FORMAT),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "arch": _str(type(net).__name__),
        "net_config": _str(json.dumps(_jsonable(net.config))),
        "train_config": _str(json.dumps(_jsonable(train_config))),
        "schedule": _str(json.dumps(_jsonable(info))),
        "schedule/beta": np.asarray(sched.beta, dtype=np.float64),
        "schedule/timesteps": np.asarray(sched.timesteps, dtype=np.int64),
        "step": np.array(int(step), dtype=np.int64),
        "rng_state": _str(json.dumps(None if rng is None else rng.bit_generator.state)),
        "dataset": _str(dataset),
        "image_size": np.array(int(image_size), dtype=np.int64),
    }
    for prefix, d in (("params/", params), ("ema/", ema), ("opt/", opt_state)):
        for k, a in d.items():
            arrays[prefix + k] = np.asarray(a)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def shipped_checkpoints() -> list[str]:
    """Names of the checkpoints in ddpm_ref/checkpoints/ (usable as ``load_checkpoint(name)``)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.npz")) if SHIPPED_DIR.is_dir() else []


def _resolve_path(path_or_name) -> Path:
    p = Path(path_or_name)
    if p.is_dir():
        hint = (f"; it holds {p / 'checkpoint.npz'}" if (p / "checkpoint.npz").is_file() else "")
        raise ValueError(f"checkpoint: {p} is a folder, not a checkpoint file{hint}")
    if p.is_file():
        return p
    if p.with_name(p.name + ".npz").is_file() and p.suffix != ".npz":
        return p.with_name(p.name + ".npz")
    name = str(path_or_name)
    if os.sep not in name and "/" not in name and not name.endswith(".npz"):
        shipped = SHIPPED_DIR / f"{name}.npz"
        if shipped.is_file():
            return shipped
        raise ValueError(
            f"checkpoint: {name!r} is neither a file nor a shipped checkpoint name "
            f"(shipped: {', '.join(shipped_checkpoints()) or 'none'})"
        )
    raise ValueError(f"checkpoint: file not found: {name}")


def rng_from_state(state: dict) -> np.random.Generator:
    """A numpy Generator restored from ``bit_generator.state`` (as saved in a checkpoint)."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    bit_gen_cls = getattr(np.random, str(name), None)
    if bit_gen_cls is None or not isinstance(bit_gen_cls, type):
        raise ValueError(f"rng_state: unknown bit generator {name!r}")
    bg = bit_gen_cls()
    bg.state = state
    return np.random.Generator(bg)


def _tuples(config: dict) -> dict:
    # JSON turned tuples into lists; config dataclasses declare tuples (hashable, immutable).
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def load_checkpoint(path_or_name) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``np.load(allow_pickle=False)``).

    ``path_or_name`` is a file path, or the bare name of a checkpoint shipped with the package
    (``load_checkpoint("mnist")`` reads ddpm_ref/checkpoints/mnist.npz).

    Raises:
        ValueError (message starts with "checkpoint:"): file missing, not a readable .npz
            (corrupt or truncated), not a ddpm_ref checkpoint, another format version, unknown
            architecture, or params that do not match the architecture in its config.
    """
    path = _resolve_path(path_or_name)
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # reads (and CRC-checks) every member
    except Exception as e:  # BadZipFile, EOFError, OSError, ValueError, zlib.error ...
        why = (f"{type(e).__name__}: {e}" if "pickle" not in str(e)  # numpy's allow_pickle hint
               else "not a zip archive of arrays")  # is no advice to follow for a checkpoint
        raise ValueError(
            f"checkpoint: {path} is not a readable .npz file (corrupt or truncated?): {why}"
        ) from None
    if "format" not in arrays or arrays["format"].shape != () or str(arrays["format"]) != FORMAT:
        raise ValueError(f"checkpoint: {path} is not a ddpm_ref checkpoint (no format={FORMAT!r})")
    v = arrays.get("format_version")
    if v is None or v.shape != () or not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"checkpoint: {path}: format_version: expected the integer "
                         f"{FORMAT_VERSION}, got {'nothing' if v is None else repr(v.tolist())}")
    version = int(v)
    if version != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint: {path} has format version {version}; this ddpm_ref reads version "
            f"{FORMAT_VERSION}"
        )
    try:
        arch = str(arrays["arch"])
        cls = _resolve_architecture(arch)
        net_config = _json_dict(path, "net_config", arrays["net_config"])
        try:
            net = cls(**_tuples(net_config))
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint: {path}: net_config does not build a {arch}: "
                             f"{' '.join(str(e).split())}") from None
        schedule_info = _json_dict(path, "schedule", arrays["schedule"])
        sched = Schedule(arrays["schedule/beta"], timesteps=arrays["schedule/timesteps"],
                         kind=schedule_info.get("kind"))  # the kind, for its repr
        rng_state = json.loads(str(arrays["rng_state"]))
        ckpt = Checkpoint(
            net=net,
            params={k[7:]: v for k, v in arrays.items() if k.startswith("params/")},
            ema={k[4:]: v for k, v in arrays.items() if k.startswith("ema/")},
            opt_state={k[4:]: v for k, v in arrays.items() if k.startswith("opt/")},
            step=int(arrays["step"]),
            sched=sched,
            train_config=_json_dict(path, "train_config", arrays["train_config"]),
            rng=None if rng_state is None else rng_from_state(rng_state),
            dataset=str(arrays["dataset"]),
            image_size=int(arrays["image_size"]),
            schedule_info=schedule_info,
            path=str(path),
        )
    except KeyError as e:
        raise ValueError(f"checkpoint: {path} lacks the entry {e.args[0]!r}") from None
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint: {path} has an unreadable config: {e}") from None
    for name, d in (("params", ckpt.params), ("ema", ckpt.ema)):
        try:
            net.check_params(d)
        except ValueError as e:
            raise ValueError(
                f"checkpoint: {path}: {name} do not match the {arch} in its config: {e}"
            ) from None
        bad = [k for k, a in d.items() if np.issubdtype(a.dtype, np.floating)
               and not np.all(np.isfinite(a))]
        if bad:
            raise ValueError(f"checkpoint: {path}: {name} hold NaN or inf values (in "
                             f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
    _check_data_matches_net(ckpt)
    return ckpt


def _json_dict(path, name, arr) -> dict:
    """Entry ``name`` decoded as a JSON object (dict); ValueError naming the file otherwise."""
    try:
        d = json.loads(str(arr))
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint: {path}: {name} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"checkpoint: {path}: {name}: expected a JSON object, got "
                         f"{type(d).__name__} {json.dumps(d)[:40]}")
    return d


def _check_data_matches_net(ck) -> None:
    """The data the checkpoint names must have the shape its network takes."""
    shape = tuple(getattr(ck.net, "x_shape", ()))
    if ck.image_size < 0 or (ck.image_size > 0 and shape[-2:] != (ck.image_size,) * 2) or (
            ck.image_size == 0 and len(shape) != 1):
        raise ValueError(f"checkpoint: {ck.path}: image_size {ck.image_size} does not fit its "
                         f"{type(ck.net).__name__} of input shape {shape}")
    from ddpm_ref.datasets import DATASETS  # local: datasets imports the training code

    spec = DATASETS.get(ck.dataset)
    if spec is not None and tuple(spec.x_shape) != shape:
        raise ValueError(f"checkpoint: {ck.path}: trained on {ck.dataset!r} (shape "
                         f"{tuple(spec.x_shape)}) but its {type(ck.net).__name__} takes {shape}")
