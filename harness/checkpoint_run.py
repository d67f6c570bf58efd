"""Evaluating a trained checkpoint as a run of its own (`decodiff evaluate`): the checkpoint is
checked against the config (method, UNet size, VAE) before any image is read, because a model
evaluated with the wrong VAE or settings gives plausible but meaningless numbers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from decodiff.datasets.files import mark_used
from decodiff.harness.config import Config
from decodiff.harness.data import prepare_data
from decodiff.harness.errors import CheckpointError
from decodiff.harness.evaluation.evaluate import evaluate
from decodiff.harness.finishing import RunResult, finish_run, report_extras
from decodiff.harness.progress import log
from decodiff.harness.runs import check_folders, new_run_dir
from decodiff.harness.tracking import check_tracking
from decodiff.harness.training.checkpoint import load_model
from decodiff.harness.training.distributed import accelerator_if_launched, builders_first
from decodiff.harness.training.vae_fit import get_vae
from decodiff.models.vae import FrozenVAE


def evaluate_checkpoint(cfg: Config, checkpoint: str | Path) -> RunResult | None:
    """Evaluate the model in `checkpoint` on the test split of `cfg`'s data: maps, metrics, report,
    MLflow run, in a new run folder. Under several launched processes each scores a share of the
    test set and only the main process gets the result (the others get None)."""
    t0 = time.time()
    checkpoint = Path(checkpoint)
    check_folders(cfg)
    check_tracking(cfg)
    model, spec, info = load_model(checkpoint)
    mark_used(checkpoint, cfg.run.cache_dir)  # a cached model read: used
    cfg = _checked_config(cfg, checkpoint, spec, info)
    acc = accelerator_if_launched(cfg)  # several launched processes: each scores a share of the test set
    with builders_first(acc):
        data = prepare_data(cfg)
        vae = get_vae(cfg, data)
    _check_vae(checkpoint, spec, info, vae)
    run_dir = new_run_dir(cfg, "evaluate") if acc is None or acc.is_main_process else None
    result = evaluate(cfg, data, model, vae, spec["classes"], out=run_dir)
    if run_dir is None:  # the main process reports
        return None
    info = {**info, "checkpoint": str(checkpoint), "reused": True}
    unc, qual = report_extras(cfg, data, model, vae, spec["classes"], result)  # intervals, examples, trajectories
    return finish_run(
        cfg, run_dir, data, vae, info, result, kind="evaluate", started=t0, uncertainty=unc, qualitative=qual
    )


def _checked_config(cfg: Config, checkpoint: Path, spec: dict[str, Any], info: dict[str, Any]) -> Config:
    """The config the checkpoint is evaluated with: method and UNet size must match it; the VAE
    it was trained with is used when the config names none."""
    trained_as = info.get("method", "deco-diff")
    if trained_as != cfg.method:
        raise CheckpointError(
            f"--checkpoint {checkpoint}: trained as method={trained_as}, but the config says "
            f"method={cfg.method} (pass method={trained_as})"
        )
    if spec.get("size") == "custom":  # an imported model of no preset's size: its own architecture
        log(f"UNet: the checkpoint's own architecture (custom: {spec.get('preset')}); model.size is not used")
    elif spec.get("size") != cfg.model.size:
        raise CheckpointError(
            f"--checkpoint {checkpoint}: a UNet of size {spec.get('size')}, but the config says "
            f"model.size={cfg.model.size} (pass model.size={spec.get('size')})"
        )
    imported = info.get("imported_from")
    if imported:  # weights made elsewhere: no VAE came with them
        if not cfg.vae.pretrained:
            raise CheckpointError(
                f"--checkpoint {checkpoint}: imported from {imported}, it holds no VAE of its "
                f"own: pass vae.pretrained= the VAE its weights were trained with (the authors': "
                f"sd-vae-ft-ema, as a local folder or file)"
            )
        log(f"VAE: from the config (vae.pretrained={cfg.vae.pretrained}); the imported checkpoint has none of its own")
    where = info.get("vae_location")
    if not cfg.vae.pretrained and where and Path(where).exists():  # the VAE it was trained with, not a new one
        cfg = cfg.model_copy(update={"vae": cfg.vae.model_copy(update={"pretrained": where})})
        log(f"VAE: the checkpoint's own ({where})")
    return cfg


def _check_vae(checkpoint: Path, spec: dict[str, Any], info: dict[str, Any], vae: FrozenVAE) -> None:
    """The VAE the config gives must be the one the UNet was trained on (same weights, same latents)."""
    trained_with = info.get("vae_fingerprint")
    where = info.get("vae_location")
    if trained_with and vae.fingerprint and trained_with != vae.fingerprint:
        raise CheckpointError(
            f"--checkpoint {checkpoint}: trained with another VAE ({info.get('vae')}; weights "
            f"{trained_with[:12]}) than this config gives ({vae.source}; "
            f"weights {vae.fingerprint[:12]})"
            + (f": pass vae.pretrained={where}" if where else ": pass the VAE it was trained with")
        )
    if spec.get("latent_channels") != vae.latent_channels:
        raise CheckpointError(
            f"--checkpoint {checkpoint}: a UNet for {spec.get('latent_channels')}-channel "
            f"latents, but the VAE ({vae.source}) gives {vae.latent_channels}"
        )
