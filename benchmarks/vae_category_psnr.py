"""How well a VAE reconstructs each category's normal test images (README "The image score from the
latent part"): a category the VAE blurs leaves a pixel discrepancy that is high everywhere, which is
where DeCo-Diff's map loses its defects (the demo's grass). Offline; prints one JSON line per VAE.

    .venv/bin/python benchmarks/vae_category_psnr.py builtin:demo-vae [OTHER_VAE ...] [key=value ...]

A VAE is `builtin:NAME` or a folder written by `decodiff vae train`; key=value overrides pick the data
(default: the demo preset's data set, e.g. "data.demo.categories=[grass]").
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from decodiff.harness.config import build_config
from decodiff.harness.data import image_size, prepare_data, test_loader
from decodiff.harness.training.vae_fit import resolve_pretrained
from decodiff.models.vae import load_vae


def category_psnr(vae_name: str, overrides: list[str]) -> dict[str, float]:
    """Mean PSNR (dB, images in [-1, 1]) of Decoder(Encoder(x)) per category over its normal test images."""
    cfg = build_config("demo", overrides)
    data = prepare_data(cfg)
    vae = load_vae(resolve_pretrained(vae_name), image_size=image_size(cfg, data.manifest))
    per: dict[str, list[float]] = {}
    with torch.no_grad():
        for batch in test_loader(cfg, data):
            x = batch["image"]
            mse = (vae.decode(vae.encode(x)).clamp(-1, 1) - x).pow(2).flatten(1).mean(1)
            for cat, label, m in zip(batch["category"], batch["label"].tolist(), mse.tolist()):
                if label == 0:
                    per.setdefault(cat, []).append(10 * np.log10(4.0 / m))
    return {c: round(float(np.mean(v)), 2) for c, v in sorted(per.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("items", nargs="+", help="VAEs (builtin:NAME or folders), then key=value data overrides")
    args = p.parse_args()
    vaes = [a for a in args.items if "=" not in a]
    overrides = [a for a in args.items if "=" in a]
    for name in vaes:
        print(json.dumps({"vae": name, "overrides": overrides, "psnr_db": category_psnr(name, overrides)}))


if __name__ == "__main__":
    main()
