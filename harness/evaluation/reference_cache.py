"""The test set's model-independent half, kept on disk: each test image's latent z = Encoder(x)
and its pixel reference Decoder(z). They depend on the VAE, the test images and how they are
batched, never on the trained UNet, so every later evaluation on the same VAE and test set (a
sweep's trials, `evaluate` of another checkpoint, a rerun) skips one encode and one of its two
decodes: on a CPU, where the VAE is most of the evaluation, that is a third of its time
(benchmarks/eval_speed.py, README).

The key holds everything that can change those tensors by a bit (VAE weights, test shards'
checksums, resize/crop, inference batch size, VAE images per call, precision, memory layout,
device, CPU instruction set or GPU model, torch and diffusers versions),
so a cached evaluation gives the numbers of an uncached one, bit for bit (tested). One file per
evaluation batch (batches never mix shards), written whole under a temporary name and renamed;
a file that cannot be read, or that holds other images, is computed and written again.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import diffusers
import numpy as np
import torch

from decodiff.datasets.files import mark_used, write_atomic
from decodiff.datasets.imageio import DataError
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, image_size
from decodiff.harness.progress import log
from decodiff.models.vae import FrozenVAE

# auto (infer.reference_cache: null) keeps the cache on a CPU below this size (MVTec-AD's 1,725 test
# images at 256 px: 1.4 GB); off on a GPU, where a decode costs little (not measured there)
AUTO_LIMIT_BYTES = 2 * 1024**3


def reference_cache_key(
    cfg: Config, data: PreparedData, vae: FrozenVAE, channels_last: bool, device: torch.device | None = None
) -> str:
    device = device or torch.device("cpu")
    spec = {
        # kernels round differently per device, CPU instruction set and library version; a cache folder
        # may be shared by machines and outlive an upgrade
        "device": device.type,
        "kernels": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
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
    if device.type != "cpu":
        return False
    try:
        side = image_size(cfg, data.manifest)
    except DataError:  # images of several sizes: the evaluation says so where it matters, auto stays off
        return False
    return data.manifest.count("test", data.categories) * 3 * side * side * 4 <= AUTO_LIMIT_BYTES


class ReferenceCache:
    """One file of (keys, z, x_ref) per evaluation batch under <cache_dir>/references/<key>/<shard>/,
    named by the batch's first position in its shard (batches start at each shard's first sample,
    in steps of infer.batch_size, which the key holds): memory stays one batch, and an evaluation
    stopped halfway leaves the batches it finished."""

    def __init__(self, folder: Path, names: dict[str, str], store_ref: bool, channels_last: bool) -> None:
        self.folder = folder
        self.names = names  # shard url -> manifest shard name
        self.store_ref = store_ref  # False with pixel_reference "input": x_ref is the image itself
        self.layout = torch.channels_last if channels_last else torch.contiguous_format  # as the VAE returned them
        self.hits = self.misses = 0
        self.broken = False  # set when a write failed: the rest of the evaluation does not try again

    def _file(self, url: str, start: int) -> Path:
        return self.folder / self.names[url] / f"{start:06d}.npz"

    def lookup(
        self, url: str, start: int, keys: list[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(z, x_ref) of the batch at position `start` of shard `url`, or None (not kept, or kept for other keys)."""
        path = self._file(url, start)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as f:
                    if [str(k) for k in f["keys"]] == keys:
                        z = torch.from_numpy(f["z"]).to(device).contiguous(memory_format=self.layout)
                        x_ref = None
                        if self.store_ref:
                            x_ref = torch.from_numpy(f["x_ref"]).to(device).contiguous(memory_format=self.layout)
                        self.hits += len(keys)
                        return z, x_ref
                    log(f"reference cache: {path} holds other images; computing this batch again")
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # empty, cut, foreign
                log(f"reference cache: {path} unreadable ({e}); computing this batch again")
        self.misses += len(keys)
        return None

    def add(self, url: str, start: int, keys: list[str], z: torch.Tensor, x_ref: torch.Tensor) -> None:
        """Keep a computed batch (written whole under a temporary name, then renamed)."""
        if self.broken:
            return
        arrays = {"keys": np.array(keys), "z": z.detach().float().cpu().numpy()}
        if self.store_ref:
            arrays["x_ref"] = x_ref.detach().float().cpu().numpy()
        try:
            write_atomic(self._file(url, start), lambda p: np.savez(p, **arrays))
        except OSError as e:  # a full disk or a read-only cache slows later evaluations; it must not stop this one
            self.broken = True
            log(f"reference cache: cannot write under {self.folder} ({e}); this evaluation keeps nothing")


def reference_cache_for(
    cfg: Config, data: PreparedData, vae: FrozenVAE, device: torch.device, channels_last: bool
) -> ReferenceCache | None:
    """The evaluation's cache (None when infer.reference_cache, or its auto rule, says no)."""
    if not use_reference_cache(cfg, data, device):
        return None
    names = dict(zip(data.urls("test"), data.manifest.shard_names("test", data.categories)))  # urls are made from names
    folder = Path(cfg.run.cache_dir) / "references" / reference_cache_key(cfg, data, vae, channels_last, device)
    mark_used(folder)  # nothing to mark before the first evaluation writes it
    return ReferenceCache(folder, names, cfg.infer.pixel_reference == "vae", channels_last)
