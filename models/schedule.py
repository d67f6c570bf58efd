"""The noise schedule: alpha-bar for the T diffusion steps (squared cosine, T = 10 by default)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")

# alpha-bar for t = 0..9 as the published code prints it (T = 10, squared cosine); tests compare.
PUBLISHED_ALPHA_BAR_T10 = (0.972, 0.899, 0.787, 0.647, 0.494, 0.341, 0.203, 0.094, 0.024, 0.00002)


def alpha_bar(num_steps: int = 10, schedule: str = "squaredcos_cap_v2") -> torch.Tensor:
    """alpha-bar_t for t = 0..T-1 in float64, from diffusers' beta schedules."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    sched = DDPMScheduler(num_train_timesteps=num_steps, beta_schedule=schedule)
    return sched.alphas_cumprod.to(torch.float64)
