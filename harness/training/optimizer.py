"""The optimizer: AdamW (lr and weight decay from the config), with the fused kernel on CUDA
and the foreach (multi-tensor) kernel elsewhere: on CPU torch would otherwise pick the
per-parameter loop, and foreach gives bitwise the same weights (checked in
tests/harness/training/test_optimizer.py), so it is a pure speed change."""

from __future__ import annotations

import torch
from torch import nn

from decodiff.harness.config import TrainSection


def make_optimizer(model: nn.Module, t: TrainSection, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    if device.type == "cuda":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, foreach=True)
