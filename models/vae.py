"""The frozen VAE (diffusers AutoencoderKL): scaled latents in, images in [-1, 1] out.

On a CPU, encoder and decoder run in micro-batches sized to the caches (`auto_micro_batch`):
a whole evaluation batch through the decoder moves full-resolution activations through memory
and took 1.9x as long per image on the demo (benchmarks/vae_micro_batch.py).

Two sources, both offline: a local folder saved with `save_pretrained` (e.g. sd-vae-ft-ema,
whose latents are scaled by 0.18215), or a small AutoencoderKL that this project trains on
the training images (its scale is measured so that latents have unit variance, as 0.18215
does for Stable Diffusion's VAE).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import nn

from decodiff.models.errors import VAEError  # noqa: F401 (re-exported)
from decodiff.models.vae_single_file import SINGLE_FILE_SUFFIXES, load_single_file_vae

# Small KL autoencoders for CPU runs; `factor` is the spatial down-sampling.
# Few channels at full resolution, where a CPU spends most of its time.
SMALL_VAE_PRESETS: dict[str, dict[str, Any]] = {
    "f8-small": dict(block_out_channels=(16, 32, 64, 128), layers_per_block=1, latent_channels=4),
    "f8-tiny": dict(block_out_channels=(8, 16, 32, 32), layers_per_block=1, latent_channels=4),
    "f4-small": dict(block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4),
}

# Bytes that a CPU call's full-resolution activations should stay under, sized by a per-image proxy
# (first-level channels x pixels; the decoder's largest activation is about twice that):
# the demo VAE (16 channels at 128 px, 1 MiB per image) decoded 1.9x faster per image in calls of 4
# than of 32, about as fast in calls of 2 or 8; f8-small at 256 px (4 MiB per image) 2.3x in calls of
# one (benchmarks/vae_micro_batch.py, 2-core EPYC, 2 MiB L2 per core). Sizes above one are even: with
# channels-last weights odd call sizes (and calls of one) take other kernels than even ones, so results are
# bitwise those of the whole batch when every call, the last included, holds an even number of images
# (contiguous weights: two or more); otherwise they agree to float rounding (~1e-5).
CPU_ACTIVATION_BUDGET = 4 << 20


def auto_micro_batch(vae: FrozenVAE, x: torch.Tensor, pixels: int | None = None) -> int:
    """Images per encoder/decoder call for `x` (0: the whole batch): on a CPU as many as keep the
    per-image proxy (first-level channels x pixels, in the VAE's dtype) within CPU_ACTIVATION_BUDGET,
    an even number where more than one fits; elsewhere (a GPU wants large calls) the whole batch.
    `pixels`: the images' H x W where `x` is a latent."""
    if x.device.type != "cpu":
        return 0
    pixels = pixels or x.shape[-2] * x.shape[-1]
    per_image = pixels * vae.vae.config.block_out_channels[0] * vae.vae.dtype.itemsize
    n = CPU_ACTIVATION_BUDGET // max(per_image, 1)
    n = 1 if n < 2 else n - n % 2
    return 0 if n >= x.shape[0] else n


def build_small_vae(preset: str = "f8-small") -> AutoencoderKL:
    if preset not in SMALL_VAE_PRESETS:
        raise ValueError(f"vae.small must be one of {sorted(SMALL_VAE_PRESETS)}, got {preset!r}")
    p = SMALL_VAE_PRESETS[preset]
    n = len(p["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=p["block_out_channels"],
        layers_per_block=p["layers_per_block"],
        latent_channels=p["latent_channels"],
        norm_num_groups=min(16, p["block_out_channels"][0]),  # divides every level's width
        mid_block_add_attention=False,
    )


class FrozenVAE(nn.Module):
    """Encoder/decoder with the latent scale applied; no gradients, eval mode always."""

    def __init__(
        self, vae: AutoencoderKL, scale: float, source: str, fingerprint: str = "", micro_batch: int | None = None
    ):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.scale = float(scale)
        self.source = source  # what the report says about the VAE
        self.fingerprint = fingerprint  # sha256 of the weights file: the identity caches are keyed by
        self.location = ""  # the folder or file it was loaded from (checkpoints record it)
        # images per encoder/decoder call (vae.micro_batch): None auto (auto_micro_batch), 0 the whole batch
        self.micro_batch = micro_batch

    @property
    def factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def latent_size(self, image_size: int) -> int:
        return image_size // self.factor

    def train(self, mode: bool = True) -> FrozenVAE:  # stays frozen
        return super().train(False)

    def _step(self, x: torch.Tensor, pixels: int | None = None) -> int:
        n = auto_micro_batch(self, x, pixels) if self.micro_batch is None else self.micro_batch
        return n if 0 < n < x.shape[0] else max(x.shape[0], 1)  # an empty batch: one call, as before

    @torch.no_grad()
    def encode_dist(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled mean and std of the latent distribution (what a latent cache stores)."""
        step = self._step(x)
        dists = [
            self.vae.encode(x[i : i + step].to(self.vae.dtype)).latent_dist for i in range(0, max(x.shape[0], 1), step)
        ]
        if len(dists) == 1:
            return dists[0].mean * self.scale, dists[0].std * self.scale
        return torch.cat([d.mean for d in dists]) * self.scale, torch.cat([d.std for d in dists]) * self.scale

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training samples the latent distribution; evaluation uses its mean (published)."""
        mean, std = self.encode_dist(x)
        if not sample:
            return mean
        return mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        step = self._step(z, z.shape[-2] * z.shape[-1] * self.factor**2)
        z = z.to(self.vae.dtype) / self.scale
        parts = [self.vae.decode(z[i : i + step]).sample for i in range(0, max(z.shape[0], 1), step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


EXPECTED_VAE = (
    f"expected a folder saved with save_pretrained, or a {'/'.join(SINGLE_FILE_SUFFIXES)} file in the "
    "Stable-Diffusion layout"
)


def vae_source_problem(path: Path) -> str | None:
    """Why `path` cannot be a VAE that `load_vae` reads (None: it looks like one); cheap, so
    callers can check every source before any work."""
    path = Path(path)
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        return None
    if not path.exists():
        return "not found"
    if not (path / "config.json").is_file():
        return "no config.json there"
    return None


def load_vae(
    folder: Path,
    image_size: int | None = None,
    expect_channels: int | None = None,
    scale: float | None = None,
    micro_batch: int | None = None,
) -> FrozenVAE:
    """Load a local diffusers-format VAE folder, or one weights file in the Stable-Diffusion
    layout (vae_single_file.py), offline, and check its latent shape. `scale` overrides the
    latent scale (else decodiff.json's, else the config's scaling_factor)."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix in SINGLE_FILE_SUFFIXES:
        vae = load_single_file_vae(folder)
        out = FrozenVAE(
            vae,
            scale or vae.config.scaling_factor,
            fingerprint=_sha256(folder),
            source=f"pretrained AutoencoderKL from the Stable-Diffusion-layout file {folder}",
            micro_batch=micro_batch,
        )
        return _checked(out, folder, image_size, expect_channels)
    problem = vae_source_problem(folder)
    if problem:
        raise VAEError(f"vae.pretrained={folder}: {problem} ({EXPECTED_VAE})")
    try:
        vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # diffusers raises many kinds; all mean "not a usable VAE folder"
        raise VAEError(f"vae.pretrained={folder}: cannot load an AutoencoderKL ({type(exc).__name__}: {exc})") from None
    meta_path = folder / "decodiff.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    scale = float(scale or meta.get("scale", vae.config.scaling_factor))
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    fingerprint = _sha256(weights[0]) if weights else ""
    if meta.get("weights_sha256") and meta["weights_sha256"] != fingerprint:  # recorded when it was saved
        raise VAEError(
            f"{weights[0] if weights else folder}: corrupt VAE weights (sha256 differs from the one "
            f"recorded in {meta_path} when it was saved)"
        )
    out = FrozenVAE(
        vae,
        scale,
        source=meta.get("description", f"pretrained AutoencoderKL from {folder}"),
        fingerprint=fingerprint,
        micro_batch=micro_batch,
    )
    return _checked(out, folder, image_size, expect_channels)


def _checked(out: FrozenVAE, folder: Path, image_size: int | None, expect_channels: int | None) -> FrozenVAE:
    if expect_channels is not None and out.latent_channels != expect_channels:
        raise VAEError(f"vae.pretrained={folder}: latent channels {out.latent_channels}, expected {expect_channels}")
    if image_size is not None:
        with torch.no_grad():
            z = out.encode(torch.zeros(1, 3, image_size, image_size))
        if z.shape[-1] * out.factor != image_size:
            raise VAEError(
                f"vae.pretrained={folder}: latent {tuple(z.shape[1:])} does not match image size {image_size}"
            )
    out.location = str(folder.resolve())
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def save_vae(vae: AutoencoderKL, folder: Path, scale: float, description: str, extra: dict | None = None) -> None:
    """Write atomically: a half-written VAE folder is never mistaken for a finished one."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    vae.save_pretrained(tmp, safe_serialization=True)
    weights = sorted(tmp.glob("*.safetensors"))
    meta = {
        "scale": scale,
        "description": description,
        **(extra or {}),
        **({"weights_sha256": _sha256(weights[0])} if weights else {}),
    }
    (tmp / "decodiff.json").write_text(json.dumps(meta, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
