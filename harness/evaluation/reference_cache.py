"""The test set's model-independent half, kept on disk: each test image's latent z = Encoder(x)
and its pixel reference Decoder(z). They depend on the VAE, the test images and how they are
batched, never on the trained UNet, so every later evaluation on the same VAE and test set (a
sweep's trials, `evaluate` of another checkpoint, a rerun) skips one encode and one of its two
decodes: on a CPU, where the VAE is most of the evaluation, that is a third of its time
(benchmarks/eval_speed.py, README).

The key holds everything that can change those tensors by a bit (VAE weights, test shards'
checksums, resize/crop, inference batch size, VAE images per call, precision, memory layout),
so a cached evaluation gives the numbers of an uncached one, bit for bit (tested). One file per
test shard (evaluation batches never mix shards), written whole under a temporary name and
renamed: an interrupted evaluation leaves either a complete file or none. A file that cannot be
read, or that does not hold the batch's keys, is recomputed and written again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decodiff.datasets.files import write_atomic
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, image_size
from decodiff.harness.progress import log
from decodiff.models.vae import FrozenVAE

# auto (infer.reference_cache: null) keeps the cache on a CPU below this size (MVTec-AD's 1,725 test
# images at 256 px: 1.4 GB); off on a GPU, where a decode costs little (not measured there)
AUTO_LIMIT_BYTES = 2 * 1024**3


def reference_cache_key(cfg: Config, data: PreparedData, vae: FrozenVAE, channels_last: bool) -> str:
    spec = {
        "data": data.manifest.checksum,
        "vae": vae.fingerprint or vae.source,
        "scale": vae.scale,
        "resize": cfg.data.resize,
        "crop": cfg.data.crop,
        "batch_size": cfg.infer.batch_size,
        "micro_batch": cfg.vae.micro_batch,
        "precision": cfg.infer.precision,
        "channels_last": channels_last,
        "pixel_reference": cfg.infer.pixel_reference,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def use_reference_cache(cfg: Config, data: PreparedData, device: torch.device) -> bool:
    """infer.reference_cache, or for None: on a CPU when the test set's references fit AUTO_LIMIT_BYTES."""
    if cfg.infer.reference_cache is not None:
        return cfg.infer.reference_cache
    side = image_size(cfg, data.manifest)
    size = data.manifest.count("test", data.categories) * 3 * side * side * 4
    return device.type == "cpu" and size <= AUTO_LIMIT_BYTES


class ReferenceCache:
    """Per-shard files of (keys, z, x_ref) under <cache_dir>/references/<key>/. `lookup` answers a
    batch from a shard's file; `add` collects a shard's computed batches and writes the file once
    the shard's last sample is in."""

    def __init__(
        self, folder: Path, names: dict[str, str], counts: dict[str, int], store_ref: bool, channels_last: bool
    ) -> None:
        self.folder = folder
        self.layout = torch.channels_last if channels_last else torch.contiguous_format  # as the VAE returned them
        self.names = names  # shard url -> manifest shard name
        self.counts = counts
        self.store_ref = store_ref  # False with pixel_reference "input": x_ref is the image itself
        self.loaded: dict[str, dict[str, Any] | None] = {}
        self.pending: dict[str, list[tuple[list[str], torch.Tensor, torch.Tensor | None]]] = {}
        self.hits = self.misses = 0

    def _file(self, url: str) -> Path:
        return self.folder / f"{self.names[url]}.npz"

    def _load(self, url: str) -> dict[str, Any] | None:
        if url not in self.loaded:
            path, entry = self._file(url), None
            if path.is_file():
                try:
                    with np.load(path, allow_pickle=False) as f:
                        keys = [str(k) for k in f["keys"]]
                        entry = {
                            "index": {k: i for i, k in enumerate(keys)},
                            "z": f["z"],
                            "x_ref": f["x_ref"] if self.store_ref else None,
                        }
                except (OSError, ValueError, KeyError) as e:
                    log(f"reference cache: {path} unreadable ({e}); computing it again")
            self.loaded[url] = entry
        return self.loaded[url]

    def lookup(
        self, url: str, keys: list[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(z, x_ref) of these images from the shard's file, or None (not cached)."""
        entry = self._load(url)
        if entry is None or any(k not in entry["index"] for k in keys):
            self.misses += len(keys)
            return None
        rows = [entry["index"][k] for k in keys]
        z = torch.from_numpy(entry["z"][rows]).to(device).contiguous(memory_format=self.layout)
        x_ref = None
        if entry["x_ref"] is not None:
            x_ref = torch.from_numpy(entry["x_ref"][rows]).to(device).contiguous(memory_format=self.layout)
        self.hits += len(keys)
        return z, x_ref

    def add(self, url: str, keys: list[str], z: torch.Tensor, x_ref: torch.Tensor) -> None:
        """A computed batch of shard `url`; the shard's file is written when all its samples are in."""
        part = self.pending.setdefault(url, [])
        part.append((list(keys), z.detach().float().cpu(), x_ref.detach().float().cpu() if self.store_ref else None))
        if sum(len(k) for k, _, _ in part) < self.counts[url]:
            return
        parts = self.pending.pop(url)
        keys_all = [k for ks, _, _ in parts for k in ks]
        arrays = {"keys": np.array(keys_all), "z": torch.cat([p[1] for p in parts]).numpy()}
        if self.store_ref:
            arrays["x_ref"] = torch.cat([p[2] for p in parts if p[2] is not None]).numpy()
        write_atomic(self._file(url), lambda p: np.savez(p, **arrays))


def reference_cache_for(
    cfg: Config, data: PreparedData, vae: FrozenVAE, device: torch.device, channels_last: bool
) -> ReferenceCache | None:
    """The evaluation's cache (None when infer.reference_cache, or its auto rule, says no)."""
    if not use_reference_cache(cfg, data, device):
        return None
    urls = data.urls("test")
    names = data.manifest.shard_names("test", data.categories)
    if len(names) != len(urls):
        raise ValueError(f"{len(urls)} test shard URLs for {len(names)} manifest shards")
    counts = dict(zip(urls, data.counts("test")))
    folder = Path(cfg.run.cache_dir) / "references" / reference_cache_key(cfg, data, vae, channels_last)
    return ReferenceCache(folder, dict(zip(urls, names)), counts, cfg.infer.pixel_reference == "vae", channels_last)
