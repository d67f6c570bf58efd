"""What a sweep will cost, before it runs: trainings, optimizer steps, images through the
sampler, and UNet FLOPs (counted on the meta device, so no weights are built)."""

from __future__ import annotations

from typing import Any

from decodiff.datasets.manifest import Manifest
from decodiff.harness.config import Config
from decodiff.harness.sweep.spec import SweepPlan
from decodiff.jobs.datasizes import data_size, image_side
from decodiff.jobs.workload import train_steps, vae_factor
from decodiff.models.flops import TRAINING_FLOPS_FACTOR, unet_gflops


def data_counts(cfg: Config, manifest: Manifest | None = None) -> tuple[int, int, int, int]:
    """(categories, training images, test images, image side) of a trial's data: the counts and
    image side `decodiff plan` uses (jobs/datasizes.py), from the manifest already read."""
    data = cfg.to_dict()["data"]
    size = data_size(data, manifest)
    return len(size.categories), size.train, size.test, image_side(data, size)


def estimate(
    plan: SweepPlan, manifests: dict[str, Any], trained: set[str] = frozenset(), finished: set[str] = frozenset()
) -> dict[str, Any]:
    """Totals over the trials still to run; `manifests` maps data locations to manifests."""
    trainings: dict[str, dict[str, Any]] = {}
    evals = {"images": 0, "unet_calls": 0, "tflop": 0.0}
    val = plan.spec.validation
    for t in plan.trials:
        if t.id in finished:
            continue
        cfg = t.config
        n_cat, n_train, n_test, size = data_counts(cfg, manifests.get(cfg.data.shards or ""))
        latent = max(1, size // vae_factor(cfg.vae.model_dump()))
        g = unet_gflops(cfg.model.size, latent)
        if val is not None:
            held = max(n_cat, round(val.holdout * n_train))
            n_train -= held
            n_test += held * (1 + val.defects)
        if cfg.method == "vae-recon":  # no UNet: neither training nor UNet calls
            evals["images"] += n_test
            continue
        if t.group not in trainings and t.group not in trained:
            steps = train_steps(cfg.to_dict(), n_train)
            samples = steps * cfg.train.batch_size
            tflop = TRAINING_FLOPS_FACTOR * g * samples / 1e3
            trainings[t.group] = {"steps": steps, "samples": samples, "tflop": tflop}
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
        "note": (
            "UNet FLOPs only (training = 3 x forward per sample); VAE encoding/decoding and data loading not counted"
        ),
    }
