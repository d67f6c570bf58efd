"""The anomaly map of Eq. 15 and the image score, following the published protocol.

pixel part: |x_rec - x_ref| (images in [-1, 1]), max over RGB, clipped at gamma_p and scaled
to [0, 1], blurred (sigma 3); latent part: |z0_hat - z|, mean over channels, clipped at
gamma_l and scaled, blurred at latent resolution (sigma 1), bilinearly resized; combined by
the geometric mean (or the arithmetic mean, or one part alone, for the paper's Table 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from decodiff.models.blur import gaussian_blur

COMBINATIONS = ("geometric", "arithmetic", "pixel", "latent")
IMAGE_SCORES = ("max", "topk_mean", "avgpool_max")
IMAGE_MAPS = ("map", "latent")  # what the image score is taken from: the anomaly map (published) or its latent part


@dataclass(frozen=True)
class MapSettings:
    combination: str = "geometric"
    gamma_p: float | None = 0.4  # None: no clipping or scaling (the paper's "x")
    gamma_l: float | None = 0.2
    sigma_pixel: float = 3.0
    sigma_latent: float = 1.0
    image_score: str = "max"
    topk: int = 100  # pixels averaged for "topk_mean"
    pool: int = 16  # window for "avgpool_max" (ADer's protocol)
    image_map: str = "map"  # IMAGE_MAPS


def _clip_scale(d: torch.Tensor, gamma: float | None) -> torch.Tensor:
    return d if gamma is None else d.clamp(max=gamma) / gamma


def pixel_discrepancy(x_rec: torch.Tensor, x_ref: torch.Tensor, s: MapSettings) -> torch.Tensor:
    """[B,3,H,W] x2 -> [B,H,W]."""
    d = (x_rec.float() - x_ref.float()).abs().amax(dim=1)
    return gaussian_blur(_clip_scale(d, s.gamma_p), s.sigma_pixel)


def latent_discrepancy(z0_hat: torch.Tensor, z: torch.Tensor, size: tuple[int, int], s: MapSettings) -> torch.Tensor:
    """[B,C,h,w] x2 -> [B,H,W] (blurred at latent resolution, then resized)."""
    d = (z0_hat.float() - z.float()).abs().mean(dim=1)
    d = gaussian_blur(_clip_scale(d, s.gamma_l), s.sigma_latent)
    return bilinear_resize(d, size)


def _linear_weights(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """[n_out, n_in] weights of 1-D linear interpolation on pixel centres, mirrored at the
    border (scipy's 'mirror', scikit-image's 'reflect')."""
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    if n_in == 1:
        return w.add_(1.0).to(device)
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    period = 2 * (n_in - 1)
    src = src.abs() % period
    src = torch.where(src > n_in - 1, period - src, src)
    lo = src.floor().long().clamp(0, n_in - 2)
    frac = src - lo
    rows = torch.arange(n_out)
    w.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    w.index_put_((rows, lo + 1), frac, accumulate=True)
    return w.to(device)


def bilinear_resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B,h,w] -> [B,H,W]: bilinear on pixel centres with mirrored borders, as the published
    code's `skimage.transform.resize(map, size)` (order 1, mode 'reflect') does when enlarging.
    (torch's bilinear clamps at the border instead: it differs in the outer half latent cell.)"""
    wh = _linear_weights(maps.shape[-2], size[0], maps.device).to(maps.dtype)
    ww = _linear_weights(maps.shape[-1], size[1], maps.device).to(maps.dtype)
    return torch.einsum("Hh,bhw,Ww->bHW", wh, maps, ww)


def anomaly_map(
    x_rec: torch.Tensor, x_ref: torch.Tensor, z0_hat: torch.Tensor, z: torch.Tensor, s: MapSettings = MapSettings()
) -> torch.Tensor:
    """Eq. 15 (geometric) or its ablations; [B,H,W] float32."""
    return _map_and_latent(x_rec, x_ref, z0_hat, z, s)[0]


def _map_and_latent(
    x_rec: torch.Tensor, x_ref: torch.Tensor, z0_hat: torch.Tensor, z: torch.Tensor, s: MapSettings
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The map and its latent part (None where neither the map nor the image score needs it)."""
    if s.combination not in COMBINATIONS:
        raise ValueError(f"combination must be one of {COMBINATIONS}, got {s.combination!r}")
    size = (x_ref.shape[-2], x_ref.shape[-1])
    need_latent = s.combination != "pixel" or s.image_map == "latent"
    lat = latent_discrepancy(z0_hat, z, size, s) if need_latent else None
    if s.combination == "latent":
        return lat, lat
    pix = pixel_discrepancy(x_rec, x_ref, s)
    if s.combination == "pixel":
        return pix, lat
    if s.combination == "arithmetic":
        return 0.5 * (pix + lat), lat
    return (pix.clamp(min=0) * lat.clamp(min=0)).sqrt(), lat


def image_score(maps: torch.Tensor, s: MapSettings = MapSettings()) -> torch.Tensor:
    """[B,H,W] -> [B]: max of the map (published), mean of the top-k pixels, or max after
    k x k average pooling."""
    flat = maps.flatten(1)
    if s.image_score == "max":
        return flat.amax(dim=1)
    if s.image_score == "topk_mean":
        k = min(s.topk, flat.shape[1])
        return flat.topk(k, dim=1).values.mean(dim=1)
    if s.image_score == "avgpool_max":
        pooled = F.avg_pool2d(maps[:, None], kernel_size=s.pool, stride=1)
        return pooled.flatten(1).amax(dim=1)
    raise ValueError(f"image_score must be one of {IMAGE_SCORES}, got {s.image_score!r}")


def scored_maps(
    x_rec: torch.Tensor, x_ref: torch.Tensor, z0_hat: torch.Tensor, z: torch.Tensor, s: MapSettings = MapSettings()
) -> tuple[torch.Tensor, torch.Tensor]:
    """The anomaly map [B,H,W] and the image scores [B] of `s.image_map`: of the map (published), or of
    its latent part alone, the map staying the localisation. Where the VAE blurs a texture (the demo's
    grass) the pixel part is high all over the image and can hide the defect from the maximum; not a
    general gain (README: "The image score from the latent part")."""
    if s.image_map not in IMAGE_MAPS:
        raise ValueError(f"image_map must be one of {IMAGE_MAPS}, got {s.image_map!r}")
    maps, lat = _map_and_latent(x_rec, x_ref, z0_hat, z, s)
    return maps, image_score(maps if s.image_map == "map" else lat, s)
