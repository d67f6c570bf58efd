"""Trained models kept in the cache by what trained them, so that a rerun, an evaluation-only
sweep trial or a second report reuses one training instead of repeating it; and a training
that was interrupted (preempted, killed) continues from its last checkpoint."""
from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from decodiff.harness.training.checkpoint import latest_state, load_model
from decodiff.harness.config import BEHAVIOUR_BEFORE_KEY, Config
from decodiff.harness.data import PreparedData
from decodiff.harness.training.distributed import broadcast_from_main
from decodiff.harness.training.init_weights import init_digest
from decodiff.harness.progress import log
from decodiff.models.reconstruction import TRAINED
from decodiff.models.unet import DeviationUNet
from decodiff.models.vae import FrozenVAE

# Settings that do not change the trained weights: left out of the key (and may change on resume).
NOT_IN_KEY = {"reuse", "log_every", "checkpoint_every", "keep_checkpoints"}


def training_spec(cfg: Config, data: PreparedData, vae: FrozenVAE) -> dict[str, Any]:
    """Everything that changes the trained weights, as JSON (what a resume must match)."""
    train = cfg.train.model_dump(mode="json", exclude=NOT_IN_KEY)
    model = cfg.model.model_dump(mode="json", exclude={"init_from", "init_partial"})  # the file's digest instead
    sections = {"model": model, "train": train}
    for dotted, before in BEHAVIOUR_BEFORE_KEY.items():  # trainings that behave as before keep their keys
        section, key = dotted.split(".", 1)
        if sections[section].get(key) == before:
            del sections[section][key]
    if cfg.model.init_from and not cfg.model.init_partial:  # a full load overwrites all that model.init sets
        model.pop("init", None)
    spec = {"data": data.manifest.checksum, "categories": data.categories, "vae": vae.fingerprint or vae.source,
            "scale": vae.scale, "model": model, "process": cfg.process.model_dump(mode="json"),
            "train": train, "resize": cfg.data.resize, "crop": cfg.data.crop, "shuffle_buffer": cfg.data.shuffle_buffer,
            "seed": cfg.run.seed}
    if cfg.method != "deco-diff":  # baselines train other objectives (DeCo-Diff keys are as before)
        spec["method"] = cfg.method
    if cfg.model.init_from:  # another initialisation, another model (keys without one are as before)
        spec["init"] = init_digest(cfg.model.init_from)
    return json.loads(json.dumps(spec))


def training_key(cfg: Config, data: PreparedData, vae: FrozenVAE) -> str:
    """A finished model with this key is reused; an unfinished one is continued."""
    return hashlib.sha256(json.dumps(training_spec(cfg, data, vae), sort_keys=True).encode()).hexdigest()[:16]


def model_folder(cfg: Config, data: PreparedData, vae: FrozenVAE) -> Path:
    return Path(cfg.run.cache_dir) / "models" / training_key(cfg, data, vae)


def trained_model(cfg: Config, data: PreparedData, vae: FrozenVAE, accelerator: Any = None,
                  ) -> tuple[DeviationUNet | None, list[str], dict[str, Any], bool]:
    """The model for this config: reused from the cache when one with the same training key
    exists (and train.reuse), continued from its last checkpoint when a training with this key
    was interrupted, else trained now. None for a method without a model (vae-recon).
    `accelerator`: the one this process already made (several launched processes)."""
    from decodiff.harness.training.loop import training_folder_lock

    if cfg.method not in TRAINED:  # vae-recon: the VAE alone, nothing to train
        return None, list(data.categories), {"method": cfg.method, "steps": 0, "checkpoint": None, "reused": False}, False
    folder = model_folder(cfg, data, vae)
    main = accelerator is None or accelerator.is_main_process
    # another run training the same key: wait for it, then reuse its model
    with training_folder_lock(folder, wait=True) if main else nullcontext():
        return _trained_model(cfg, data, vae, accelerator, folder)


def _trained_model(cfg: Config, data: PreparedData, vae: FrozenVAE, accelerator: Any, folder: Path,
                   ) -> tuple[DeviationUNet | None, list[str], dict[str, Any], bool]:
    from decodiff.harness.training.loop import train

    reused = cfg.train.reuse and (folder / "checkpoint" / "model.safetensors").is_file()
    resume = not reused and cfg.train.reuse and latest_state(folder) is not None
    # several processes: the main one decides for all, so that no rank skips a training the others enter
    folder_s, reused, resume = broadcast_from_main((str(folder), reused, resume))
    folder = Path(folder_s)
    ckpt = folder / "checkpoint"
    if reused:
        log(f"train: reusing the model trained with the same settings and data ({ckpt}); train.reuse=false retrains")
    else:
        train(cfg, data, vae, folder, accelerator=accelerator, resume=resume)
    if not (ckpt / "model.safetensors").is_file():
        raise FileNotFoundError(f"{ckpt}: the trained model is not on this machine; over several machines "
                                f"run.cache_dir must be on a file system they share")
    model, spec, info = load_model(ckpt)
    info = {**info, "checkpoint": str(ckpt), "reused": reused}
    return model, spec["classes"], info, reused
