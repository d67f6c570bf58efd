"""The latent cache: the VAE is frozen, so the training set is encoded once (the latent
distribution's mean and std, for several augmentation variants of each image) into shards,
and training reads those instead of running the encoder every step.

Two ways to hold the augmentation (`train.cache_augment`):
- `exact`: every distinct outcome of the training augmentation is encoded ((2 * translate + 1)^2
  shifts of the crop window, x 2 with 180-degree rotations): 81 per image for +-4 px. Each epoch a
  sample draws its augmentation with the very function the image path uses (`Preprocess.draw`,
  from an RNG seeded by (seed, epoch, key)) and reads that variant: the augmentation is equal in
  distribution to the published fresh draw per sample (latent-space shifts are not pixel shifts,
  so each variant is the encoding of the shifted image).
- `variants`: `train.cache_variants` fixed draws per image (variant 0 un-augmented), one picked
  uniformly per sample: cheaper to build, but a different training distribution.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decodiff.datasets.files import mark_used
from decodiff.datasets.locks import FileLock
from decodiff.datasets.manifest import Manifest
from decodiff.datasets.shard_record import member_key
from decodiff.datasets.shards import ShardSetWriter
from decodiff.datasets.stream import ShardStream, check_shards
from decodiff.datasets.transforms import Preprocess, cache_encodings
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, lock_path, preprocess_for
from decodiff.harness.progress import Progress, log
from decodiff.harness.training.distributed import device_for
from decodiff.models.vae import FrozenVAE

SHARD_SAMPLES = 32


def cache_key(cfg: Config, data: PreparedData, vae: FrozenVAE) -> str:
    spec = {
        "data": data.manifest.checksum,
        "categories": data.categories,
        "vae": vae.fingerprint or vae.source,
        "scale": vae.scale,
        "resize": cfg.data.resize,
        "crop": cfg.data.crop,
        "translate": cfg.train.translate,
        "rotate180": cfg.train.rotate180,
        "variants": cfg.train.cache_variants,
        "seed": cfg.run.seed,
    }
    if cfg.train.cache_augment == "exact":  # no random draws at build time: neither the count nor the seed matter
        spec = {**spec, "augment": "exact", "variants": None, "seed": None}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def build_latent_cache(
    cfg: Config, data: PreparedData, vae: FrozenVAE, batch_size: int = 32, quiet: bool = False
) -> tuple[str, Manifest]:
    """Encode (once) and return the cache's shard folder and manifest.

    Variant 0 of each image is un-augmented; the others are independent draws of the
    training augmentation. Training picks one variant per image per epoch.
    """
    folder = Path(cfg.run.cache_dir) / "latents" / cache_key(cfg, data, vae)
    if not (folder / "manifest.json").is_file():  # a finished cache (renamed into place) is reused without the lock
        with FileLock(lock_path(folder), what=f"latent cache {folder}"):  # one run encodes, the others reuse
            if not (folder / "manifest.json").is_file():
                return _encode(cfg, data, vae, folder, batch_size)
    mark_used(folder)
    if not quiet:
        log(f"latent cache: reusing {folder}")
    manifest = Manifest.load(folder)
    check_shards(folder, manifest, ("train",))
    return str(folder), manifest


def encodings_per_image(cfg: Config) -> int:
    """How many encodings of each training image the cache holds: every distinct augmentation (exact)
    or `train.cache_variants` draws."""
    t = cfg.train
    return cache_encodings(t.cache_augment, t.cache_variants, t.translate, t.rotate180)


def _encode(cfg: Config, data: PreparedData, vae: FrozenVAE, folder: Path, batch_size: int) -> tuple[str, Manifest]:
    device = device_for(cfg)
    vae = vae.to(device)
    pre_plain, pre_aug = preprocess_for(cfg, False), preprocess_for(cfg, True)
    rng = random.Random(cfg.run.seed)
    exact = cfg.train.cache_augment == "exact"
    table = pre_aug.variants()
    K = encodings_per_image(cfg)

    def encodings(s: dict[str, Any]) -> list[torch.Tensor]:
        if exact:
            return [pre_aug.apply(s, dx, dy, rot)["image"] for dx, dy, rot in table]
        return [pre_plain(s)["image"]] + [pre_aug(s, rng)["image"] for _ in range(K - 1)]

    tmp = folder.with_name(folder.name + ".tmp")
    # small shards (latents are ~32 KB per variant): shards are dealt whole to ranks and loader
    # workers, so many of them keep the ranks' shares even (see feed.py)
    writer = ShardSetWriter(tmp, max_count=SHARD_SAMPLES)
    pending: list[tuple[dict[str, Any], list[torch.Tensor]]] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.stack([v for _, vs in pending for v in vs])
        # an exact cache: at most batch_size images through the encoder at once (81 per image); variants:
        # all pending ones, as before (the same batches, so the same bits)
        chunk = batch_size if exact else len(x)
        parts = []
        for i in range(0, len(x), chunk):
            mean, std = vae.encode_dist(x[i : i + chunk].to(device))
            parts.append(torch.stack([mean, std], dim=1).float().cpu())
        lat = torch.cat(parts).numpy()  # [N*K, 2, C, h, w]
        for i, (s, _) in enumerate(pending):
            meta = dict(s["meta"], has_mask=False, variants=K, augment="exact" if exact else "variants")
            rec = {
                "__key__": member_key(s["key"]),
                "meta.json": json.dumps(meta).encode(),
                "latent.npy": _npy(lat[i * K : (i + 1) * K]),
            }
            writer.add(rec, split="train", category=meta["category"], label=0, defect=meta["defect"], has_mask=False)
        pending.clear()

    total = data.manifest.count("train", data.categories)
    with Progress("latent cache", total=total, unit="img") as p:
        for s in ShardStream(data.urls("train"), counts=data.counts("train")):
            pending.append((s, encodings(s)))
            if len(pending) * K >= batch_size:
                flush()
            p.update(1)
        flush()
    manifest = writer.finish(
        data.manifest.dataset,
        {
            "latent_cache": True,
            "variants": K,
            "vae": vae.source,
            "augment": "exact" if exact else "variants",
            "table": [list(v) for v in table] if exact else None,
        },
    )
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    log(f"latent cache: {total} images x {K} variants in {folder}")
    return str(folder), manifest


def latent_cache_for(acc: Any, cfg: Config, data: PreparedData, vae: FrozenVAE) -> tuple[str, Manifest]:
    """The cache for a multi-process run: the main process encodes it, then each node's first
    process (which finds it on a shared file system, or encodes its own on a node-local one),
    then everyone else reads it."""
    with acc.main_process_first():
        if acc.is_local_main_process:
            build_latent_cache(cfg, data, vae, quiet=not acc.is_main_process)
    with acc.local_main_process_first():
        return build_latent_cache(cfg, data, vae, quiet=True)


def decode_latent(rec: dict[str, Any]) -> dict[str, Any]:
    """A latent-cache record -> {"key", "latent" [K, 2, C, h, w] float32, "category"}."""
    meta = json.loads(rec["meta.json"])
    arr = np.load(io.BytesIO(rec["latent.npy"]), allow_pickle=False)
    return {"key": meta["key"], "latent": torch.from_numpy(arr), "category": meta["category"]}


class ExactPick:
    """Decodes a record of an exact cache keeping only this epoch's draw of its augmentation,
    [1, 2, C, h, w] (so the shuffle buffer holds one variant per sample). The draw is
    `Preprocess.draw` from an RNG seeded by (seed, epoch, key), as the image path draws it:
    independent of rank, worker and position, so a resumed epoch picks the same variants."""

    def __init__(self, pre: Preprocess, seed: int) -> None:
        self.pre, self.seed, self.epoch = pre, seed, 0
        self.index = {v: i for i, v in enumerate(pre.variants())}

    def pick(self, key: str) -> int:
        return self.index[self.pre.draw(random.Random(f"{self.seed}-{self.epoch}-{key}"))]

    def __call__(self, rec: dict[str, Any]) -> dict[str, Any]:
        meta = json.loads(rec["meta.json"])
        if meta.get("augment") != "exact" or meta.get("variants") != len(self.index):
            raise ValueError(
                f"latent cache record {meta['key']}: not an exact cache of {len(self.index)} augmentation "
                f"variants (it has {meta.get('variants')}, {meta.get('augment', 'variants')})"
            )
        arr = np.load(io.BytesIO(rec["latent.npy"]), allow_pickle=False)
        i = self.pick(meta["key"])
        return {"key": meta["key"], "latent": torch.from_numpy(arr[i : i + 1].copy()), "category": meta["category"]}
