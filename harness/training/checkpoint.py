"""Checkpoints: tensors as safetensors, everything else as JSON; nothing is unpickled, so a
checkpoint from elsewhere cannot run code.

Two kinds:
- the model (`<out>/checkpoint/`: model.safetensors, model.json that rebuilds it, info.json):
  what evaluation loads;
- the training state (`<out>/train_state/step-00001000/`), everything an exact resume needs:
  model, optimizer, scheduler, EMA, gradient scaler, the step and epoch, and per rank its
  random state and data position (rank-<r>.safetensors/.json). `latest.json` names the newest.

Saving never destroys the previous checkpoint: a state is written into a temporary folder,
its files' sha256 go into state.json (written last), the folder is renamed into place, then
latest.json is replaced atomically, and only then are states older than the newest `keep`
removed. A save that fails (full disk, killed process) leaves the previous state and
latest.json as they were. Loading checks every file's sha256, so a corrupt or truncated
checkpoint is a clear error, not a silently different run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from decodiff.datasets.files import sha256_file
from decodiff.harness.errors import CheckpointError  # noqa: F401 (re-exported)
from decodiff.harness.training import rng_state
from decodiff.models.unet import DeviationUNet, build_unet

STATE_DIR = "train_state"
LATEST = "latest.json"
STATE_FORMAT = "decodiff-train-state/1"
_STEP_RE = re.compile(r"^step-(\d{8})$")


def model_spec(
    size: str,
    num_classes: int,
    conditional: bool,
    latent_channels: int,
    sample_size: int,
    dropout: float | None,
    classes: list[str],
) -> dict[str, Any]:
    return {
        "size": size,
        "num_classes": num_classes,
        "conditional": conditional,
        "latent_channels": latent_channels,
        "sample_size": sample_size,
        "dropout": dropout,
        "classes": classes,
    }


def build_from_spec(spec: dict[str, Any]) -> DeviationUNet:
    """`size` names a preset; an imported model of another size ("custom") carries its own `preset`."""
    size = spec["preset"] if spec["size"] == "custom" else spec["size"]
    return build_unet(
        size,
        num_classes=spec["num_classes"],
        conditional=spec["conditional"],
        latent_channels=spec["latent_channels"],
        sample_size=spec["sample_size"],
        dropout=spec["dropout"],
    )


def save_model(
    folder: Path,
    model: DeviationUNet,
    spec: dict[str, Any],
    info: dict[str, Any],
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write into a temporary folder, then swap it in: a failed save keeps the previous one.
    `state` replaces the model's own weights (e.g. the EMA average)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = _cpu(state if state is not None else model.state_dict())
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "model.json").write_text(json.dumps(spec, indent=2))
    files = {"model.safetensors": sha256_file(tmp / "model.safetensors"), "model.json": sha256_file(tmp / "model.json")}
    (tmp / "info.json").write_text(json.dumps({**info, "files_sha256": files}, indent=2, default=str))
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def load_model(
    folder: Path, expect: dict[str, Any] | None = None
) -> tuple[DeviationUNet, dict[str, Any], dict[str, Any]]:
    folder = Path(folder)
    for name in ("model.safetensors", "model.json"):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: not a checkpoint (missing {name})")
    try:
        info = json.loads((folder / "info.json").read_text()) if (folder / "info.json").is_file() else {}
    except ValueError as exc:
        raise CheckpointError(f"{folder}/info.json: corrupt checkpoint file, not valid JSON ({exc})") from None
    for name, digest in (info.get("files_sha256") or {}).items():  # recorded when it was saved
        _check_file(folder, name, digest)
    try:
        spec = json.loads((folder / "model.json").read_text())
    except ValueError as exc:
        raise CheckpointError(f"{folder}/model.json: not valid JSON ({exc})") from None
    if expect:
        diff = {k: (spec.get(k), v) for k, v in expect.items() if spec.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"{folder}: checkpoint does not match the config ({detail})")
    model = build_from_spec(spec)
    try:
        state = load_file(str(folder / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{folder}/model.safetensors: unreadable ({exc})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}: weights do not fit model size {spec['size']!r} "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors)"
        )
    for k, v in own.items():
        if v.shape != state[k].shape:
            raise CheckpointError(f"{folder}: tensor {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    model.load_state_dict(state)
    return model, spec, info


# ---- training state ---------------------------------------------------------------------------
@dataclass
class TrainingState:
    """What a resumed run restores. `tensors[group]` are the shared tensor groups (model,
    optimizer, ema), `meta` the shared JSON, `rank_tensors`/`rank_meta` this rank's own."""

    step: int
    epoch: int
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    rank_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    rank_meta: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None


def _fsync_write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def state_folders(out: Path) -> list[Path]:
    """Complete training states under `out`, oldest first."""
    root = Path(out) / STATE_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_RE.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_state(out: Path) -> Path | None:
    """The newest complete training state: the one latest.json names, else the newest folder."""
    root = Path(out) / STATE_DIR
    try:
        name = json.loads((root / LATEST).read_text())["state"]
        if _STEP_RE.match(name) and (root / name / "state.json").is_file():
            return root / name
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = state_folders(out)
    return found[-1] if found else None


def save_training_state(
    out: Path, state: TrainingState, *, rank: int, world: int, keep: int = 2, barrier: Callable[[], None] = lambda: None
) -> Path:
    """Write one training state; every rank calls this (rank 0 writes the shared part).

    `barrier` synchronises the ranks (a shared file system is assumed across nodes)."""
    root = Path(out) / STATE_DIR
    name = f"step-{state.step:08d}"
    tmp = root / f".{name}.tmp"
    final = root / name
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".step-*.tmp"):  # left by a killed save
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    barrier()
    try:
        save_file(_cpu(state.rank_tensors), str(tmp / f"rank-{rank}.safetensors"))
        _fsync_file(tmp / f"rank-{rank}.safetensors")
        rank_meta = {**state.rank_meta, "rank": rank, "sha256": sha256_file(tmp / f"rank-{rank}.safetensors")}
        _fsync_write(tmp / f"rank-{rank}.json", json.dumps(rank_meta))
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    if rank != 0:
        return final
    try:
        files: dict[str, str] = {}
        for group, tensors in state.tensors.items():
            path = tmp / f"{group}.safetensors"
            save_file(_cpu(tensors), str(path))
            _fsync_file(path)
            files[path.name] = sha256_file(path)
        for r in range(world):
            meta_path = tmp / f"rank-{r}.json"
            if not meta_path.is_file():
                raise OSError(f"{meta_path}: rank {r} did not write its state (is {out} on a shared file system?)")
            files[meta_path.name] = sha256_file(meta_path)
        meta = {
            **state.meta,
            "format": STATE_FORMAT,
            "step": state.step,
            "epoch": state.epoch,
            "world_size": world,
            "files": files,
        }
        _fsync_write(tmp / "state.json", json.dumps(meta, indent=1, default=str))
        _fsync_dir(tmp)
        aside = root / f".{name}.old"
        if final.exists():  # the same step saved again: the old copy goes only once the new one is in
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
        os.replace(tmp, final)
        _fsync_dir(root)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = root / f".{LATEST}.tmp"
    _fsync_write(
        latest_tmp,
        json.dumps(
            {"state": name, "step": state.step, "epoch": state.epoch, "reason": state.meta.get("reason", "periodic")}
        ),
    )
    os.replace(latest_tmp, root / LATEST)
    _fsync_dir(root)
    for old in state_folders(out)[: -max(1, keep)]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint file, not valid JSON ({exc})") from None


def _check_file(folder: Path, name: str, expected: str | None) -> Path:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{folder}: incomplete checkpoint (missing {name})")
    if expected is not None and sha256_file(path) != expected:
        raise CheckpointError(
            f"{path}: corrupt checkpoint file (sha256 differs from the one recorded when it was saved)"
        )
    return path


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: unreadable ({exc})") from None


def load_training_state(folder: Path, *, rank: int, world: int) -> TrainingState:
    """Read (and verify) one training state folder for this rank."""
    folder = Path(folder)
    meta = _read_json(_check_file(folder, "state.json", None))
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{folder}/state.json: format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
    files = meta.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{folder}/state.json: corrupt checkpoint (no file list)")
    if meta.get("world_size") != world:
        raise CheckpointError(
            f"{folder}: written by {meta.get('world_size')} processes, resumed with {world}; an exact "
            f"resume needs the same number (each rank's random state and data position are saved)"
        )
    tensors = {}
    for name, digest in files.items():
        if name.endswith(".safetensors"):
            tensors[name[: -len(".safetensors")]] = _load_tensors(_check_file(folder, name, digest))
    rank_meta = _read_json(_check_file(folder, f"rank-{rank}.json", files.get(f"rank-{rank}.json")))
    rank_tensors = _load_tensors(_check_file(folder, f"rank-{rank}.safetensors", rank_meta.get("sha256")))
    return TrainingState(
        step=int(meta["step"]),
        epoch=int(meta["epoch"]),
        tensors=tensors,
        meta=meta,
        rank_tensors=rank_tensors,
        rank_meta=rank_meta,
        folder=folder,
    )


def optimizer_to_tensors(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict as flat tensors ("<param>.<name>") plus JSON (groups, scalars)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for items in (tensors.items(), meta.get("scalars", {}).items()):
        for key, v in items:
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def spec_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like trees ("train.lr: 0.0001 -> 0.0002")."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for k in sorted(set(saved) | set(current), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in saved or k not in current:
                out.append(f"{key}: {saved.get(k, '(absent)')!r} -> {current.get(k, '(absent)')!r}")
            else:
                out += spec_differences(saved[k], current[k], key)
        return out
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)) and len(saved) == len(current):
        return [d for i, (a, b) in enumerate(zip(saved, current)) for d in spec_differences(a, b, f"{prefix}[{i}]")]
    return [] if saved == current else [f"{prefix}: {saved!r} -> {current!r}"]


# ---- a training run's objects <-> a training state ------------------------------------------------
@dataclass
class Position:
    """Where a training run is: optimizer steps done, the epoch, and how many samples of that
    epoch this rank has used (its data position)."""

    step: int = 0
    epoch: int = 0
    consumed: int = 0
    seconds: float = 0.0  # training time before this process (resumed runs add up)
    loss: float | None = None  # the last logged loss
    loss_sum: float = 0.0  # this rank's loss since the last log (so a resumed run logs the same numbers)
    loss_n: int = 0


def clear_training_states(out: Path) -> None:
    """Start over: remove the training states of an earlier run in `out`."""
    shutil.rmtree(Path(out) / STATE_DIR, ignore_errors=True)


@dataclass
class Trainables:
    """What a training state saves and restores, besides the position: `model` is the unwrapped
    model, `ema` may be None (and is only kept by rank 0), `scaler` None without mixed precision."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    ema: Any
    scaler: Any
    generator: torch.Generator


def save_training(
    out: Path,
    pos: Position,
    objs: Trainables,
    *,
    meta: dict[str, Any],
    rank: int,
    world: int,
    keep: int,
    barrier: Callable[[], None],
    reason: str = "periodic",
) -> Path:
    """Every rank calls this at the same step."""
    rng_tensors, rng_meta = rng_state.capture(objs.generator)
    state = TrainingState(
        step=pos.step,
        epoch=pos.epoch,
        rank_tensors=rng_tensors,
        rank_meta={"consumed": pos.consumed, "rng": rng_meta, "loss_sum": pos.loss_sum, "loss_n": pos.loss_n},
    )
    if rank == 0:
        opt_tensors, opt_meta = optimizer_to_tensors(objs.optimizer.state_dict())
        sched = {k: v for k, v in objs.scheduler.state_dict().items() if k != "lr_lambdas"}
        state.tensors = {"model": objs.model.state_dict(), "optimizer": opt_tensors}
        if objs.ema is not None:
            state.tensors["ema"] = objs.ema.state_dict()
        state.meta = {
            **meta,
            "reason": reason,
            "optimizer": opt_meta,
            "scheduler": sched,
            "scaler": objs.scaler.state_dict() if objs.scaler is not None else None,
            "seconds": pos.seconds,
            "loss": pos.loss,
        }
    return save_training_state(out, state, rank=rank, world=world, keep=keep, barrier=barrier)


def restore_training(folder: Path, objs: Trainables, *, expect: dict[str, Any], rank: int, world: int) -> Position:
    """Load a training state into freshly built objects, after checking it was written for the
    same model and training settings (`expect`: the JSON a save puts into its meta)."""
    st = load_training_state(folder, rank=rank, world=world)
    saved_model, want_model = st.meta.get("model_spec", {}), expect.get("model_spec", {})
    if saved_model.get("size") != want_model.get("size"):
        raise CheckpointError(
            f"{folder}: the checkpoint holds a UNet {saved_model.get('size')!r}; the config asks for "
            f"{want_model.get('size')!r} (model.size)"
        )
    diffs = [d for key in expect for d in spec_differences(st.meta.get(key), expect[key], key)]
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise CheckpointError(
            f"{folder}: the config differs from the one this checkpoint was written with ({shown}); "
            f"resume with the same settings, or start a new training elsewhere"
        )
    try:
        objs.model.load_state_dict(st.tensors["model"])
        objs.optimizer.load_state_dict(optimizer_from_tensors(st.tensors["optimizer"], st.meta["optimizer"]))
        sched = dict(st.meta["scheduler"], lr_lambdas=[None] * len(objs.optimizer.param_groups))
        objs.scheduler.load_state_dict(sched)
        if objs.ema is not None:
            if "ema" not in st.tensors:
                raise KeyError("the checkpoint has no EMA weights (was train.ema set?)")
            objs.ema.load_state_dict(st.tensors["ema"])
        if objs.scaler is not None and st.meta.get("scaler"):
            objs.scaler.load_state_dict(st.meta["scaler"])
        rng_state.restore(objs.generator, st.rank_tensors, st.rank_meta["rng"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{folder}: cannot restore the training state ({str(exc).splitlines()[0]})") from None
    return Position(
        step=st.step,
        epoch=st.epoch,
        consumed=int(st.rank_meta["consumed"]),
        seconds=float(st.meta.get("seconds") or 0.0),
        loss=st.meta.get("loss"),
        loss_sum=float(st.rank_meta.get("loss_sum", 0.0)),
        loss_n=int(st.rank_meta.get("loss_n", 0)),
    )
