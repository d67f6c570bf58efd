"""A nearest-neighbour baseline on VAE latents: what PatchCore does with CNN features, done with
the frozen VAE's latents. Each latent cell is described by its 3x3 neighbourhood (C x 9 values,
borders mirrored); a memory bank holds such patches of a category's normal training latents
(a seeded random subset when there are more than `bank_size`); a test cell's anomaly is the
Euclidean distance to its nearest patch in the bank of its category. The image score is the
map's maximum. No training, no diffusion model: a floor that DeCo-Diff has to clear.

The distances are computed tile by tile (`tile` queries x `tile` bank patches, 4 MiB of float32 at
1,024): |q|^2 - 2 q.b + |b|^2 by one matrix product per tile, the minimum taken while the tile is in
the cache, the square root only of each query's minimum: `torch.cdist` over 4,096-patch slices wrote
5k x 4k blocks of distances through main memory. The formula is the one cdist's matrix-product path uses
(metrics equal to 1e-9); the baselines' share of an evaluation fell from 0.107 to 0.05
(benchmarks/baseline_cost.py).
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

    def __init__(self, bank_size: int = 16384, seed: int = 0, tile: int = 1024) -> None:
        self.bank_size = bank_size
        self.seed = seed
        self.tile = tile
        self._parts: dict[str, list[torch.Tensor]] = {}
        self.banks: dict[str, torch.Tensor] = {}
        self._norms: dict[str, torch.Tensor] = {}  # |b|^2 per bank patch

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
            self._norms[c] = bank.square().sum(dim=1)
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
            bank, norms = self.banks[c].to(z.device), self._norms[c].to(z.device)
            q = patches[rows].reshape(-1, patches.shape[-1])
            out[rows] = self._nearest(q, bank, norms).view(len(rows), -1)
        return out.view(z.shape[0], z.shape[-2], z.shape[-1])

    def _nearest(self, q: torch.Tensor, bank: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """[N, D] queries -> [N] Euclidean distance to the nearest row of `bank` ([M, D], |row|^2 `norms`)."""
        out = torch.empty(q.shape[0], dtype=torch.float32, device=q.device)
        for i in range(0, q.shape[0], self.tile):
            qi = q[i : i + self.tile]
            best = torch.full((qi.shape[0],), float("inf"), device=q.device)
            for j in range(0, bank.shape[0], self.tile):
                # |b|^2 - 2 q.b for this tile; |q|^2 is the same along a row, so it is added to the minimum
                d = torch.addmm(norms[None, j : j + self.tile], qi, bank[j : j + self.tile].T, alpha=-2)
                best = torch.minimum(best, d.amin(dim=1))
            out[i : i + self.tile] = (best + qi.square().sum(dim=1)).clamp_min(0).sqrt()
        return out
