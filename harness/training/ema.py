"""Exponential moving average of the model weights (optional, `train.ema=0.9999`).

Kept in float32 on the model's device, updated after every optimizer step with one fused
`lerp` over all parameters; buffers are copied. The final model of a training run with EMA
is the averaged one (what DiT-style training evaluates); the raw weights stay in the
training checkpoint for resuming.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for _, p in model.named_parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p.detach().float() if p.dtype != torch.float32 else p.detach() for _, p in model.named_parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        if missing or len(state) != len(self.names):
            raise KeyError(f"EMA state does not fit the model ({len(missing)} tensors missing, {len(state)} given)")
        for n, s in zip(self.names, self.shadow):
            if state[n].shape != s.shape:
                raise ValueError(f"EMA tensor {n} has shape {tuple(state[n].shape)}, expected {tuple(s.shape)}")
            s.copy_(state[n])

    def averaged_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged parameters (buffers from the model)."""
        out = {k: v.detach() for k, v in model.state_dict().items()}
        for n, s in zip(self.names, self.shadow):
            out[n] = s.to(out[n].dtype)
        return out
