"""The VAE a run uses: a local pretrained folder, or a small AutoencoderKL trained here on
the training images (reconstruction + KL), cached by data and settings and reused."""

from __future__ import annotations

import hashlib
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from decodiff.datasets.demo import foreign_textures
from decodiff.datasets.locks import FileLock
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, image_size, lock_path, train_image_loader
from decodiff.harness.progress import Progress, log
from decodiff.harness.training.distributed import device_for
from decodiff.models.errors import VAEError
from decodiff.models.vae import FrozenVAE, build_small_vae, load_vae, save_vae

BUILTIN_PREFIX = "builtin:"


def resolve_pretrained(path: str) -> Path:
    """`builtin:NAME` is a VAE shipped in the package (models/weights/NAME), else a folder."""
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX) :]
        shipped = Path(str(resources.files("decodiff.models") / "weights"))
        if not (shipped / name).is_dir():
            known = sorted(p.name for p in shipped.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
            raise VAEError(
                f"vae.pretrained={path}: no such built-in VAE (built in: "
                f"{', '.join(BUILTIN_PREFIX + k for k in known) or 'none'})"
            )
        return shipped / name
    return Path(path).expanduser()


def vae_cache_key(cfg: Config, data: PreparedData) -> str:
    spec = {
        "vae": cfg.vae.model_dump(exclude={"pretrained", "scale"}),
        "data": data.manifest.checksum,
        "categories": data.categories,
        "resize": cfg.data.resize,
        "crop": cfg.data.crop,
        "seed": cfg.run.seed,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def get_vae(cfg: Config, data: PreparedData) -> FrozenVAE:
    size = image_size(cfg, data.manifest)
    if cfg.vae.pretrained:
        vae = load_vae(resolve_pretrained(cfg.vae.pretrained), image_size=size, scale=cfg.vae.scale)
        log(f"VAE: {vae.source}")
        return vae
    folder = Path(cfg.run.cache_dir) / "vae" / vae_cache_key(cfg, data)
    if not (folder / "decodiff.json").is_file():  # a finished VAE (renamed into place) is reused without the lock
        with FileLock(lock_path(folder), what=f"VAE {folder}"):  # one run trains it, the others wait and reuse it
            if not (folder / "decodiff.json").is_file():
                log(
                    f"VAE: no pretrained VAE given; training a small AutoencoderKL ({cfg.vae.small}) on the "
                    "training images"
                )
                fit_small_vae(cfg, data, folder)
                return load_vae(folder, image_size=size, scale=cfg.vae.scale)
    vae = load_vae(folder, image_size=size, scale=cfg.vae.scale)
    log(f"VAE: reusing {vae.source} ({folder})")
    return vae


def fit_small_vae(cfg: Config, data: PreparedData, folder: Path) -> None:
    torch.manual_seed(cfg.run.seed)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    device = device_for(cfg)
    vae = build_small_vae(cfg.vae.small).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.vae.lr, total_steps=cfg.vae.steps, pct_start=0.05)
    step, epoch = 0, 0
    t0 = time.time()
    with Progress("vae", total=cfg.vae.steps, unit="step") as p:
        while step < cfg.vae.steps:
            stream, loader = train_image_loader(cfg, data, cfg.vae.batch_size, seed=cfg.run.seed + epoch)
            stream.set_epoch(epoch)
            for batch in loader:
                x = _random_crops(batch["image"], cfg.vae.crop, gen)
                if cfg.vae.generic_images > 0:
                    x = _mix_generic(x, cfg.vae.generic_images, gen)
                x = x.to(device)
                post = vae.encode(x).latent_dist
                z = post.sample()
                rec = vae.decode(z).sample
                loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.vae.kl_weight * post.kl().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                p.update(1, loss=float(loss.detach()))
                if step >= cfg.vae.steps:
                    break
            epoch += 1
    vae.eval()
    # scale so that latents have unit variance, as 0.18215 does for Stable Diffusion's VAE
    with torch.no_grad():
        stream, loader = train_image_loader(cfg, data, 32, seed=0, augment=False, shuffle=False)
        zs = [vae.encode(b["image"].to(device)).latent_dist.mean.cpu() for b in loader]
    scale = float(1.0 / torch.cat(zs).std())
    desc = (
        f"small AutoencoderKL ({cfg.vae.small}) trained by decodiff on the {data.manifest.dataset} training images "
        f"({cfg.vae.steps} steps, {cfg.vae.crop or 'full'}-px crops, "
        f"{cfg.vae.generic_images:.0%} generic photo crops, data {data.manifest.checksum[:12]})"
    )
    save_vae(
        vae.cpu(),
        folder,
        scale,
        desc,
        extra={"steps": cfg.vae.steps, "seconds": round(time.time() - t0, 1), "data_checksum": data.manifest.checksum},
    )
    log(f"VAE: saved {folder} (latent scale {scale:.4f})")


def _random_crops(x: torch.Tensor, size: int | None, gen: torch.Generator) -> torch.Tensor:
    """One random crop per image, randomly flipped and turned: more variety per pixel computed."""
    b, _, h, w = x.shape
    if size and size < min(h, w):
        tops = torch.randint(0, h - size + 1, (b,), generator=gen).tolist()
        lefts = torch.randint(0, w - size + 1, (b,), generator=gen).tolist()
        x = torch.stack([x[i, :, t : t + size, left : left + size] for i, (t, left) in enumerate(zip(tops, lefts))])
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-1)
    k = int(torch.randint(0, 4, (), generator=gen))
    return torch.rot90(x, k, dims=(-2, -1)) if x.shape[-1] == x.shape[-2] else x


def _mix_generic(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Replace a share of the batch by crops of scikit-image's bundled photographs, so that the
    decoder also learns content the training images lack (as a general-purpose VAE has)."""
    pool = foreign_textures()
    n = int(round(share * x.shape[0]))
    size = x.shape[-1]
    out = x.clone()
    for i in range(n):
        src = pool[int(torch.randint(0, len(pool), (), generator=gen))]
        img = torch.from_numpy(np.array(src, dtype=np.float32))  # a writable copy: the pool is shared, read-only
        img = img[..., None].expand(*img.shape, 3) if img.dim() == 2 else img[..., :3]
        scale = int(torch.randint(1, 3, (), generator=gen))
        side = min(size * scale, img.shape[0], img.shape[1])
        t = int(torch.randint(0, img.shape[0] - side + 1, (), generator=gen))
        left = int(torch.randint(0, img.shape[1] - side + 1, (), generator=gen))
        crop = img[t : t + side, left : left + side].permute(2, 0, 1)[None] / 127.5 - 1.0
        out[i] = F.interpolate(crop, size=(size, size), mode="area" if side > size else "bilinear")[0]
    return out
