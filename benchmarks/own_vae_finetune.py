"""Evidence for `vae.init_from` and `vae.steps` in configs/own.yaml (README "The shipped generic VAE"):
how well the small VAE reconstructs a user's held-out normal images after fine-tuning the shipped generic
VAE for a number of steps, against the generic VAE as it is and against a VAE trained from random weights,
and what each fit costs on this machine. The user's images: a folder of real photographs that are not the
demo's categories and that the generic VAE never saw (scikit-learn's two sample photographs and
matplotlib's Grace Hopper, one category each: random square crops of them, resized to 128 px by the
preset), laid out as the own-data preset reads it; the reader's own 20 % test split of the normals is the
held-out part. Offline; prints one JSON line per fit as it finishes.

    .venv/bin/python benchmarks/own_vae_finetune.py --work DIR [--fits 200,500,1000,scratch:500,lr3e-4:500]
    .venv/bin/python benchmarks/own_vae_finetune.py --work DIR --fits 0 --per-photo 300   # the folder only (seconds)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_sample_images

from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data, test_loader, train_image_loader
from decodiff.harness.training.vae_fit import get_vae, resolve_pretrained
from decodiff.models.vae import load_vae


def photo_folder(root: Path, per_photo: int = 60, seed: int = 0) -> Path:
    """<root>/<photo>/normal/NNN.png: random square crops (side 96 px to the short side) of each photo, and
    <root>/<photo>/anomalous/NNN.png: a few crops with a grey square pasted in (the reader wants both)."""
    if (root / "done").is_file():
        return root
    rng = np.random.default_rng(seed)
    photos = dict(zip(("china", "flower"), load_sample_images().images))
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photos["hopper"] = np.asarray(Image.open(f).convert("RGB"))
    for name, img in photos.items():
        h, w, _ = img.shape
        for kind, n in (("normal", per_photo), ("anomalous", 6)):
            (root / name / kind).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = int(rng.integers(96, min(h, w) + 1))
                t, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                crop = img[t : t + side, left : left + side].copy()
                if kind == "anomalous":
                    s = side // 6
                    crop[side // 2 - s : side // 2 + s, side // 2 - s : side // 2 + s] = 128
                Image.fromarray(crop).save(root / name / kind / f"{i:03d}.png")
    (root / "done").write_text("")
    return root


@torch.no_grad()
def psnr(vae, images: torch.Tensor) -> float:
    rec = vae.decode(vae.encode(images)).clamp(-1, 1)
    mse = F.mse_loss(rec, images, reduction="none").flatten(1).mean(1)
    return round(float((10 * torch.log10(4.0 / mse)).mean()), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True, help="folder for the photo set and the caches")
    ap.add_argument("--init", default="builtin:generic-vae")
    ap.add_argument("--fits", default="0,200,500,1000,scratch:500")
    ap.add_argument("--per-photo", type=int, default=60, help="normal crops per photograph (a bigger folder)")
    args = ap.parse_args()
    root = photo_folder(args.work / "photos", per_photo=args.per_photo)
    base = [f"data.root={root}", f"run.cache_dir={args.work / 'cache'}"]
    cfg = build_config("own", base)
    data = prepare_data(cfg)
    batches = list(test_loader(cfg, data))
    held = torch.cat([b["image"][torch.as_tensor(b["label"]) == 0] for b in batches])  # the held-out normals
    _, loader = train_image_loader(cfg, data, 64, seed=0, augment=False, shuffle=False)
    seen = next(iter(loader))["image"]
    for fit in args.fits.split(","):
        kind, _, steps = fit.rpartition(":")
        over = [f"vae.steps={max(int(steps), 1)}", f"vae.init_from={'null' if kind == 'scratch' else args.init}"]
        if kind.startswith("lr"):
            over.append(f"vae.lr={kind[2:]}")
        t = time.perf_counter()
        if int(steps) == 0:
            vae = load_vae(resolve_pretrained(args.init), image_size=128)
        else:
            vae = get_vae(build_config("own", base + over), data)
        row = {
            "fit": fit,
            "heldout_normal_psnr_db": psnr(vae, held),
            "train_normal_psnr_db": psnr(vae, seen),
            "fit_seconds": round(time.perf_counter() - t, 1),
            "heldout_images": len(held),
            "load": open("/proc/loadavg").read().split()[:3],
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
