"""`model.init_from=PATH`: weights from elsewhere as the starting point of a training, or as a
model of ours (`decodiff model import`). Four sources, told apart by what they hold:

- a checkpoint of this project (a folder with model.safetensors + model.json, or a training
  folder with checkpoint/ inside): names are ours; class rows matched by category name;
- a diffusers UNet folder (config.json + diffusion_pytorch_model.*, or a pipeline's unet/):
  names are diffusers'; it has no class table (reported missing);
- an LDM checkpoint ({"state_dict": {"model.diffusion_model.*", "cond_stage_model.embedding.weight"}}):
  names mapped by diffusers' LDM converter, other components (VAE, EMA copy) ignored;
- the authors' DeCo-Diff checkpoint ({"model": state_dict}, the UNet unprefixed).

Pickled files are read with torch.load(weights_only=True) only. The sha256 of what was read
enters the training key, so a model trained from another initialisation is never reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from decodiff.datasets.files import sha256_file
from decodiff.harness.errors import CheckpointError
from decodiff.models.ldm_unet import LDM_PREFIX, LDMParts, ldm_to_ours, split_ldm
from decodiff.models.unet import DeviationUNet
from decodiff.models.unet_init import WeightsPlan, match_weights

KINDS = {
    "decodiff": "checkpoint of this project",
    "diffusers": "diffusers UNet folder",
    "ldm": "LDM checkpoint",
    "authors": "the authors' DeCo-Diff checkpoint",
}
_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass
class Source:
    """Weights read from one place. `tensors` are under our names for the first two kinds;
    for the LDM kinds `ldm` holds them in their own layout until a model config maps them."""

    path: Path
    kind: str
    files: list[Path]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    ldm: LDMParts | None = None
    class_names: list[str] | None = None

    @property
    def label(self) -> str:
        return f"{self.path} ({KINDS[self.kind]})"


def _bad(path: Path | str, why: str, key: str) -> CheckpointError:
    return CheckpointError(f"{key}={path}: {why}")


def source_files(path: Path | str, key: str = "model.init_from") -> tuple[str | None, list[Path]]:
    """The kind (None: a file, told apart once read) and the files that hold the weights."""
    p = Path(path)
    if p.is_file():
        return None, [p]
    if not p.is_dir():
        raise _bad(path, "no such file or folder", key)
    for folder in (p, p / "checkpoint"):
        if (folder / "model.safetensors").is_file() and (folder / "model.json").is_file():
            return "decodiff", [folder / "model.safetensors", folder / "model.json"]
    for folder in (p, p / "unet"):
        if (folder / "config.json").is_file():
            index = folder / "diffusion_pytorch_model.safetensors.index.json"
            if index.is_file():
                try:
                    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                except (ValueError, KeyError, TypeError):
                    raise _bad(index, "not a readable shard index", key) from None
                return "diffusers", [folder / s for s in shards]
            found = [folder / n for n in _DIFFUSERS_WEIGHTS if (folder / n).is_file()]
            if found:
                return "diffusers", found[:1]
    raise _bad(
        path,
        "a folder that is neither a checkpoint of this project (model.safetensors + model.json) nor a "
        "diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors/.bin)",
        key,
    )


@lru_cache(maxsize=8)
def _digest(files: tuple[str, ...], stamps: tuple[tuple[int, int], ...]) -> str:
    if len(files) == 1:
        return sha256_file(Path(files[0]))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(f).name}:{sha256_file(Path(f))}\n".encode())
    return h.hexdigest()


def init_digest(path: Path | str, key: str = "model.init_from") -> str:
    """sha256 of the weights file (of its files' names and sha256, for a folder); computed once per
    process for an unchanged file."""
    _, files = source_files(path, key)
    for f in files:
        if not f.is_file():
            raise _bad(path, f"{f.name} is missing", key)
    stamps = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest(tuple(str(f.resolve()) for f in files), stamps)


def _load(path: Path, key: str) -> Any:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' own error types for corrupt headers
            raise _bad(path, f"not a readable safetensors file ({exc})", key) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code-carrying pickles, others for junk
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _bad(
            path,
            f"cannot be read as plain tensors with torch.load(weights_only=True) ({first}); save its "
            f"state dict alone, or as .safetensors",
            key,
        ) from None


def _tensors(obj: Any) -> dict[str, torch.Tensor]:
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}


def read_source(path: Path | str, key: str = "model.init_from") -> Source:
    kind, files = source_files(path, key)
    p = Path(path)
    if kind == "decodiff":
        try:
            spec = json.loads(files[1].read_text())
        except ValueError as exc:
            raise _bad(files[1], f"not valid JSON ({exc})", key) from None
        tensors = _load(files[0], key)
        names = spec.get("classes") if spec.get("conditional", True) else None
        return Source(p, kind, files, tensors=tensors, class_names=names)
    if kind == "diffusers":
        tensors = {}
        for f in files:
            tensors.update({f"unet.{k}": v for k, v in _tensors(_load(f, key)).items()})
        return Source(p, kind, files, tensors=tensors)
    obj = _load(p, key)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        kind, state = "authors", _tensors(obj["model"])
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        kind, state = "ldm", _tensors(obj["state_dict"])
    else:
        state = _tensors(obj)
        kind = "ldm" if any(k.startswith(LDM_PREFIX) for k in state) else "authors"
    if "input_blocks.0.0.weight" not in state and LDM_PREFIX + "input_blocks.0.0.weight" not in state:
        raise _bad(
            path,
            "holds no UNet in the LDM layout (expected {'model': state_dict} as the authors save it, or "
            "{'state_dict': {'model.diffusion_model.*': ...}} as LDM does)",
            key,
        )
    return Source(p, kind, [p], ldm=split_ldm(state, prefixed=kind == "ldm"))


def plan_for(source: Source, model: DeviationUNet, labels: list[str]) -> WeightsPlan:
    """Match a source to `model` (its shapes only; a meta-device model will do). `labels` name
    the model's class-table rows (its categories)."""
    own = model.state_dict()
    if source.ldm is None:
        tensors = dict(source.tensors)
        table = tensors.pop("class_tokens.weight", None)
        return match_weights(
            own, tensors, source=source.label, class_table=table, class_names=source.class_names, categories=labels
        )
    ours, origin, unused = ldm_to_ours(source.ldm.unet, model.unet.config)
    return match_weights(
        own,
        ours,
        source=source.label,
        origin=origin,
        unused=unused,
        ignored=len(source.ldm.ignored),
        class_table=source.ldm.class_table,
        categories=labels,
    )


def row_labels(categories: list[str], conditional: bool) -> list[str]:
    return list(categories) if conditional else ["(every image)"]


def init_plan(path: str, partial: bool, model: DeviationUNet, labels: list[str]) -> WeightsPlan:
    """The plan to initialise `model` from `path`; anything short of a full load stops with the
    list of what did not fit, unless `partial`."""
    plan = plan_for(read_source(path), model, labels)
    rep = plan.report
    if not rep.full and not partial:
        raise CheckpointError(f"model.init_from={rep.line()} (model.init_partial=true starts from what fits)")
    return plan


def init_record(path: str, plan: WeightsPlan) -> dict[str, Any]:
    """What a run records of its initialisation (info.json, provenance, MLflow params)."""
    return {"from": str(path), "sha256": init_digest(path), **plan.report.to_json()}


def init_params(info: dict[str, Any]) -> dict[str, str]:
    """MLflow params of a model's initialisation or import (names lists shortened to fit)."""
    rec = info.get("init")
    if not rec:
        return {}
    out = {
        f"init.{k}": str(rec[k])
        for k in ("from", "sha256", "tensors", "loaded", "missing", "mismatched", "unused")
        if k in rec
    }
    for k in ("missing_names", "mismatched_names", "unused_names"):
        if rec.get(k):
            out[f"init.{k}"] = ", ".join(rec[k])[:500]
    return out
