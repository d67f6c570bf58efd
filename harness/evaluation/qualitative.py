"""The examples a report shows (the paper's Figs. 3 and 4): for each category, the best, typical
and worst localised anomalous test images (ranked by each image's own pixel AP; by image score
where a category has no masks), with input, reconstruction, ground truth and predicted map, and
the correction trajectory of the best one. The chosen images are corrected again with the same
model and settings (the sampler is deterministic), keeping every reverse step."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, test_loader
from decodiff.harness.evaluation.evaluate import conditioned
from decodiff.harness.methods import make_process, map_settings, reconstruction_settings
from decodiff.harness.progress import log
from decodiff.harness.training.distributed import device_for
from decodiff.models.anomaly_map import anomaly_map
from decodiff.models.reconstruction import reconstruct
from decodiff.models.unet import DeviationUNet
from decodiff.models.vae import FrozenVAE

ROLES = ("best", "typical", "worst")


def choose(samples: list[dict[str, Any]], quality: dict[str, float]) -> dict[str, str]:
    """key -> role: per category the best, typical (median) and worst anomalous image."""
    chosen: dict[str, str] = {}
    for cat in sorted({s["category"] for s in samples}):
        rows = [s for s in samples if s["category"] == cat and s["label"] == 1]
        if not rows:
            continue
        if any(s["key"] in quality for s in rows):
            ranked = sorted((s for s in rows if s["key"] in quality), key=lambda s: (-quality[s["key"]], s["key"]))
        else:
            ranked = sorted(rows, key=lambda s: (-s["score"], s["key"]))
        picks = {"best": ranked[0], "typical": ranked[(len(ranked) - 1) // 2], "worst": ranked[-1]}
        for role in ROLES:
            key = picks[role]["key"]
            chosen.setdefault(key, role)
    return chosen


def _uint8(x: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def qualitative_examples(
    cfg: Config,
    data: PreparedData,
    model: DeviationUNet | None,
    vae: FrozenVAE,
    class_names: list[str],
    samples: list[dict[str, Any]],
    quality: dict[str, float],
) -> dict[str, np.ndarray] | None:
    """Arrays for report_data/qualitative.npz (None when there is no anomalous test image)."""
    chosen = choose(samples, quality)
    if not chosen:
        return None
    device = device_for(cfg)
    model = model.to(device).eval() if model is not None else None
    vae = vae.to(device)
    process = make_process(cfg)
    settings = map_settings(cfg)
    recon = reconstruction_settings(cfg)
    ids = {c: i for i, c in enumerate(class_names)}
    score = {s["key"]: s["score"] for s in samples}
    best = {k for k, role in chosen.items() if role == "best"}
    found: dict[str, dict[str, Any]] = {}
    for batch in test_loader(cfg, data):
        sel = [i for i, k in enumerate(batch["key"]) if k in chosen]
        if not sel:
            continue
        x = batch["image"][sel].to(device)
        cls = torch.tensor([ids[batch["category"][i]] for i in sel], device=device)
        rec = reconstruct(
            x, vae, conditioned(model, cls), process, recon, keys=[batch["key"][i] for i in sel], keep_trajectory=True
        )
        x_rec = rec.x_rec
        maps = anomaly_map(x_rec, rec.x_ref, rec.z0_hat, rec.z, settings).float().cpu().numpy()
        frames = [vae.decode(step) for step in rec.trajectory]  # none for vae-recon
        for j, i in enumerate(sel):
            key = batch["key"][i]
            found[key] = {
                "category": batch["category"][i],
                "input": _uint8(x[j]),
                "recon": _uint8(x_rec[j]),
                "mask": batch["mask"][i].numpy().astype(np.uint8)
                if bool(batch["has_mask"][i])
                else np.zeros(maps[j].shape, dtype=np.uint8),
                "has_mask": bool(batch["has_mask"][i]),
                "map": maps[j].astype(np.float16),
                "frames": np.stack([_uint8(f[j]) for f in frames]) if key in best and frames else None,
            }
        if len(found) == len(chosen):
            break
    keys = [
        k
        for k in sorted(chosen, key=lambda k: (found.get(k, {}).get("category", ""), ROLES.index(chosen[k])))
        if k in found
    ]
    if len(keys) < len(chosen):
        log(f"qualitative: {len(chosen) - len(keys)} chosen image(s) not found in the test shards")
    if not keys:
        return None
    traj = [k for k in keys if found[k]["frames"] is not None]
    arrays = {
        "keys": np.array(keys),
        "categories": np.array([found[k]["category"] for k in keys]),
        "roles": np.array([chosen[k] for k in keys]),
        "scores": np.array([score[k] for k in keys]),
        # what the score is of: under infer.image_map=latent it is not the shown map's maximum
        "score_of": np.array("map" if cfg.infer.image_map == "map" else "latent part"),
        "quality": np.array([quality.get(k, np.nan) for k in keys]),
        "inputs": np.stack([found[k]["input"] for k in keys]),
        "recons": np.stack([found[k]["recon"] for k in keys]),
        "masks": np.stack([found[k]["mask"] for k in keys]),
        "maps": np.stack([found[k]["map"] for k in keys]),
        "has_masks": np.array([found[k]["has_mask"] for k in keys], dtype=bool),  # False: no ground truth to show
        "traj_keys": np.array(traj),
        "traj_timesteps": np.array(
            process.timesteps(cfg.infer.reverse_steps, cfg.infer.start_step, cfg.infer.step_mapping)
            if cfg.method != "vae-recon"
            else [],
            dtype=np.int64,
        ),
    }
    if traj:
        arrays["traj_frames"] = np.stack([found[k]["frames"] for k in traj])
    log(f"qualitative: {len(keys)} example image(s), {len(traj)} trajectory(ies)")
    return arrays
