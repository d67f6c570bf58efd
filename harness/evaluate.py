"""Evaluation: stream the test shards, correct each latent, decode, build anomaly maps and
image scores, and hand them batch by batch to the metrics."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, device_for, test_loader
from decodiff.harness.metrics import MetricSuite
from decodiff.harness.progress import Progress, log
from decodiff.harness.train import make_process
from decodiff.models.anomaly_map import MapSettings, anomaly_map, image_score
from decodiff.models.sampler import correct
from decodiff.models.unet import DeviationUNet
from decodiff.models.vae import FrozenVAE


@dataclass
class EvalResult:
    records: list[dict[str, Any]]  # the long table (results contract)
    samples: list[dict[str, Any]]  # per test image: key, category, defect, label, score
    seconds: float
    images_per_second: float
    maps_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def map_settings(cfg: Config) -> MapSettings:
    i = cfg.infer
    return MapSettings(combination=i.combination, gamma_p=i.gamma_p, gamma_l=i.gamma_l, sigma_pixel=i.sigma_pixel,
                       sigma_latent=i.sigma_latent, image_score=i.image_score, topk=i.topk, pool=i.pool)


@torch.no_grad()
def evaluate(cfg: Config, data: PreparedData, model: DeviationUNet, vae: FrozenVAE, class_names: list[str],
             out: Path | None = None) -> EvalResult:
    device = device_for(cfg)
    model = model.to(device).eval()
    vae = vae.to(device)
    process = make_process(cfg)
    settings = map_settings(cfg)
    ids = {c: i for i, c in enumerate(class_names)}
    missing = [c for c in data.categories if c not in ids]
    if missing:
        raise ValueError(f"the model was trained without categories {missing} (it knows {class_names})")
    suite = MetricSuite(data.manifest.dataset, aupro_protocol=cfg.metrics.aupro_protocol,
                        fpr_limit=cfg.metrics.fpr_limit, device=device.type)
    samples: list[dict[str, Any]] = []
    saved: dict[str, np.ndarray] = {}
    total = data.manifest.count("test", data.categories)
    start = time.time()
    with Progress("evaluate", total=total, unit="img") as prog:
        for batch in test_loader(cfg, data):
            x = batch["image"].to(device)
            cls = torch.tensor([ids[c] for c in batch["category"]], device=device)
            z = vae.encode(x)  # the mean of the latent distribution (published)
            fix = correct(lambda zt, tt: model(zt, tt, cls), z, process, cfg.infer.reverse_steps,
                          cfg.infer.start_step, cfg.infer.strategy)
            x_rec = vae.decode(fix.z0_hat)
            x_ref = vae.decode(z) if cfg.infer.pixel_reference == "vae" else x
            maps = anomaly_map(x_rec, x_ref, fix.z0_hat, z, settings)
            scores = image_score(maps, settings)
            masks = batch["mask"]
            has_mask = batch["has_mask"]
            labels = batch["label"]
            maps_np, scores_np = maps.float().cpu().numpy(), scores.float().cpu().numpy()
            # per category: the suite keeps each category's state apart
            for cat in dict.fromkeys(batch["category"]):
                sel = [i for i, c in enumerate(batch["category"]) if c == cat]
                ok = bool(has_mask[sel].all())
                suite.update(cat, scores_np[sel], labels[sel].numpy(), maps_np[sel],
                             masks[sel].numpy() if ok else None, keys=[batch["key"][i] for i in sel])
            for i, key in enumerate(batch["key"]):
                samples.append({"key": key, "category": batch["category"][i], "defect": batch["defect"][i],
                                "label": int(labels[i]), "score": float(scores_np[i])})
                if cfg.infer.save_maps and out is not None:
                    saved[key] = maps_np[i].astype(np.float16)
            prog.update(len(batch["key"]))
    seconds = time.time() - start
    records = suite.compute()
    maps_file = None
    if saved and out is not None:
        maps_file = out / "maps.npz"
        tmp = out / "maps.tmp.npz"
        np.savez_compressed(tmp, keys=np.array(list(saved)), maps=np.stack(list(saved.values())))
        tmp.rename(maps_file)
    log(f"evaluate: {len(samples)} images in {seconds:.1f}s")
    return EvalResult(records, samples, seconds, len(samples) / max(seconds, 1e-9), maps_file)
