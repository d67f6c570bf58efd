"""The VAE a run uses: a local pretrained folder, or a small AutoencoderKL trained here on
the training images (reconstruction + KL), from random weights or fine-tuned from a given VAE
(`vae.init_from`), cached by data, settings and init weights and reused."""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from decodiff.datasets.demo import foreign_textures
from decodiff.datasets.files import mark_used
from decodiff.datasets.locks import FileLock
from decodiff.harness.config import Config, ConfigError
from decodiff.harness.data import PreparedData, image_size, lock_path, train_image_loader
from decodiff.harness.progress import Progress, log
from decodiff.harness.training.distributed import device_for
from decodiff.models.errors import VAEError
from decodiff.models.vae import FrozenVAE, build_small_vae, load_vae, save_vae

BUILTIN_PREFIX = "builtin:"


def resolve_pretrained(path: str, key: str = "vae.pretrained") -> Path:
    """`builtin:NAME` is a VAE shipped in the package (models/weights/NAME), else a folder; `key` is the
    config key errors name."""
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX) :]
        shipped = Path(str(resources.files("decodiff.models") / "weights"))
        if not (shipped / name).is_dir():
            known = sorted(p.name for p in shipped.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
            raise VAEError(
                f"{key}={path}: no such built-in VAE (built in: "
                f"{', '.join(BUILTIN_PREFIX + k for k in known) or 'none'})"
            )
        return shipped / name
    return Path(path).expanduser()


def vae_cache_key(cfg: Config, data: PreparedData) -> str:
    spec = {
        "vae": cfg.vae.model_dump(exclude={"pretrained", "scale", "init_from", "micro_batch"}),
        "data": data.manifest.checksum,
        "categories": data.categories,
        "resize": cfg.data.resize,
        "crop": cfg.data.crop,
        "seed": cfg.run.seed,
    }
    if cfg.vae.init_from:  # the init weights by content, not by path (absent: the keys of before init_from)
        spec["init_sha256"] = init_vae(cfg).fingerprint
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def init_vae(cfg: Config) -> FrozenVAE:
    """The VAE that `vae.init_from` names, checked to have `vae.small`'s architecture, so that its
    weights can start the small VAE's training. Loaded once per process (the cache key, the budget and
    the fit all ask for it)."""
    return _init_vae(cfg.vae.init_from, cfg.vae.small)


@lru_cache(maxsize=4)
def _init_vae(path: str, small: str) -> FrozenVAE:
    folder = resolve_pretrained(path, key="vae.init_from")
    if not folder.is_dir():
        raise VAEError(f"vae.init_from={path}: not a VAE folder (expected a folder saved by `decodiff vae train`)")
    init = load_vae(folder)
    want = _architecture(build_small_vae(small).config)
    have = _architecture(init.vae.config)
    if have != want:
        diff = ", ".join(f"{k} {have.get(k)} vs {want.get(k)}" for k in sorted(want) if have.get(k) != want.get(k))
        raise ConfigError(
            f"vae.init_from={path}: its architecture does not match vae.small={small} ({diff}); "
            "give a VAE of that architecture or the vae.small it was made with"
        )
    return init


def _architecture(config: dict) -> dict:
    keys = (
        "in_channels",
        "out_channels",
        "down_block_types",
        "up_block_types",
        "block_out_channels",
        "layers_per_block",
        "latent_channels",
        "norm_num_groups",
        "mid_block_add_attention",
    )
    return {k: list(config[k]) if isinstance(config.get(k), (list, tuple)) else config.get(k) for k in keys}


def get_vae(cfg: Config, data: PreparedData) -> FrozenVAE:
    size = image_size(cfg, data.manifest)
    if cfg.vae.pretrained:
        vae = load_vae(
            resolve_pretrained(cfg.vae.pretrained),
            image_size=size,
            scale=cfg.vae.scale,
            micro_batch=cfg.vae.micro_batch,
        )
        log(f"VAE: {vae.source}" + (f" (vae.init_from={cfg.vae.init_from} not used)" if cfg.vae.init_from else ""))
        return vae
    folder = Path(cfg.run.cache_dir) / "vae" / vae_cache_key(cfg, data)
    if not (folder / "decodiff.json").is_file():  # a finished VAE (renamed into place) is reused without the lock
        with FileLock(lock_path(folder), what=f"VAE {folder}"):  # one run trains it, the others wait and reuse it
            if not (folder / "decodiff.json").is_file():
                how = f"fine-tuning {cfg.vae.init_from}" if cfg.vae.init_from else "training a small AutoencoderKL"
                log(f"VAE: no pretrained VAE given; {how} ({cfg.vae.small}) on the training images")
                fit_small_vae(cfg, data, folder)
                return load_vae(folder, image_size=size, scale=cfg.vae.scale, micro_batch=cfg.vae.micro_batch)
    vae = load_vae(folder, image_size=size, scale=cfg.vae.scale, micro_batch=cfg.vae.micro_batch)
    mark_used(folder)
    log(f"VAE: reusing {vae.source} ({folder})")
    return vae


def fit_small_vae(cfg: Config, data: PreparedData, folder: Path) -> None:
    torch.manual_seed(cfg.run.seed)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    device = device_for(cfg)
    vae = build_small_vae(cfg.vae.small)
    init = init_vae(cfg) if cfg.vae.init_from else None
    if init is not None:
        vae.load_state_dict(init.vae.state_dict())
    vae = vae.to(device).train()
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
                loss = vae_training_step(vae, x.to(device), opt, sched, cfg.vae.kl_weight)
                step += 1
                p.update(1, loss=loss)
                if step >= cfg.vae.steps:
                    break
            epoch += 1
    vae.eval()
    # scale so that latents have unit variance, as 0.18215 does for Stable Diffusion's VAE
    with torch.no_grad():
        stream, loader = train_image_loader(cfg, data, 32, seed=0, augment=False, shuffle=False)
        zs = [vae.encode(b["image"].to(device)).latent_dist.mean.cpu() for b in loader]
    scale = float(1.0 / torch.cat(zs).std())
    how = f"fine-tuned from {cfg.vae.init_from} (weights sha256 {init.fingerprint[:12]})" if init else "trained"
    desc = (
        f"small AutoencoderKL ({cfg.vae.small}) {how} by decodiff on the {data.manifest.dataset} training images "
        f"({cfg.vae.steps} steps, {cfg.vae.crop or 'full'}-px crops, "
        f"{cfg.vae.generic_images:.0%} generic photo crops, data {data.manifest.checksum[:12]})"
    )
    extra = {"steps": cfg.vae.steps, "seconds": round(time.time() - t0, 1), "data_checksum": data.manifest.checksum}
    if init is not None:
        extra["init_from"] = {
            "source": cfg.vae.init_from,
            "weights_sha256": init.fingerprint,
            "description": init.source,
        }
    save_vae(vae.cpu(), folder, scale, desc, extra=extra)
    log(f"VAE: saved {folder} (latent scale {scale:.4f})")


def vae_training_step(
    vae: AutoencoderKL, x: torch.Tensor, opt: torch.optim.Optimizer, sched, kl_weight: float
) -> float:
    """One step on a batch: L1 + MSE reconstruction of a latent sample, plus a light KL term."""
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * post.kl().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


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
