"""A KL autoencoder from one weights file in the Stable-Diffusion (LDM) layout: a VAE file
such as `vae-ft-ema-560000-ema-pruned.safetensors`, or a whole Stable-Diffusion checkpoint
whose VAE sits under `first_stage_model.` — read offline, with nothing unpickled.

The architecture is read from the tensor shapes (widths per level, blocks per level, latent
channels, mid-block attention), so no config has to be fetched from the Hub; a diffusers
`config.json` can be given instead for a VAE the shapes do not pin down (GroupNorm groups).
Key names are mapped by diffusers' own LDM converter, then loaded strictly: a file that does
not fit is an error naming what is missing, never a partly random VAE.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file

from decodiff.models.errors import VAEError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
SD_SCALE = 0.18215  # Stable Diffusion 1.x/2.x latent scale (SDXL's VAE uses 0.13025: give vae.scale)
_PREFIXES = ("first_stage_model.", "vae.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a pickled checkpoint read with weights_only=True
    (plain tensors and containers only: a file that needs code to unpickle is refused)."""
    path = Path(path)
    if not path.is_file():
        raise VAEError(f"vae.pretrained={path}: file not found")
    if path.suffix == ".safetensors":
        try:
            state: Any = load_file(str(path))
        except Exception as exc:  # safetensors' own error types for corrupt headers
            raise VAEError(f"vae.pretrained={path}: not a readable safetensors file ({exc})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for code-carrying pickles, others for junk
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VAEError(
                f"vae.pretrained={path}: cannot be read as plain tensors with weights_only=True ({first}); "
                f"convert it to .safetensors"
            ) from None
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise VAEError(f"vae.pretrained={path}: holds no tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def vae_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VAE's tensors with a whole-model prefix (first_stage_model., vae.) removed."""
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + "encoder.") for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def config_from_shapes(state: dict[str, torch.Tensor], name: str = "") -> dict[str, Any]:
    """The diffusers AutoencoderKL config of an LDM-layout VAE state dict."""
    where = f"vae.pretrained={name}: " if name else ""
    if any(k.startswith("encoder.down_blocks.") for k in state):
        raise VAEError(
            f"{where}diffusers key names, not the Stable-Diffusion layout: save it as a folder "
            f"(config.json + weights) and give the folder"
        )
    if "encoder.conv_in.weight" not in state or "decoder.conv_out.weight" not in state:
        raise VAEError(
            f"{where}not a KL autoencoder in the Stable-Diffusion layout (no encoder.conv_in / decoder.conv_out)"
        )
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.block\.", k))})
    if not levels or levels != list(range(len(levels))):
        raise VAEError(f"{where}encoder levels {levels} are not 0..n-1")
    widths = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    latent = int(state["encoder.conv_out.weight"].shape[0]) // 2
    groups = 32
    if any(w % groups for w in widths):
        raise VAEError(
            f"{where}widths {widths} are not multiples of 32 (the GroupNorm groups of the Stable-Diffusion "
            f"VAE): give a diffusers config.json for this VAE"
        )
    n = len(widths)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": int(state["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(state["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": widths,
        "layers_per_block": len(blocks),
        "act_fn": "silu",
        "latent_channels": latent,
        "norm_num_groups": groups,
        "sample_size": 256,
        "scaling_factor": SD_SCALE,
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in state,
        "use_quant_conv": "quant_conv.weight" in state,
        "use_post_quant_conv": "post_quant_conv.weight" in state,
    }


def load_single_file_vae(path: Path, config: Path | dict[str, Any] | None = None) -> AutoencoderKL:
    """An AutoencoderKL from one LDM-layout weights file; `config` (a diffusers config.json, a
    folder holding one, or a dict) overrides the architecture read from the shapes."""
    path = Path(path)
    state = vae_part(read_state_dict(path))
    if config is None:
        cfg = config_from_shapes(state, str(path))
    elif isinstance(config, dict):
        cfg = dict(config)
    else:
        cfile = Path(config) / "config.json" if Path(config).is_dir() else Path(config)
        try:
            cfg = json.loads(cfile.read_text())
        except (OSError, ValueError) as exc:
            raise VAEError(f"{cfile}: not a readable diffusers config.json ({exc})") from None
    init = {k: v for k, v in cfg.items() if not k.startswith("_")}
    try:
        vae = AutoencoderKL(**init)
    except TypeError as exc:
        raise VAEError(f"vae.pretrained={path}: config does not build an AutoencoderKL ({exc})") from None
    converted = convert_ldm_vae_checkpoint(state, vae.config)
    own = vae.state_dict()
    missing = sorted(k for k in own if k not in converted)
    unexpected = sorted(k for k in converted if k not in own)
    if missing or unexpected:
        detail = "; ".join(
            p
            for p in (f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "")
            if p
        )
        raise VAEError(
            f"vae.pretrained={path}: weights do not fit the VAE ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors: {detail})"
        )
    for k, v in own.items():
        if tuple(converted[k].shape) != tuple(v.shape):
            raise VAEError(
                f"vae.pretrained={path}: tensor {k} has shape {tuple(converted[k].shape)}, expected {tuple(v.shape)}"
            )
    vae.load_state_dict(converted, strict=True)
    return vae.eval()
