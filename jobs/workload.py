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

from decodiff.jobs.datasizes import DataSize, data_size, image_side
from decodiff.jobs.errors import JobError

# The Stable-Diffusion KL-f8 autoencoder (sd-vae-ft-ema/-mse), used when a pretrained folder is
# named but not readable here (planning on a laptop for a cluster's files).
SD_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    mid_block_add_attention=True,
)


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
    """Forward GFLOPs per sample (models/flops.py; `num_classes` and `conditional` do not change it)."""
    from decodiff.models.flops import unet_gflops  # torch: loaded to count, so that importing jobs/ stays light

    return unet_gflops(size, latent, channels)


def _vae_spec(vae: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if vae.get("pretrained"):
        cfg_file = Path(vae["pretrained"]) / "config.json"
        if cfg_file.is_file():
            d = json.loads(cfg_file.read_text())
            keys = (
                "block_out_channels",
                "layers_per_block",
                "latent_channels",
                "norm_num_groups",
                "mid_block_add_attention",
            )
            return f"pretrained {vae['pretrained']}", {
                k: (tuple(d[k]) if isinstance(d[k], list) else d[k]) for k in keys if k in d
            }
        return "Stable-Diffusion KL-f8 (pretrained folder not readable here)", dict(SD_VAE)
    from decodiff.models.vae import SMALL_VAE_PRESETS  # torch and diffusers (~3 s): only for a small VAE

    preset = vae["small"]
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
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            **spec,
        ).eval()
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


def vae_factor(vae: dict[str, Any]) -> int:
    """How much the VAE shrinks each side of the image (8 for an f8 VAE)."""
    return 2 ** (len(_vae_spec(vae)[1]["block_out_channels"]) - 1)


def train_steps(cfg: dict[str, Any], n_train: int) -> int:
    """Optimizer steps, as harness/training/loop.py counts them: epochs over the data, capped by max_steps."""
    t = cfg["train"]
    per_epoch = max(1, math.ceil(n_train / t["batch_size"]))
    return min(t["max_steps"] or per_epoch * t["epochs"], per_epoch * t["epochs"])


def cache_variants(train: dict[str, Any]) -> int:
    """Encodings per training image in the latent cache, as harness/training/latent_cache.py makes
    them: every distinct augmentation (cache_augment=exact) or `cache_variants` draws."""
    if train["cache_augment"] != "exact":
        return int(train["cache_variants"])
    from decodiff.datasets.transforms import cache_encodings  # torch (~1 s): only for the exact latent cache

    return cache_encodings(train["cache_augment"], train["cache_variants"], train["translate"], train["rotate180"])


def workload(cfg: dict[str, Any], label: str = "", group: str = "") -> Workload:
    """The phases of one run of this config: a resolved config as a dict (Config.to_dict()), so
    every value, defaults included, is the config model's."""
    size = data_size(cfg["data"])
    if size is None:
        raise JobError(
            f"data.dataset={cfg['data']['dataset']}: size unknown; shard it first and give "
            "data.shards=DIR (its manifest has the counts)"
        )
    from decodiff.models.flops import TRAINING_FLOPS_FACTOR as TRAIN_FACTOR  # torch: as above

    image = image_side(cfg["data"], size)
    vae_desc, enc, dec, factor = vae_gflops(cfg["vae"], image)
    latent = max(1, image // factor)
    m, t, inf = cfg["model"], cfg["train"], cfg["infer"]
    unet = unet_forward_gflops(m["size"], len(size.categories), latent, 4, m["conditional"])
    steps = train_steps(cfg, size.train)
    samples = steps * t["batch_size"]
    phases = []
    if not cfg["vae"]["pretrained"]:
        v = cfg["vae"]
        crop = min(image, v["crop"] or image)
        _, e2, d2, _ = vae_gflops(v, crop)
        phases.append(
            Phase(
                "vae fit",
                v["steps"] * v["batch_size"] * TRAIN_FACTOR * (e2 + d2),
                "train",
                detail=f"{vae_desc}, {v['steps']} steps of {v['batch_size']} crops of {crop} px (once per data set)",
            )
        )
    per_sample = TRAIN_FACTOR * unet
    if t["latent_cache"]:
        k = cache_variants(t)
        phases.append(
            Phase("latent cache", size.train * k * enc, "infer", detail=f"{size.train} images x {k} variants encoded")
        )
    else:
        per_sample += enc
    phases.append(
        Phase(
            "train",
            samples * per_sample,
            "train",
            t["mixed_precision"],
            True,
            detail=f"UNet {m['size']}, {steps} steps x batch {t['batch_size']} on {latent}x{latent} latents",
        )
    )
    per_image = enc + inf["reverse_steps"] * unet + 2 * dec
    phases.append(
        Phase(
            "evaluate",
            size.test * per_image,
            "infer",
            detail=f"{size.test} test images x ({inf['reverse_steps']} UNet calls + encode + 2 decodes)",
        )
    )
    return Workload(
        label or cfg["run"]["name"], size, m["size"], image, latent, steps, t["batch_size"], phases, group or label
    )


def measurement_gflops(
    model: str,
    latent: int,
    channels: int,
    num_classes: int,
    reverse_steps: int | None = None,
    vae: dict[str, Any] | None = None,
) -> tuple[float, float | None]:
    """(training GFLOPs per sample, evaluation GFLOPs per image) for a throughput measurement:
    how measured rates become achieved TFLOP/s. Evaluation needs the measurement's reverse steps
    (None without them: jobs/throughput.py asks for them with an evaluation rate)."""
    from decodiff.models.flops import TRAINING_FLOPS_FACTOR as TRAIN_FACTOR  # torch: as above

    unet = unet_forward_gflops(model, num_classes, latent, channels)
    _, enc, dec, factor = vae_gflops(vae or {"pretrained": "sd"}, latent * 8)
    return TRAIN_FACTOR * unet, None if reverse_steps is None else enc + reverse_steps * unet + 2 * dec
