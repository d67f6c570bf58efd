"""A generic small VAE: the f8-small AutoencoderKL trained on broad real imagery that installs
offline (scikit-image's bundled photographs and textures), so that a run on one's own images can
fine-tune it (`vae.init_from`) instead of training a VAE from nothing.

Left out of its training, so that they can judge it: the sources of the demo's four categories
(their images are the own-data preset's test bed) and scikit-learn's two sample photographs (the
held-out set its reconstruction PSNR is measured on)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_sample_images

from decodiff.datasets.demo import CATEGORIES, DEMO_CATEGORIES
from decodiff.harness.progress import Progress, log
from decodiff.harness.training.vae_fit import vae_training_step
from decodiff.models.vae import build_small_vae, save_vae

# Bundled pictures that are drawings, not photographs or textures.
DRAWINGS = ("chessboard_GRAY", "chessboard_RGB", "color", "horse", "logo", "phantom")
# The demo's own sources: unseen by the generic VAE, so the own-data preset can be judged on the demo.
DEMO_SOURCES = tuple(sorted(CATEGORIES[c].source for c in DEMO_CATEGORIES))
HELDOUT = "scikit-learn's sample photographs (china.jpg, flower.jpg)"


def generic_picture_files() -> list[Path]:
    """The bundled picture files read from scikit-image's data folder (no pooch, no download)."""
    folder = Path(skimage.data.__file__).parent
    files = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
    return [p for p in files if p.stem not in DRAWINGS + DEMO_SOURCES]


def generic_pictures(files: list[Path]) -> list[torch.Tensor]:
    """Each picture as a 3xHxW float tensor in [-1, 1] (grey ones repeated to three channels)."""
    out = []
    for path in files:
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        out.append(torch.from_numpy(img).permute(2, 0, 1) / 127.5 - 1.0)
    return out


def multiscale_crops(
    pool: list[torch.Tensor], n: int, size: int, gen: torch.Generator, max_zoom: float = 8.0
) -> torch.Tensor:
    """`n` square crops of random pictures, of a side from `size` to `max_zoom` x `size` (log-uniform,
    bounded by the picture) resized to `size`, randomly flipped, turned and (colour) channel-permuted:
    one model for fine texture and for whole scenes."""
    out = []
    for _ in range(n):
        img = pool[int(torch.randint(0, len(pool), (), generator=gen))]
        _, h, w = img.shape
        top_zoom = max(1.0, min(max_zoom, min(h, w) / size))
        side = min(h, w, int(round(size * top_zoom ** float(torch.rand((), generator=gen)))))
        t = int(torch.randint(0, h - side + 1, (), generator=gen))
        left = int(torch.randint(0, w - side + 1, (), generator=gen))
        crop = img[None, :, t : t + side, left : left + side]
        crop = F.interpolate(crop, size=(size, size), mode="area" if side >= size else "bilinear")[0]
        if torch.rand((), generator=gen) < 0.5:
            crop = crop.flip(-1)
        crop = torch.rot90(crop, int(torch.randint(0, 4, (), generator=gen)), dims=(-2, -1))
        if torch.rand((), generator=gen) < 0.5:
            crop = crop[torch.randperm(3, generator=gen)]
        out.append(crop)
    return torch.stack(out)


def heldout_crops(size: int = 128, n: int = 32, seed: int = 0) -> torch.Tensor:
    """Fixed random square crops of the held-out photographs, resized to `size` (as
    benchmarks/own_preset_check.py measures the demo VAE)."""
    rng = np.random.default_rng(seed)
    out = []
    for img in load_sample_images().images:  # 427 x 640 x 3, uint8
        h, w, _ = img.shape
        for _ in range(n // 2):
            side = int(rng.integers(size, min(h, w) + 1))
            t, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            x = torch.from_numpy(img[t : t + side, left : left + side].copy()).permute(2, 0, 1)[None].float()
            out.append(F.interpolate(x / 127.5 - 1, size=(size, size), mode="area")[0])
    return torch.stack(out)


@torch.no_grad()
def reconstruction_psnr(vae: torch.nn.Module, x: torch.Tensor) -> float:
    """Mean PSNR (dB, images in [-1, 1]) of the VAE's reconstruction from its latent means."""
    rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    mse = F.mse_loss(rec, x, reduction="none").flatten(1).mean(1)
    return float((10 * torch.log10(4.0 / mse)).mean())


def fit_generic_vae(
    out: Path,
    steps: int,
    *,
    small: str = "f8-small",
    batch_size: int = 16,
    crop: int = 64,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    eval_every: int = 500,
) -> dict:
    """Train the generic VAE and save it into `out` (atomically); returns its record (decodiff.json's
    extra fields), with the held-out PSNR every `eval_every` steps."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    files = generic_picture_files()
    pool, heldout = generic_pictures(files), heldout_crops()
    vae = build_small_vae(small).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    curve: dict[int, float] = {}
    t0 = time.time()
    with Progress("generic vae", total=steps, unit="step") as p:
        for step in range(1, steps + 1):
            loss = vae_training_step(vae, multiscale_crops(pool, batch_size, crop, gen), opt, sched, kl_weight)
            p.update(1, loss=loss)
            if step % eval_every == 0 or step == steps:
                vae.eval()
                curve[step] = round(reconstruction_psnr(vae, heldout), 2)
                vae.train()
                log(f"generic VAE: step {step}: held-out PSNR {curve[step]} dB ({time.time() - t0:.0f} s)")
    vae.eval()
    with torch.no_grad():  # latent scale: unit variance on the training imagery, as fit_small_vae does on its own
        sample = multiscale_crops(pool, 64, 128, torch.Generator().manual_seed(seed + 1))
        scale = float(1.0 / vae.encode(sample).latent_dist.mean.std())
    names = ", ".join(p.stem for p in files)
    desc = (
        f"generic small AutoencoderKL ({small}) trained by `decodiff vae train-generic --steps {steps}` on random "
        f"{crop}-px multi-scale crops of scikit-image's bundled photographs and textures ({names}); never saw the "
        f"demo's sources ({', '.join(DEMO_SOURCES)}) nor {HELDOUT}, on which it reconstructs 128-px crops at "
        f"{curve[steps]} dB PSNR"
    )
    record = {
        "steps": steps,
        "seconds": round(time.time() - t0, 1),
        "training_pictures": [p.name for p in files],
        "settings": {
            "small": small,
            "batch_size": batch_size,
            "crop": crop,
            "lr": lr,
            "kl_weight": kl_weight,
            "seed": seed,
        },
        "heldout_psnr_db": {str(k): v for k, v in curve.items()},
    }
    save_vae(vae, out, scale, desc, extra=record)
    log(f"generic VAE: saved {out} (latent scale {scale:.4f}, held-out PSNR {curve[steps]} dB)")
    return record
