"""Pre-processing of decoded samples into model tensors (the published protocol by default:
resize to 288 without keeping the aspect ratio, center-crop 256, map to [-1, 1]; masks follow
the same resize and crop and are thresholded at > 0)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Preprocess:
    resize: int | None = 288
    crop: int | None = 256
    translate: int = 0  # training augmentation: shift of up to +-translate px with p = 0.5
    rotate180: bool = False  # training augmentation: 180-degree rotation with p = 0.5 (VisA)
    seed: int = 0

    @property
    def size(self) -> int | None:
        return self.crop or self.resize

    def draw(self, rng: random.Random | None) -> tuple[int, int, bool]:
        """One draw of the training augmentation (dx, dy, rotate): the published one, a shift of
        up to +-translate px in each direction with p = 0.5, a 180-degree rotation with p = 0.5."""
        dx = dy = 0
        rot = False
        if rng is not None:
            if self.translate and rng.random() < 0.5:
                dx, dy = rng.randint(-self.translate, self.translate), rng.randint(-self.translate, self.translate)
            rot = self.rotate180 and rng.random() < 0.5
        return dx, dy, rot

    def variants(self) -> list[tuple[int, int, bool]]:
        """Every distinct outcome of `draw` ((2 * translate + 1)^2 shifts, x 2 with rotate180)."""
        shifts = range(-self.translate, self.translate + 1)
        rotations = (False, True) if self.rotate180 else (False,)
        return [(dx, dy, rot) for rot in rotations for dy in shifts for dx in shifts]

    def variant_probabilities(self) -> list[float]:
        """The probability `draw` gives each of `variants()`, in their order."""
        n = (2 * self.translate + 1) ** 2
        p_rot = 0.5 if self.rotate180 else 1.0
        return [
            p_rot * ((0.5 if (dx, dy) == (0, 0) else 0.0) + 0.5 / n if self.translate else 1.0)
            for dx, dy, _ in self.variants()
        ]

    def __call__(self, sample: dict[str, Any], rng: random.Random | None = None) -> dict[str, Any]:
        return self.apply(sample, *self.draw(rng))

    def apply(self, sample: dict[str, Any], dx: int = 0, dy: int = 0, rot: bool = False) -> dict[str, Any]:
        """Resize, the crop window shifted by (dx, dy), optionally rotated by 180 degrees."""
        x = sample["image"]
        mk = sample.get("mask")
        if self.resize and x.shape[:2] != (self.resize, self.resize):
            size = (self.resize, self.resize)
            x = np.asarray(Image.fromarray(x).resize(size, Image.BILINEAR))
            if mk is not None:
                mk = np.asarray(Image.fromarray(mk.astype(np.uint8) * 255).resize(size, Image.BILINEAR))
        x = _shift_crop(x, self.crop, dx, dy)
        mk = _shift_crop(mk, self.crop, dx, dy) if mk is not None else None
        if rot:
            x = x[::-1, ::-1]
            mk = mk[::-1, ::-1] if mk is not None else None
        image = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1).div_(127.5).sub_(1.0)
        h, w = image.shape[-2:]
        has_mask = mk is not None
        mask_t = torch.from_numpy(np.ascontiguousarray(mk) > 0) if has_mask else torch.zeros(h, w, dtype=torch.bool)
        meta = sample["meta"]
        return {
            "key": sample["key"],
            "image": image,
            "mask": mask_t,
            "has_mask": torch.tensor(has_mask),
            "label": torch.tensor(int(meta["label"])),
            "category": meta["category"],
            "defect": meta["defect"],
        }


def _shift_crop(x: np.ndarray, crop: int | None, dx: int, dy: int) -> np.ndarray:
    """Center crop whose window is shifted by (dx, dy); reflect-pads where it leaves the image."""
    h, w = x.shape[:2]
    ch, cw = (crop, crop) if crop else (h, w)
    top, left = (h - ch) // 2 + dy, (w - cw) // 2 + dx
    pad = max(0, -top, -left, top + ch - h, left + cw - w)
    if pad:
        widths = ((pad, pad), (pad, pad)) + (((0, 0),) if x.ndim == 3 else ())
        x = np.pad(x, widths, mode="reflect")
        top, left = top + pad, left + pad
    return x[top : top + ch, left : left + cw]


def cache_encodings(cache_augment: str, cache_variants: int, translate: int, rotate180: bool) -> int:
    """Encodings per training image in the latent cache: every distinct augmentation (`exact`) or
    `cache_variants` draws. One rule for the cache that is built and the workload that plans it."""
    if cache_augment == "exact":
        return len(Preprocess(translate=translate, rotate180=rotate180).variants())
    return int(cache_variants)
