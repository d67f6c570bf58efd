"""Trained models kept in the cache by what trained them, so that a rerun, an evaluation-only
sweep trial or a second report reuses one training instead of repeating it; and a training
that was interrupted (preempted, killed) continues from its last checkpoint."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from decodiff.datasets.files import mark_used
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData
from decodiff.harness.progress import log
from decodiff.harness.training.checkpoint import latest_state, load_model
from decodiff.harness.training.distributed import broadcast_from_main
from decodiff.harness.training.loop import train, training_folder_lock
from decodiff.harness.training.spec import training_spec
from decodiff.models.reconstruction import TRAINED
from decodiff.models.unet import DeviationUNet
from decodiff.models.vae import FrozenVAE


def training_key(cfg: Config, data: PreparedData, vae: FrozenVAE) -> str:
    """A finished model with this key is reused; an unfinished one is continued."""
    return hashlib.sha256(json.dumps(training_spec(cfg, data, vae), sort_keys=True).encode()).hexdigest()[:16]


def model_folder(cfg: Config, data: PreparedData, vae: FrozenVAE) -> Path:
    return Path(cfg.run.cache_dir) / "models" / training_key(cfg, data, vae)


def trained_model(
    cfg: Config,
    data: PreparedData,
    vae: FrozenVAE,
    accelerator: Any = None,
) -> tuple[DeviationUNet | None, list[str], dict[str, Any], bool]:
    """The model for this config: reused from the cache when one with the same training key
    exists (and train.reuse), continued from its last checkpoint when a training with this key
    was interrupted, else trained now. None for a method without a model (vae-recon).
    `accelerator`: the one this process already made (several launched processes)."""
    if cfg.method not in TRAINED:  # vae-recon: the VAE alone, nothing to train
        return (
            None,
            list(data.categories),
            {"method": cfg.method, "steps": 0, "checkpoint": None, "reused": False},
            False,
        )
    folder = model_folder(cfg, data, vae)
    main = accelerator is None or accelerator.is_main_process
    # a finished model (its checkpoint is swapped in whole) is read without the lock, as the other caches
    # are: readers never queue behind a training of the same key, and a read-only cache can be read;
    # else another run training the same key: wait for it, then reuse its model
    finished = cfg.train.reuse and (folder / "checkpoint" / "model.safetensors").is_file()
    with training_folder_lock(folder, wait=True) if main and not finished else nullcontext():
        return _trained_model(cfg, data, vae, accelerator, folder)


def _trained_model(
    cfg: Config,
    data: PreparedData,
    vae: FrozenVAE,
    accelerator: Any,
    folder: Path,
) -> tuple[DeviationUNet | None, list[str], dict[str, Any], bool]:
    reused = cfg.train.reuse and (folder / "checkpoint" / "model.safetensors").is_file()
    resume = not reused and cfg.train.reuse and latest_state(folder) is not None
    # several processes: the main one decides for all, so that no rank skips a training the others enter
    folder_s, reused, resume = broadcast_from_main((str(folder), reused, resume))
    folder = Path(folder_s)
    ckpt = folder / "checkpoint"
    if reused:
        mark_used(folder)
        log(f"train: reusing the model trained with the same settings and data ({ckpt}); train.reuse=false retrains")
    else:
        train(cfg, data, vae, folder, accelerator=accelerator, resume=resume)
    if not (ckpt / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{ckpt}: the trained model is not on this machine; over several machines "
            f"run.cache_dir must be on a file system they share"
        )
    model, spec, info = load_model(ckpt)
    info = {**info, "checkpoint": str(ckpt), "reused": reused}
    return model, spec["classes"], info, reused
