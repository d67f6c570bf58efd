"""Forward FLOPs of a model, counted by torch's FLOP counter (matmuls, convolutions, attention).

Counting runs on the `meta` device when a preset is given by name: no weights are allocated
and nothing is computed, so even XL is counted in about a second.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from decodiff.models.unet import DeviationUNet, build_unet, count_parameters

# A training step costs about 3 forward passes (the backward pass computes gradients for both
# activations and weights: about 2 forward passes' worth of matmuls and convolutions).
TRAINING_FLOPS_FACTOR = 3.0


@torch.no_grad()
def forward_gflops(model: DeviationUNet, latent: int, channels: int = 4) -> float:
    """GFLOPs (2 x multiply-adds) of one forward pass for one sample, on the model's device."""
    device = next(model.parameters()).device
    z = torch.zeros(1, channels, latent, latent, device=device)
    t = torch.zeros(1, dtype=torch.long, device=device)
    c = torch.zeros(1, dtype=torch.long, device=device)
    was_training = model.training
    with FlopCounterMode(display=False) as counter:
        model.eval()(z, t, c if model.conditional else None)
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def preset_cost(
    size: str | dict[str, Any], num_classes: int = 15, latent: int = 32, channels: int = 4, conditional: bool = True
) -> dict[str, float | int]:
    """Parameters and GFLOPs per sample (forward; training ~3x) of a preset, counted on `meta`."""
    with torch.device("meta"):
        model = build_unet(
            size, num_classes=num_classes, conditional=conditional, latent_channels=channels, sample_size=latent
        )
        fwd = forward_gflops(model, latent, channels)
    return {
        "parameters": count_parameters(model),
        "gflops_forward": fwd,
        "gflops_train_step": fwd * TRAINING_FLOPS_FACTOR,
    }


@lru_cache(maxsize=64)
def unet_gflops(size: str, latent: int, channels: int = 4) -> float:
    """Forward GFLOPs per sample of a preset: the one count that plans and sweep estimates use.
    The category is one context token whatever the number of categories, so the count does not
    depend on it (counted once per preset, latent size and channels)."""
    return float(preset_cost(size, num_classes=1, latent=latent, channels=channels)["gflops_forward"])
