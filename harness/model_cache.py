"""Trained models kept in the cache by what trained them, so that a rerun, an evaluation-only
sweep trial or a second report reuses one training instead of repeating it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from decodiff.harness.checkpoint import load_model
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData
from decodiff.harness.progress import log
from decodiff.models.unet import DeviationUNet
from decodiff.models.vae import FrozenVAE


def training_key(cfg: Config, data: PreparedData, vae: FrozenVAE) -> str:
    """Everything that changes the trained weights; a finished model with this key is reused."""
    train = cfg.train.model_dump(exclude={"reuse", "log_every", "checkpoint_every"})
    spec = {"data": data.manifest.checksum, "categories": data.categories, "vae": vae.fingerprint or vae.source, "scale": vae.scale,
            "model": cfg.model.model_dump(), "process": cfg.process.model_dump(), "train": train,
            "resize": cfg.data.resize, "crop": cfg.data.crop, "seed": cfg.run.seed}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def trained_model(cfg: Config, data: PreparedData, vae: FrozenVAE) -> tuple[DeviationUNet, list[str], dict[str, Any], bool]:
    """The model for this config: reused from the cache when one with the same training key
    exists (and train.reuse), else trained now."""
    from decodiff.harness.train import train

    folder = Path(cfg.run.cache_dir) / "models" / training_key(cfg, data, vae)
    ckpt = folder / "checkpoint"
    reused = cfg.train.reuse and (ckpt / "model.safetensors").is_file()
    if reused:
        log(f"train: reusing the model trained with the same settings and data ({ckpt}); train.reuse=false retrains")
    else:
        train(cfg, data, vae, folder)
    model, spec, info = load_model(ckpt)
    info = {**info, "checkpoint": str(ckpt), "reused": reused}
    return model, spec["classes"], info, reused
