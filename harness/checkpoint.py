"""Model checkpoints: weights as safetensors plus JSON that rebuilds the model; nothing is
unpickled, so a checkpoint from elsewhere cannot run code."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from decodiff.models.unet import DeviationUNet, build_unet


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names it and why."""


def model_spec(size: str, num_classes: int, conditional: bool, latent_channels: int, sample_size: int,
               dropout: float | None, classes: list[str]) -> dict[str, Any]:
    return {"size": size, "num_classes": num_classes, "conditional": conditional, "latent_channels": latent_channels,
            "sample_size": sample_size, "dropout": dropout, "classes": classes}


def build_from_spec(spec: dict[str, Any]) -> DeviationUNet:
    return build_unet(spec["size"], num_classes=spec["num_classes"], conditional=spec["conditional"],
                      latent_channels=spec["latent_channels"], sample_size=spec["sample_size"], dropout=spec["dropout"])


def save_model(folder: Path, model: DeviationUNet, spec: dict[str, Any], info: dict[str, Any]) -> None:
    """Write into a temporary folder, then swap it in: a failed save keeps the previous one."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "model.json").write_text(json.dumps(spec, indent=2))
    (tmp / "info.json").write_text(json.dumps(info, indent=2, default=str))
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def load_model(folder: Path, expect: dict[str, Any] | None = None) -> tuple[DeviationUNet, dict[str, Any], dict[str, Any]]:
    folder = Path(folder)
    for name in ("model.safetensors", "model.json"):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: not a checkpoint (missing {name})")
    try:
        spec = json.loads((folder / "model.json").read_text())
        info = json.loads((folder / "info.json").read_text()) if (folder / "info.json").is_file() else {}
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
        raise CheckpointError(f"{folder}: weights do not fit model size {spec['size']!r} "
                              f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    for k, v in own.items():
        if v.shape != state[k].shape:
            raise CheckpointError(f"{folder}: tensor {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    model.load_state_dict(state)
    return model, spec, info
