"""The deviation-correction sampler: a short loop of correction steps from the clean latent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from decodiff.models.deviation import DeviationProcess

EtaModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t, t[B]) -> eta_hat


@dataclass
class Correction:
    z0_hat: torch.Tensor
    trajectory: list[torch.Tensor] = field(default_factory=list)  # z0_hat after each step


@torch.no_grad()
def correct(
    model: EtaModel,
    z: torch.Tensor,
    process: DeviationProcess,
    num_reverse: int = 5,
    start: int | None = None,
    strategy: str = "zt-1",
    keep_trajectory: bool = False,
    mapping: str = "respacing",
) -> Correction:
    """Start from the encoded test latent itself (no noise is added) and correct it; `mapping`
    (deviation.STEP_MAPPINGS) turns the count into steps where `start` is not given."""
    steps = process.timesteps(num_reverse, start, mapping)
    z_t = z
    traj: list[torch.Tensor] = []
    out = None
    for i, t in enumerate(steps):
        t_prev = steps[i + 1] if i + 1 < len(steps) else None
        tt = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
        eta_hat = model(z_t, tt).to(z.dtype)
        out = process.correction_step(eta_hat, t, t_prev, z_t, strategy)
        z_t = out.z_prev
        if keep_trajectory:
            traj.append(out.z0_hat)
    assert out is not None
    return Correction(z0_hat=out.z0_hat, trajectory=traj)
