"""A nearest-neighbour baseline on VAE latents: what PatchCore does with CNN features, done with
the frozen VAE's latents. Each latent cell is described by its 3x3 neighbourhood (C x 9 values,
borders mirrored); a memory bank holds such patches of a category's normal training latents
(a seeded random subset when there are more than `bank_size`); a test cell's anomaly is the
Euclidean distance to its nearest patch in the bank of its category. The image score is the
map's maximum. No training, no diffusion model: a floor that DeCo-Diff has to clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

PATCH = 3  # neighbourhood of a latent cell


def latent_patches(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h*w, C*PATCH*PATCH]: each cell with its neighbourhood (mirrored borders)."""
    r = PATCH // 2
    mode = "reflect" if min(z.shape[-2:]) > r else "replicate"
    cols = F.unfold(F.pad(z.float(), (r, r, r, r), mode=mode), kernel_size=PATCH)
    return cols.transpose(1, 2).contiguous()


class LatentNearestNeighbour:
    """Memory banks per category, filled from training latents, and the distance maps of test latents."""

    def __init__(self, bank_size: int = 16384, seed: int = 0, chunk: int = 4096) -> None:
        self.bank_size = bank_size
        self.seed = seed
        self.chunk = chunk
        self._parts: dict[str, list[torch.Tensor]] = {}
        self.banks: dict[str, torch.Tensor] = {}

    def add(self, z: torch.Tensor, categories: Sequence[str]) -> None:
        """Training latents [B, C, h, w] of the named categories."""
        patches = latent_patches(z).cpu()
        for i, c in enumerate(categories):
            self._parts.setdefault(c, []).append(patches[i])

    def fit(self) -> dict[str, int]:
        """Build the banks (a seeded random subset of `bank_size` patches per category); the sizes."""
        g = torch.Generator().manual_seed(self.seed)
        for c, parts in self._parts.items():
            bank = torch.cat(parts)
            if bank.shape[0] > self.bank_size:
                bank = bank[torch.randperm(bank.shape[0], generator=g)[: self.bank_size]]
            self.banks[c] = bank
        self._parts.clear()
        return {c: b.shape[0] for c, b in self.banks.items()}

    def distances(self, z: torch.Tensor, categories: Iterable[str]) -> torch.Tensor:
        """[B, C, h, w] -> [B, h, w]: each cell's distance to the nearest bank patch of its image's category."""
        cats = list(categories)
        missing = sorted({c for c in cats if c not in self.banks})
        if missing:
            raise ValueError(f"latent-nn: no training latents for categories {missing}")
        patches = latent_patches(z)
        out = torch.empty(patches.shape[:2], dtype=torch.float32, device=z.device)
        for c in dict.fromkeys(cats):  # one distance computation per category in the batch
            rows = [i for i, ci in enumerate(cats) if ci == c]
            bank = self.banks[c].to(z.device)
            q = patches[rows].reshape(-1, patches.shape[-1])
            best = torch.full((q.shape[0],), float("inf"), device=z.device)
            for j in range(0, bank.shape[0], self.chunk):
                best = torch.minimum(best, torch.cdist(q, bank[j : j + self.chunk]).amin(dim=1))
            out[rows] = best.view(len(rows), -1)
        return out.view(z.shape[0], z.shape[-2], z.shape[-1])
