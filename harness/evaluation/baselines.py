"""Simple methods scored in the same evaluation as DeCo-Diff, on the same test images, so that a
report shows at once whether the diffusion model adds anything on the data (`infer.baselines`):

- `vae-recon`: the VAE's own reconstruction error |Decoder(Encoder(x)) - x| (the pixel part of
  the map, as `method=vae-recon` computes it at the default clipping level, whatever the run's:
  `baseline_map_settings`). DeCo-Diff's evaluation decodes Decoder(z) anyway (its pixel
  reference), so this costs one map, not another decode;
- `latent-nn`: the distance of each test latent 3x3 patch to its nearest training patch of the
  category (models/latent_nn.py), blurred and enlarged as the latent part of DeCo-Diff's map.

Their records carry `"method"`; DeCo-Diff's own records are unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from decodiff.datasets.files import mark_used
from decodiff.datasets.manifest import Manifest
from decodiff.datasets.shard_record import decode_record
from decodiff.datasets.stream import ShardStream, shard_urls
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, preprocess_for
from decodiff.harness.progress import log
from decodiff.harness.training.latent_cache import cache_key, decode_latent
from decodiff.models.anomaly_map import MapSettings, bilinear_resize, image_score, pixel_discrepancy
from decodiff.models.blur import gaussian_blur
from decodiff.models.latent_nn import LatentNearestNeighbour
from decodiff.models.reconstruction import Reconstruction
from decodiff.models.vae import FrozenVAE

BASELINES = ("vae-recon", "latent-nn")
DESCRIPTIONS = {
    "deco-diff": "DeCo-Diff",
    "vae-recon": "baseline vae-recon: the VAE's reconstruction error |Decoder(Encoder(x)) - x|",
    "latent-nn": "baseline latent-nn: distance of each latent 3x3 patch to its nearest training patch "
    "(PatchCore's idea on the VAE's latents)",
}


@dataclass
class Baselines:
    """The baselines of one evaluation and the seconds they took (bank building included)."""

    names: list[str]
    settings: MapSettings
    vae: FrozenVAE
    nn: LatentNearestNeighbour | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def maps(
        self, x: torch.Tensor, rec: Reconstruction, categories: list[str], pixel_reference: str
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name -> (maps [B, H, W], image scores [B]) for this batch."""
        out = {}
        size = (x.shape[-2], x.shape[-1])
        for name in self.names:
            t0 = time.perf_counter()
            if name == "vae-recon":
                # Decoder(z) is DeCo-Diff's pixel reference: reused, not decoded twice
                x_vae = rec.x_ref if pixel_reference == "vae" else self.vae.decode(rec.z)
                m = pixel_discrepancy(x_vae, x, self.settings)
            else:
                d = gaussian_blur(self.nn.distances(rec.z, categories), self.settings.sigma_latent)
                m = bilinear_resize(d, size)
            out[name] = (m, image_score(m, self.settings))
            if m.is_cuda:  # the kernels are queued: their cost, not their launch, is the baseline's
                torch.cuda.synchronize(m.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return out


def baselines_for(
    cfg: Config, data: PreparedData, vae: FrozenVAE, device: torch.device, settings: MapSettings
) -> Baselines | None:
    """The config's baselines, ready to score (the latent-nn bank built); None when there are none."""
    names = [b for b in cfg.infer.baselines if b != cfg.method]  # a vae-recon run is its own baseline
    if not names:
        return None
    b = Baselines(names, baseline_map_settings(settings), vae)
    if "latent-nn" in names:
        t0 = time.perf_counter()
        b.nn = LatentNearestNeighbour(cfg.infer.nn_bank, seed=cfg.run.seed)
        source = _fill_bank(b.nn, cfg, data, vae, device)
        sizes = b.nn.fit()
        b.seconds["latent-nn"] = time.perf_counter() - t0
        log(
            f"latent-nn: banks of {min(sizes.values())}-{max(sizes.values())} patches per category from {source} "
            f"in {b.seconds['latent-nn']:.1f}s"
        )
    return b


def baseline_map_settings(settings: MapSettings) -> MapSettings:
    """The run's map settings for a baseline's one-part map, but the published clipping levels: the
    clipping balances DeCo-Diff's two parts, and tuning it for DeCo-Diff (the demo preset clips its pixel
    part at 0.2) must not move the yardstick (vae-recon's image AUROC on the demo: 67.9 at 0.4, 56.0 at 0.2,
    where its maps saturate)."""
    published = MapSettings()
    return replace(settings, combination="pixel", gamma_p=published.gamma_p, gamma_l=published.gamma_l)


@torch.no_grad()
def _fill_bank(
    nn: LatentNearestNeighbour, cfg: Config, data: PreparedData, vae: FrozenVAE, device: torch.device
) -> str:
    """Normal training latents (the latent distribution's mean, un-augmented): from the training's
    latent cache where there is one (variant 0), else encoded here."""
    folder = Path(cfg.run.cache_dir) / "latents" / cache_key(cfg, data, vae)
    if (folder / "manifest.json").is_file():
        mark_used(folder)
        manifest = Manifest.load(folder)
        for rec in ShardStream(shard_urls(str(folder), manifest, "train", data.categories), decode=decode_latent):
            nn.add(rec["latent"][0, 0][None], [rec["category"]])
        return "the latent cache"
    pre = preprocess_for(cfg, False)
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            x = torch.stack([s["image"] for s in batch]).to(device)
            nn.add(vae.to(device).encode(x), [s["category"] for s in batch])
            batch.clear()

    for s in ShardStream(data.urls("train"), decode=decode_record):
        batch.append({"image": pre(s)["image"], "category": s["meta"]["category"]})
        if len(batch) == cfg.infer.batch_size:
            flush()
    flush()
    return "the training images (encoded)"
