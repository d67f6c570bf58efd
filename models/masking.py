"""Random patch masks over the latent grid: which cells are diffused, which carry shuffled patches.

A patch size p (in latent cells) is drawn per batch; each sample draws its own ratio and a
mask with exactly round(ratio * n_patches) selected patches, the same for all channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def draw_patch_size(sizes: Sequence[int], probs: Sequence[float], generator: torch.Generator | None) -> int:
    """One patch size for the whole batch, as the published code does."""
    weights = torch.tensor(list(probs), dtype=torch.float64)
    idx = torch.multinomial(weights / weights.sum(), 1, generator=generator).item()
    return int(sizes[idx])


def patch_mask(
    batch: int,
    height: int,
    width: int,
    patch: int,
    ratios: torch.Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Bool [B, 1, H, W]: True on the round(ratio * n) patches selected for each sample."""
    if height % patch or width % patch:
        raise ValueError(f"patch size {patch} does not divide the latent size {height}x{width}")
    gh, gw = height // patch, width // patch
    n = gh * gw
    scores = torch.rand(batch, n, generator=generator)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    counts = torch.round(ratios.double().cpu() * n).long().clamp(0, n)
    grid = (ranks < counts[:, None]).view(batch, 1, gh, gw)
    full = grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return full.to(device, non_blocking=True)  # drawn on the CPU (its generator); the GPU need not wait


def shuffled_patches(z: torch.Tensor, patch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """z with its p x p patches permuted across the whole batch (structured "noise")."""
    b, c, h, w = z.shape
    gh, gw = h // patch, w // patch
    patches = z.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c, patch, patch)
    perm = torch.randperm(patches.shape[0], generator=generator).to(z.device, non_blocking=True)
    out = patches[perm].reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
    return out
