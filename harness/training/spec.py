"""What changes a training's weights, as JSON: what a resume must match (kept in each
checkpoint) and what the model cache's key is made of."""

from __future__ import annotations

import json
from typing import Any

from decodiff.harness.config import BEHAVIOUR_BEFORE_KEY, Config
from decodiff.harness.data import PreparedData
from decodiff.harness.training.init_weights import init_digest
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
    spec = {
        "data": data.manifest.checksum,
        "categories": data.categories,
        "vae": vae.fingerprint or vae.source,
        "scale": vae.scale,
        "model": model,
        "process": cfg.process.model_dump(mode="json"),
        "train": train,
        "resize": cfg.data.resize,
        "crop": cfg.data.crop,
        "shuffle_buffer": cfg.data.shuffle_buffer,
        "seed": cfg.run.seed,
    }
    if cfg.method != "deco-diff":  # baselines train other objectives (DeCo-Diff keys are as before)
        spec["method"] = cfg.method
    if cfg.model.init_from:  # another initialisation, another model (keys without one are as before)
        spec["init"] = init_digest(cfg.model.init_from)
    return json.loads(json.dumps(spec))
