"""The deviation-correction process of DeCo-Diff (paper Sec. 4, Eqs. 7-14).

Shaped like a diffusers scheduler: it owns alpha-bar, builds the masked/shuffled training
input with its eta target, chooses the reverse sub-sequence, and performs one correction
step. No model, no I/O, no device policy: each equation can be tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from decodiff.models.masking import draw_patch_size, patch_mask, shuffled_patches
from decodiff.models.schedule import alpha_bar

STRATEGIES = ("zt-1", "z0")  # Eq. 14 ("z_{t-1}"), or restart from z0_hat ("z_0", paper Table 3)


@dataclass
class TrainingInput:
    """One batch of training input: the model sees (z_t, t) and regresses eta."""

    z_t: torch.Tensor
    t: torch.Tensor  # long [B], 0..T-1
    eta: torch.Tensor
    keep: torch.Tensor  # bool [B,1,H,W], True on cells kept clean (M = 1)
    shuffled: torch.Tensor  # bool [B,1,H,W], True where noise was replaced by shuffled patches
    patch: int


@dataclass
class StepOutput:
    z_prev: torch.Tensor
    z0_hat: torch.Tensor


class DeviationProcess:
    """Masked forward process, eta target and correction step for T discrete steps."""

    def __init__(
        self,
        num_steps: int = 10,
        schedule: str = "squaredcos_cap_v2",
        patch_sizes: Sequence[int] = (1, 2, 4, 8, 16),
        patch_probs: Sequence[float] = (0.30, 0.25, 0.20, 0.15, 0.10),
        r_mask: float = 0.7,
        r_shuffle: float = 0.3,
    ) -> None:
        if len(patch_sizes) != len(patch_probs):
            raise ValueError("patch_sizes and patch_probs must have the same length")
        self.num_steps = num_steps
        self.alpha_bar = alpha_bar(num_steps, schedule)
        self._alpha_bar_on: dict[torch.device, torch.Tensor] = {}  # one copy per device, not one per step
        self.patch_sizes = tuple(int(p) for p in patch_sizes)
        self.patch_probs = tuple(float(p) for p in patch_probs)
        self.r_mask = float(r_mask)
        self.r_shuffle = float(r_shuffle)

    def _ab(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        table = self._alpha_bar_on.get(like.device)
        if table is None:
            table = self._alpha_bar_on[like.device] = self.alpha_bar.to(like.device)
        # a host-to-device copy that does not wait for the GPU's queued work (the CPU prepares the next step)
        return table[t.to(like.device, non_blocking=True)].to(like.dtype).view(-1, 1, 1, 1)

    # ---- training -------------------------------------------------------------------------
    def training_input(
        self, z0: torch.Tensor, generator: torch.Generator | None = None, t: torch.Tensor | None = None
    ) -> TrainingInput:
        """Eq. 7 with patch shuffling: a fraction r ~ U(0, R_mask) of the patches is diffused,
        the rest kept bit-identical; in a second mask (r2 ~ U(0, R_shuffle)) the Gaussian noise
        is replaced by latent patches shuffled across the batch."""
        b, _, h, w = z0.shape
        if t is None:
            t = torch.randint(0, self.num_steps, (b,), generator=generator)
        patch = draw_patch_size(self.patch_sizes, self.patch_probs, generator)
        r = torch.rand(b, generator=generator, dtype=torch.float64) * self.r_mask
        r2 = torch.rand(b, generator=generator, dtype=torch.float64) * self.r_shuffle
        diffused = patch_mask(b, h, w, patch, r, generator, z0.device)
        shuffled = patch_mask(b, h, w, patch, r2, generator, z0.device)
        noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device, non_blocking=True)
        if self.r_shuffle > 0:
            noise = torch.where(shuffled, shuffled_patches(z0, patch, generator), noise)
        return self.masked_forward(z0, t, noise, keep=~diffused, shuffled=shuffled, patch=patch)

    def masked_forward(
        self,
        z0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        keep: torch.Tensor,
        shuffled: torch.Tensor | None = None,
        patch: int = 1,
    ) -> TrainingInput:
        """z_t = z0 on kept cells, sqrt(ab) z0 + sqrt(1-ab) noise elsewhere; eta by Eq. 11."""
        ab = self._ab(t, z0)
        diffused = ab.sqrt() * z0 + (1.0 - ab).sqrt() * noise
        z_t = torch.where(keep, z0, diffused)
        eta = torch.where(keep, torch.zeros_like(z0), noise - (1.0 - ab.sqrt()) / (1.0 - ab).sqrt() * z0)
        if shuffled is None:
            shuffled = torch.zeros_like(keep)
        t = t.to(z0.device, non_blocking=True)
        return TrainingInput(z_t=z_t, t=t, eta=eta, keep=keep, shuffled=shuffled & ~keep, patch=patch)

    # ---- inference ------------------------------------------------------------------------
    def timesteps(self, num_reverse: int, start: int | None = None, mapping: str = "respacing") -> list[int]:
        """The reverse sub-sequence, first step first (see `reverse_timesteps`)."""
        return reverse_timesteps(self.num_steps, num_reverse, start, mapping)

    def correction_step(
        self, eta_hat: torch.Tensor, t: int, t_prev: int | None, z_t: torch.Tensor, strategy: str = "zt-1"
    ) -> StepOutput:
        """Eq. 13 then Eq. 14 ("zt-1") or z_prev = z0_hat ("z0"); the last step (t_prev None)
        returns z0_hat."""
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        ab = self.alpha_bar[t].item()
        z0_hat = z_t - (1.0 - ab) ** 0.5 * eta_hat
        if t_prev is None or strategy == "z0":
            return StepOutput(z_prev=z0_hat, z0_hat=z0_hat)
        ab_prev = self.alpha_bar[t_prev].item()
        return StepOutput(z_prev=z0_hat + (1.0 - ab_prev) ** 0.5 * eta_hat, z0_hat=z0_hat)


STEP_MAPPINGS = ("respacing", "from-top")
"""How a reverse-step count becomes the steps the model is called at (`reverse_timesteps`)."""


def reverse_timesteps(
    num_steps: int, num_reverse: int, start: int | None = None, mapping: str = "respacing"
) -> list[int]:
    """The steps at which the model is called, first step first, for T = `num_steps` (0-based:
    step t here is the paper's t + 1, whose steps run 1..T).

    An explicit `start` keeps the first step there for every count, whatever the mapping: n steps
    evenly spaced from `start` down to 0 (rounded half up, so distinct), for any n from 1 to
    start + 1 (start 8: 1 -> 8; 2 -> 8, 0; 3 -> 8, 4, 0; 5 -> 8, 6, 4, 2, 0).

    `start=None`, mapping "respacing" (the authors' code): the DDIM respacing ("ddimN") of the
    guided-diffusion code they build on, i.e. steps range(0, T, s) for the smallest integer
    stride s that gives exactly n of them. For T = 10 that defines n = 2, 3, 4, 5, 10 only:
    2 -> 5, 0; 3 -> 8, 4, 0; 4 -> 9, 6, 3, 0; 5 -> 8, 6, 4, 2, 0 (the default); 10 -> 9, ..., 0.
    Their code crashes for the counts without such a stride (6..9 for T = 10, and 1); here they
    run: n = 1 -> 0 (the stride search extended to s = T), and otherwise the n lowest steps,
    n-1, ..., 0 (stride 1). So the count moves the start step, and 1 step is an almost-identity
    correction at t = 0.

    `start=None`, mapping "from-top" (the paper): the correction starts at T (Fig. 2, Sec. 4.3:
    "starting from time-step T"), with DDIM's linear sub-sequence tau_i = floor(i * T / n),
    i = 1..n (DDIM, Song et al. 2021, Sec. 4.2 and App. D.2), so tau_n = T for every n. In this
    0-based numbering, for T = 10: 1 -> 9; 2 -> 9, 4; 3 -> 9, 5, 2; 4 -> 9, 6, 4, 1;
    5 -> 9, 7, 5, 3, 1; 6 -> 9, 7, 5, 4, 2, 0; 7 -> 9, 7, 6, 4, 3, 1, 0; 8 -> 9, 7, 6, 5, 4, 2, 1, 0;
    9 -> 9, 7, 6, 5, 4, 3, 2, 1, 0; 10 -> 9, ..., 0. The last call returns z0_hat (DDIM's step
    from tau_1 to 0).
    """
    T = num_steps
    if mapping not in STEP_MAPPINGS:
        raise ValueError(f"step mapping must be one of {STEP_MAPPINGS}, got {mapping!r}")
    if not 1 <= num_reverse <= T:
        raise ValueError(f"reverse steps must be in 1..{T}, got {num_reverse}")
    if start is None and mapping == "from-top":
        return [(i * T) // num_reverse - 1 for i in range(num_reverse, 0, -1)]
    if start is None:
        for stride in range(1, T + 1):
            if len(range(0, T, stride)) == num_reverse:
                return list(range(0, T, stride))[::-1]
        return list(range(num_reverse))[::-1]
    if not 0 <= start < T:
        raise ValueError(f"start step must be in 0..{T - 1}, got {start}")
    if num_reverse > start + 1:
        raise ValueError(f"{num_reverse} reverse steps do not fit below start step {start}")
    if num_reverse == 1:
        return [start]
    # round half up: monotone with unit gaps, so the steps stay distinct
    steps = torch.floor(torch.linspace(start, 0, num_reverse, dtype=torch.float64) + 0.5).long()
    return steps.tolist()
