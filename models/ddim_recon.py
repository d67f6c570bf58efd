"""The standard-diffusion reconstruction baseline (`method=ddim-recon`, the contrast of the
paper's Fig. 1): the same UNet is trained with the usual epsilon objective on latents noised
everywhere (Eq. 2), and at test time the encoded latent is noised to a chosen step t and
denoised back with deterministic DDIM steps (eta = 0). Anomalies are what the denoiser
does not bring back; the map is built from the reconstruction exactly as DeCo-Diff's is.

Same shape as `DeviationProcess` (alpha-bar, training input, reverse sub-sequence, one
step), so that the training loop and the evaluation treat the two alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from decodiff.models.deviation import StepOutput, TrainingInput, reverse_timesteps
from decodiff.models.sampler import Correction, EtaModel
from decodiff.models.schedule import alpha_bar


class NoiseProcess:
    """Forward process z_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) eps with target eps, and DDIM steps."""

    def __init__(self, num_steps: int = 10, schedule: str = "squaredcos_cap_v2") -> None:
        self.num_steps = num_steps
        self.alpha_bar = alpha_bar(num_steps, schedule)

    def _ab(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.alpha_bar.to(like.device)[t.to(like.device)].to(like.dtype).view(-1, 1, 1, 1)

    def noised(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Eq. 2 at step t (per sample)."""
        ab = self._ab(t, z0)
        return ab.sqrt() * z0 + (1.0 - ab).sqrt() * noise

    def training_input(
        self, z0: torch.Tensor, generator: torch.Generator | None = None, t: torch.Tensor | None = None
    ) -> TrainingInput:
        """t uniform in 0..T-1, Gaussian noise on every cell; the regression target (the `eta`
        field, as the loop reads it) is the noise itself."""
        b = z0.shape[0]
        if t is None:
            t = torch.randint(0, self.num_steps, (b,), generator=generator)
        noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device)
        none = torch.zeros(b, 1, *z0.shape[2:], dtype=torch.bool, device=z0.device)
        return TrainingInput(
            z_t=self.noised(z0, t, noise), t=t.to(z0.device), eta=noise, keep=none, shuffled=none, patch=0
        )

    def timesteps(self, num_reverse: int, start: int | None = None, mapping: str = "respacing") -> list[int]:
        """The same mapping as DeCo-Diff's (see `reverse_timesteps`): `start` is the noise step t."""
        return reverse_timesteps(self.num_steps, num_reverse, start, mapping)

    def ddim_step(self, eps_hat: torch.Tensor, t: int, t_prev: int | None, z_t: torch.Tensor) -> StepOutput:
        """z0_hat = (z_t - sqrt(1-ab_t) eps) / sqrt(ab_t); z_prev = sqrt(ab_prev) z0_hat +
        sqrt(1-ab_prev) eps; the last step (t_prev None) returns z0_hat."""
        ab = self.alpha_bar[t].item()
        z0_hat = (z_t - (1.0 - ab) ** 0.5 * eps_hat) / ab**0.5
        if t_prev is None:
            return StepOutput(z_prev=z0_hat, z0_hat=z0_hat)
        ab_prev = self.alpha_bar[t_prev].item()
        return StepOutput(z_prev=ab_prev**0.5 * z0_hat + (1.0 - ab_prev) ** 0.5 * eps_hat, z0_hat=z0_hat)


def keyed_noise(
    keys: Sequence[str],
    shape: tuple[int, ...],
    seed: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Gaussian noise per image drawn from (seed, image key): an image gets the same noise in any
    batch, on any rank, in any process count, so its score does not depend on how it was read."""
    out = []
    for key in keys:
        digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        out.append(torch.randn(shape, generator=gen, dtype=torch.float64))
    return torch.stack(out).to(dtype=dtype, device=device)


@torch.no_grad()
def ddim_reconstruct(
    model: EtaModel,
    z: torch.Tensor,
    process: NoiseProcess,
    noise: torch.Tensor,
    num_reverse: int = 5,
    start: int | None = None,
    keep_trajectory: bool = False,
    mapping: str = "respacing",
) -> Correction:
    """Noise z to the first reverse step with `noise`, then take the DDIM steps back to 0."""
    steps = process.timesteps(num_reverse, start, mapping)
    first = torch.full((z.shape[0],), steps[0], dtype=torch.long)
    z_t = process.noised(z, first, noise.to(z.dtype).to(z.device))
    traj: list[torch.Tensor] = []
    out = None
    for i, t in enumerate(steps):
        t_prev = steps[i + 1] if i + 1 < len(steps) else None
        tt = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
        out = process.ddim_step(model(z_t, tt).to(z.dtype), t, t_prev, z_t)
        z_t = out.z_prev
        if keep_trajectory:
            traj.append(out.z0_hat)
    assert out is not None
    return Correction(z0_hat=out.z0_hat, trajectory=traj)
