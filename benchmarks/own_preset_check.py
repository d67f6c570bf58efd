"""Evidence for configs/own.yaml (README "Your own images on a CPU"): how well the shipped demo VAE
reconstructs photographs it never saw (scikit-learn's two sample photographs, held out of every
choice) against the demo images it was trained on, and what a training step costs on this machine
for the image sizes and UNet presets the preset could use. Offline; prints one JSON line.

    .venv/bin/python benchmarks/own_preset_check.py [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data, train_image_loader
from decodiff.harness.training import budget
from decodiff.harness.training.vae_fit import resolve_pretrained
from decodiff.harness.training.vae_generic import heldout_crops  # china.jpg, flower.jpg: random square crops
from decodiff.models.vae import load_vae


def psnr(vae, x: torch.Tensor) -> float:
    with torch.no_grad():
        rec = vae.decode(vae.encode(x)).clamp(-1, 1)
    mse = F.mse_loss(rec, x, reduction="none").flatten(1).mean(1)
    return float((10 * torch.log10(4.0 / mse)).mean())  # range [-1, 1]: peak-to-peak 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", default=".cache/decodiff")
    args = ap.parse_args()
    cfg = build_config("demo", [f"run.cache_dir={args.cache_dir}"])
    data = prepare_data(cfg)
    vae = load_vae(resolve_pretrained(cfg.vae.pretrained), image_size=128)
    _, loader = train_image_loader(cfg, data, 32, seed=0, augment=False, shuffle=False)
    demo = next(iter(loader))["image"]
    out = {
        "vae_psnr_db": {
            "demo_train_images": round(psnr(vae, demo), 2),
            "heldout_photos": round(psnr(vae, heldout_crops(128, 32)), 2),
        },
        "train_seconds_per_step": {},
        "load": open("/proc/loadavg").read().split()[:3],
    }
    for size in ("tiny", "demo", "XS"):
        for px in (128, 256):
            c = build_config("demo", [f"run.cache_dir={args.cache_dir}", f"model.size={size}", f"data.demo.size={px}"])
            d = prepare_data(c)
            t = time.perf_counter()
            r = budget.measure(c, d)
            out["train_seconds_per_step"][f"{size}@{px}px"] = {
                "train_step": round(r["train_step"], 3),
                "eval_image": round(r["eval_image"], 4),
                "measured_in_s": round(time.perf_counter() - t, 1),
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
