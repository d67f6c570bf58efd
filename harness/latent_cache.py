"""The latent cache: the VAE is frozen, so the training set is encoded once (the latent
distribution's mean and std, for several augmentation variants of each image) into shards,
and training reads those instead of running the encoder every step."""
from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decodiff.datasets.locks import FileLock
from decodiff.datasets.manifest import Manifest
from decodiff.datasets.shards import ShardSetWriter, member_key
from decodiff.datasets.stream import ShardStream, check_shards
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, device_for, lock_path, preprocess_for
from decodiff.harness.progress import Progress, log
from decodiff.models.vae import FrozenVAE


SHARD_SAMPLES = 32


def cache_key(cfg: Config, data: PreparedData, vae: FrozenVAE) -> str:
    spec = {"data": data.manifest.checksum, "categories": data.categories, "vae": vae.fingerprint or vae.source, "scale": vae.scale,
            "resize": cfg.data.resize, "crop": cfg.data.crop, "translate": cfg.train.translate,
            "rotate180": cfg.train.rotate180, "variants": cfg.train.cache_variants, "seed": cfg.run.seed}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def build_latent_cache(cfg: Config, data: PreparedData, vae: FrozenVAE, batch_size: int = 32,
                       quiet: bool = False) -> tuple[str, Manifest]:
    """Encode (once) and return the cache's shard folder and manifest.

    Variant 0 of each image is un-augmented; the others are independent draws of the
    training augmentation. Training picks one variant per image per epoch.
    """
    folder = Path(cfg.run.cache_dir) / "latents" / cache_key(cfg, data, vae)
    with FileLock(lock_path(folder), what=f"latent cache {folder}"):  # one run encodes, the others reuse
        if (folder / "manifest.json").is_file():
            if not quiet:
                log(f"latent cache: reusing {folder}")
            manifest = Manifest.load(folder)
            check_shards(folder, manifest, ("train",))
            return str(folder), manifest
        return _encode(cfg, data, vae, folder, batch_size)


def _encode(cfg: Config, data: PreparedData, vae: FrozenVAE, folder: Path, batch_size: int) -> tuple[str, Manifest]:
    device = device_for(cfg)
    vae = vae.to(device)
    pre_plain, pre_aug = preprocess_for(cfg, False), preprocess_for(cfg, True)
    rng = random.Random(cfg.run.seed)
    K = cfg.train.cache_variants
    tmp = folder.with_name(folder.name + ".tmp")
    # small shards (latents are ~32 KB per variant): shards are dealt whole to ranks and loader
    # workers, so many of them keep the ranks' shares even (see train_feed.py)
    writer = ShardSetWriter(tmp, max_count=SHARD_SAMPLES)
    pending: list[tuple[dict[str, Any], list[torch.Tensor]]] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.stack([v for _, vs in pending for v in vs]).to(device)
        mean, std = vae.encode_dist(x)
        lat = torch.stack([mean, std], dim=1).float().cpu().numpy()  # [N*K, 2, C, h, w]
        for i, (s, _) in enumerate(pending):
            meta = dict(s["meta"], has_mask=False, variants=K)
            rec = {"__key__": member_key(s["key"]), "meta.json": json.dumps(meta).encode(),
                   "latent.npy": _npy(lat[i * K:(i + 1) * K])}
            writer.add(rec, split="train", category=meta["category"], label=0, defect=meta["defect"], has_mask=False)
        pending.clear()

    total = data.manifest.count("train", data.categories)
    with Progress("latent cache", total=total, unit="img") as p:
        for s in ShardStream(data.urls("train"), counts=data.counts("train")):
            pending.append((s, [pre_plain(s)["image"]] + [pre_aug(s, rng)["image"] for _ in range(K - 1)]))
            if len(pending) * K >= batch_size:
                flush()
            p.update(1)
        flush()
    manifest = writer.finish(data.manifest.dataset, {"latent_cache": True, "variants": K, "vae": vae.source})
    if folder.exists():
        import shutil

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
