"""Memory layout of the networks: channels-last (NHWC) where it is the faster layout.

Same operations, same weights: only the order of the elements in memory changes, so results
agree with the contiguous (NCHW) layout up to float rounding (convolutions sum in another
order), not bit for bit. On CPU, oneDNN's channels-last convolutions ran the demo VAE decoder
1.66x faster and the UNets about as fast (demo 1.02x, XS 1.03x; benchmarks/layout_speed.py),
while training channels-last was slower (train.channels_last stays off). On CUDA it pays with
bf16/fp16 tensor cores, so `None` (auto) picks it on CPU, and on CUDA only with reduced precision.
"""

from __future__ import annotations

import torch
from torch import nn


def use_channels_last(setting: bool | None, device: torch.device, reduced_precision: bool = False) -> bool:
    """The config's choice (`True`/`False`), or for `None`: CPU, or CUDA with bf16/fp16."""
    if setting is not None:
        return bool(setting)
    return device.type == "cpu" or (device.type == "cuda" and reduced_precision)


def to_layout(module: nn.Module, channels_last: bool) -> nn.Module:
    """The module with its 4-D weights in channels-last (or contiguous) order, in place."""
    return module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
