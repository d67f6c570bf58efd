"""The eta-predicting UNet: diffusers' UNet2DConditionModel configured by a size preset, with
the category embedded as ONE cross-attention context token (as in the authors' code).

A preset is a plain dict; `build_unet` is the single builder. The class-token table and the
UNet's own config are saved with the weights, so a checkpoint rebuilds its model exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from decodiff.models.unet_presets import PUBLISHED_PARAMETERS, UNET_PRESETS  # noqa: F401 (re-exported)


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class DeviationUNet(nn.Module):
    """eta_theta(z_t, t, category): the UNet plus the category-token table."""

    def __init__(self, unet: UNet2DConditionModel, num_classes: int, context_dim: int, conditional: bool = True):
        super().__init__()
        self.unet = unet
        self.conditional = conditional
        self.num_classes = num_classes
        # unconditional: one learned token for every image (the category need not be known)
        self.class_tokens = nn.Embedding(num_classes if conditional else 1, context_dim)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, class_ids: torch.Tensor | None = None) -> torch.Tensor:
        if not self.conditional or class_ids is None:
            if self.conditional:
                raise ValueError("a class-conditional model needs the category of each sample")
            class_ids = torch.zeros(z_t.shape[0], dtype=torch.long, device=z_t.device)
        context = self.class_tokens(class_ids)[:, None, :].to(z_t.dtype)
        return self.unet(z_t, t, encoder_hidden_states=context).sample


def level_heads(preset: dict[str, Any]) -> tuple[int, ...]:
    """Attention heads per level: width // (channels // heads), the LDM num_head_channels rule."""
    per_head = preset["channels"] // preset["heads"]
    if per_head < 1:
        raise ValueError(
            f"a preset needs at least one channel per head (channels {preset['channels']}, heads {preset['heads']})"
        )
    return tuple(preset["channels"] * m // per_head for m in preset["mult"])


def preset_config(size: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(size, dict):
        return dict(size)
    if size not in UNET_PRESETS:
        raise ValueError(f"model.size must be one of {sorted(UNET_PRESETS)}, got {size!r}")
    return dict(UNET_PRESETS[size])


def build_unet(
    size: str | dict[str, Any],
    *,
    num_classes: int,
    conditional: bool = True,
    latent_channels: int = 4,
    sample_size: int = 32,
    dropout: float | None = None,
) -> DeviationUNet:
    p = preset_config(size)
    ch = p["channels"]
    widths = tuple(ch * m for m in p["mult"])
    heads = level_heads(p)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in p["attention"])
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(p["attention"]))
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=widths,
        layers_per_block=p["layers"],
        cross_attention_dim=p["context_dim"],
        attention_head_dim=heads,  # diffusers reads this argument as the number of heads
        norm_num_groups=_groups(ch),
        dropout=p["dropout"] if dropout is None else dropout,
        flip_sin_to_cos=True,
        freq_shift=0,
    )
    return DeviationUNet(unet, num_classes=num_classes, context_dim=p["context_dim"], conditional=conditional)


INITS = ("ldm", "diffusers")
"""Initialisations for training from scratch: `ldm` zero-initialises what LDM's UNet (the
authors' model) zero-initialises; `diffusers` keeps diffusers' defaults (this project before)."""


def ldm_zero_init(model: DeviationUNet) -> list[str]:
    """Zero the layers LDM's openaimodel UNet creates with `zero_module`: the output convolution
    of every residual block (diffusers: ResnetBlock2D.conv2), the output projection of every
    spatial transformer (Transformer2DModel.proj_out) and the final convolution (conv_out).
    Every block then starts as the identity (its residual branch adds zero) and the UNet predicts
    eta = 0, so from-scratch training starts where LDM's does. Returns the zeroed modules' names."""
    zeroed = []
    for name, module in model.unet.named_modules():
        if isinstance(module, ResnetBlock2D):
            targets = [(f"{name}.conv2", module.conv2)]
        elif isinstance(module, Transformer2DModel):
            targets = [(f"{name}.proj_out", module.proj_out)]
        elif name == "conv_out":
            targets = [(name, module)]
        else:
            continue
        for tname, layer in targets:
            with torch.no_grad():
                for p in layer.parameters(recurse=False):
                    p.zero_()
            zeroed.append(f"unet.{tname}")
    return zeroed


def initialise(model: DeviationUNet, init: str) -> list[str]:
    """Apply `init` (one of INITS) to a freshly built model; the names of the layers it zeroed."""
    if init not in INITS:
        raise ValueError(f"model.init must be one of {INITS}, got {init!r}")
    return ldm_zero_init(model) if init == "ldm" else []


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
