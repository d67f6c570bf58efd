"""What a sweep will cost, before it runs: trainings, optimizer steps, images through the
sampler, and UNet FLOPs (counted on the meta device, so no weights are built)."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from decodiff.harness.config import Config
from decodiff.harness.sweep.spec import SweepPlan


@lru_cache(maxsize=64)
def unet_gflops(size: str, classes: int, latent: int, channels: int = 4) -> float:
    """Forward GFLOPs of one sample through a UNet preset."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from decodiff.models.unet import build_unet

    with torch.device("meta"):
        model = build_unet(size, num_classes=max(1, classes), conditional=True, latent_channels=channels,
                           sample_size=latent, dropout=None).eval()
        z = torch.zeros(1, channels, latent, latent)
        t = torch.zeros(1, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            model(z, t, t)
    return counter.get_total_flops() / 1e9


def data_counts(cfg: Config, manifest=None) -> tuple[int, int, int, int]:
    """(categories, training images, test images, image size) of a trial's data."""
    if manifest is not None:
        cats = cfg.data.categories or manifest.categories
        size = cfg.data.crop or cfg.data.resize or (manifest.image_size or [256])[0]
        return len(cats), manifest.count("train", cats), manifest.count("test", cats), size
    from decodiff.datasets.demo import CATEGORIES, DEMO_CATEGORIES

    d = cfg.data.demo
    cats = cfg.data.categories or d.categories or list(DEMO_CATEGORIES)
    test = sum(d.n_test_good + d.n_test_per_defect * len(CATEGORIES[c].defects) for c in cats if c in CATEGORIES)
    return len(cats), d.n_train * len(cats), test, cfg.data.crop or cfg.data.resize or d.size


def estimate(plan: SweepPlan, manifests: dict[str, Any], trained: set[str] = frozenset(),
             finished: set[str] = frozenset()) -> dict[str, Any]:
    """Totals over the trials still to run; `manifests` maps data locations to manifests."""
    trainings: dict[str, dict[str, Any]] = {}
    evals = {"images": 0, "unet_calls": 0, "tflop": 0.0}
    val = plan.spec.validation
    for t in plan.trials:
        if t.id in finished:
            continue
        cfg = t.config
        n_cat, n_train, n_test, size = data_counts(cfg, manifests.get(cfg.data.shards or ""))
        latent = max(1, size // 8)
        g = unet_gflops(cfg.model.size, n_cat, latent)
        if val is not None:
            held = max(n_cat, round(val.holdout * n_train))
            n_train -= held
            n_test += held * (1 + val.defects)
        if cfg.method == "vae-recon":  # no UNet: neither training nor UNet calls
            evals["images"] += n_test
            continue
        if t.group not in trainings and t.group not in trained:
            steps_per_epoch = max(1, math.ceil(n_train / cfg.train.batch_size))
            steps = min(cfg.train.max_steps or steps_per_epoch * cfg.train.epochs, steps_per_epoch * cfg.train.epochs)
            samples = steps * cfg.train.batch_size
            trainings[t.group] = {"steps": steps, "samples": samples, "tflop": 3 * g * samples / 1e3}
        calls = n_test * cfg.infer.reverse_steps
        evals["images"] += n_test
        evals["unet_calls"] += calls
        evals["tflop"] += g * calls / 1e3
    train_tflop = sum(v["tflop"] for v in trainings.values())
    return {
        "trials": sum(1 for t in plan.trials if t.id not in finished),
        "trainings": len(trainings),
        "train_steps": sum(v["steps"] for v in trainings.values()),
        "train_samples": sum(v["samples"] for v in trainings.values()),
        "train_tflop": round(train_tflop, 3),
        "eval_images": evals["images"],
        "eval_unet_calls": evals["unet_calls"],
        "eval_tflop": round(evals["tflop"], 3),
        "total_tflop": round(train_tflop + evals["tflop"], 3),
        "note": "UNet FLOPs only (training = 3 x forward per sample); VAE encoding/decoding and data loading not counted",
    }
