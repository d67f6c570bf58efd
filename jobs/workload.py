"""The work one run does, in FLOPs per phase: fitting the small VAE, building the latent cache,
training the UNet, evaluating (the correction sampler plus VAE encode/decode).

Reads a resolved config as a plain dict (`Config.to_dict()`), so it depends on no harness code.
FLOPs are counted by torch's FLOP counter on the `meta` device (models/flops.py): nothing is
allocated, even for UNet-XL and the Stable-Diffusion VAE.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from decodiff.jobs.datasizes import DataSize, data_size
from decodiff.jobs.errors import JobError

TRAIN_FACTOR = 3.0  # forward + backward ~ 3 forward passes (models/flops.py)
# The Stable-Diffusion KL-f8 autoencoder (sd-vae-ft-ema/-mse), used when a pretrained folder is
# named but not readable here (planning on a laptop for a cluster's files).
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32,
              mid_block_add_attention=True)


@dataclass
class Phase:
    name: str  # "vae fit" | "latent cache" | "train" | "evaluate"
    gflops: float
    kind: str  # "train" | "infer": which device rate applies
    precision: str = "no"
    distributed: bool = False  # spread over all training processes
    detail: str = ""


@dataclass
class Workload:
    """One run (or one sweep trial): its data, its phases and the training it shares."""

    label: str
    data: DataSize
    model: str
    image_size: int
    latent_size: int
    train_steps: int
    batch_size: int
    phases: list[Phase] = field(default_factory=list)
    group: str = ""  # trials with the same group share one training (and VAE, latent cache)

    def training_phases(self) -> list[Phase]:
        return [p for p in self.phases if p.name != "evaluate"]

    def eval_phases(self) -> list[Phase]:
        return [p for p in self.phases if p.name == "evaluate"]


def unet_forward_gflops(size: str, num_classes: int, latent: int, channels: int = 4, conditional: bool = True) -> float:
    """Forward GFLOPs per sample. The category is one context token whatever the number of
    categories, so the count does not depend on it (counted once per preset and latent size)."""
    return _unet_gflops(size, latent, channels)


@lru_cache(maxsize=64)
def _unet_gflops(size: str, latent: int, channels: int) -> float:
    from decodiff.models.flops import preset_cost

    return float(preset_cost(size, num_classes=1, latent=latent, channels=channels)["gflops_forward"])


def _vae_spec(vae: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if vae.get("pretrained"):
        cfg_file = Path(vae["pretrained"]) / "config.json"
        if cfg_file.is_file():
            d = json.loads(cfg_file.read_text())
            keys = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "mid_block_add_attention")
            return f"pretrained {vae['pretrained']}", {k: (tuple(d[k]) if isinstance(d[k], list) else d[k])
                                                      for k in keys if k in d}
        return "Stable-Diffusion KL-f8 (pretrained folder not readable here)", dict(SD_VAE)
    from decodiff.models.vae import SMALL_VAE_PRESETS

    preset = vae.get("small", "f8-small")
    if preset not in SMALL_VAE_PRESETS:
        raise JobError(f"vae.small={preset}: unknown preset")
    p = dict(SMALL_VAE_PRESETS[preset])
    p["norm_num_groups"] = min(16, p["block_out_channels"][0])
    p["mid_block_add_attention"] = False
    return f"small VAE {preset}", p


@lru_cache(maxsize=32)
def _vae_gflops_cached(spec_json: str, image: int) -> tuple[float, float]:
    import torch
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    spec = json.loads(spec_json)
    n = len(spec["block_out_channels"])
    with torch.device("meta"):
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                            up_block_types=("UpDecoderBlock2D",) * n, **spec).eval()
        x = torch.zeros(1, 3, image, image)
        with torch.no_grad():
            with FlopCounterMode(display=False) as enc:
                z = vae.encode(x).latent_dist.mean
            with FlopCounterMode(display=False) as dec:
                vae.decode(z)
    return enc.get_total_flops() / 1e9, dec.get_total_flops() / 1e9


def vae_gflops(vae: dict[str, Any], image: int) -> tuple[str, float, float, int]:
    """(description, encode GFLOPs, decode GFLOPs, down-sampling factor) for one image."""
    desc, spec = _vae_spec(vae)
    enc, dec = _vae_gflops_cached(json.dumps(spec, sort_keys=True, default=list), image)
    return desc, enc, dec, 2 ** (len(spec["block_out_channels"]) - 1)


def image_side(cfg: dict[str, Any], size: DataSize) -> int:
    d = cfg["data"]
    if d.get("crop"):
        return int(d["crop"])
    if d.get("resize"):
        return int(d["resize"])
    if d.get("dataset") == "demo":
        return int(d["demo"]["size"])
    return 256


def train_steps(cfg: dict[str, Any], n_train: int) -> int:
    """Optimizer steps, as harness/training/loop.py counts them: epochs over the data, capped by max_steps."""
    t = cfg["train"]
    per_epoch = max(1, math.ceil(n_train / t["batch_size"]))
    return min(t.get("max_steps") or per_epoch * t["epochs"], per_epoch * t["epochs"])


def workload(cfg: dict[str, Any], label: str = "", group: str = "") -> Workload:
    """The phases of one run of this config (a dict from Config.to_dict())."""
    size = data_size(cfg["data"])
    if size is None:
        raise JobError(f"data.dataset={cfg['data'].get('dataset')}: size unknown; shard it first and give "
                       "data.shards=DIR (its manifest has the counts)")
    image = image_side(cfg, size)
    vae_desc, enc, dec, factor = vae_gflops(cfg["vae"], image)
    latent = max(1, image // factor)
    m, t, inf = cfg["model"], cfg["train"], cfg["infer"]
    unet = unet_forward_gflops(m["size"], len(size.categories), latent, 4, bool(m.get("conditional", True)))
    steps = train_steps(cfg, size.train)
    samples = steps * t["batch_size"]
    phases = []
    if not cfg["vae"].get("pretrained"):
        v = cfg["vae"]
        crop = min(image, v.get("crop") or image)
        _, e2, d2, _ = vae_gflops(v, crop)
        phases.append(Phase("vae fit", v["steps"] * v["batch_size"] * TRAIN_FACTOR * (e2 + d2), "train",
                            detail=f"{vae_desc}, {v['steps']} steps of {v['batch_size']} crops of {crop} px (once per data set)"))
    per_sample = TRAIN_FACTOR * unet
    if t.get("latent_cache", True):
        phases.append(Phase("latent cache", size.train * t.get("cache_variants", 1) * enc, "infer",
                            detail=f"{size.train} images x {t.get('cache_variants', 1)} variants encoded"))
    else:
        per_sample += enc
    phases.append(Phase("train", samples * per_sample, "train", t.get("mixed_precision", "no"), True,
                        detail=f"UNet {m['size']}, {steps} steps x batch {t['batch_size']} on {latent}x{latent} latents"))
    per_image = enc + inf["reverse_steps"] * unet + 2 * dec
    phases.append(Phase("evaluate", size.test * per_image, "infer",
                        detail=f"{size.test} test images x ({inf['reverse_steps']} UNet calls + encode + 2 decodes)"))
    return Workload(label or cfg["run"].get("name", "run"), size, m["size"], image, latent, steps, t["batch_size"],
                    phases, group or label)


def measurement_gflops(model: str, latent: int, channels: int, num_classes: int, reverse_steps: int | None = None,
                       vae: dict[str, Any] | None = None) -> tuple[float, float]:
    """(training GFLOPs per sample, evaluation GFLOPs per image) for a throughput measurement:
    how measured rates become achieved TFLOP/s."""
    unet = unet_forward_gflops(model, num_classes, latent, channels)
    _, enc, dec, factor = vae_gflops(vae or {"pretrained": "sd"}, latent * 8)
    return TRAIN_FACTOR * unet, enc + (reverse_steps or 5) * unet + 2 * dec
