"""Gaussian blur in torch (so anomaly maps can stay on the GPU), equal to scipy's
`gaussian_filter` with its defaults (mode 'reflect', truncate 4.0) that the published code uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _symmetric_pad(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """scipy's 'reflect' (d c b a | a b c d | d c b a), repeated for pads longer than the axis."""
    n = x.shape[dim]
    idx = torch.arange(-pad, n + pad, device=x.device)
    period = 2 * n
    idx = idx % period
    idx = torch.where(idx >= n, period - 1 - idx, idx)
    return x.index_select(dim, idx)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur [B, H, W] (or [H, W]) maps with a separable Gaussian; sigma <= 0 returns them as is."""
    if sigma <= 0:
        return maps
    squeeze = maps.dim() == 2
    x = maps[None] if squeeze else maps
    k = _kernel(sigma, x.dtype, x.device)
    r = (k.numel() - 1) // 2
    x = x[:, None]  # B,1,H,W
    x = F.conv2d(_symmetric_pad(x, r, 2), k.view(1, 1, -1, 1))
    x = F.conv2d(_symmetric_pad(x, r, 3), k.view(1, 1, 1, -1))
    x = x[:, 0]
    return x[0] if squeeze else x
