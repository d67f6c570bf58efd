"""Forward FLOPs of a model, counted by torch's FLOP counter (matmuls and convolutions)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from decodiff.models.unet import DeviationUNet


@torch.no_grad()
def forward_gflops(model: DeviationUNet, latent: int, channels: int = 4) -> float:
    """GFLOPs (2 x multiply-adds) of one forward pass for one sample."""
    z = torch.zeros(1, channels, latent, latent)
    t = torch.zeros(1, dtype=torch.long)
    c = torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        model.eval()(z, t, c)
    return counter.get_total_flops() / 1e9
