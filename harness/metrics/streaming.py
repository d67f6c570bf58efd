"""One category's metric state, filled batch by batch (torchmetrics style: update, compute).

The state keeps what the exact metrics need and nothing more:
- per image: key, score and label (also what a bootstrap over images resamples);
- per pixel, split at update time by the ground-truth mask: the normal pixels' scores, the
  anomalous pixels' scores and each anomalous pixel's region id (8-connected components of
  its image's mask, numbered across the category). Scores keep the dtype they came in
  (float32 maps stay float32: 4 bytes a pixel plus 4 per anomalous pixel for the region id);
  float16 is widened to float32, integers to float64, all exactly. Nothing is ever held as
  float64 unless it arrived as float64.
The normal scores stay in the chunks they arrived in; compute copies each category's into one
scratch buffer (reused across categories, so no second copy of the state is ever made) and
sorts that. Merging states (distributed ranks) just appends chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from decodiff.harness.metrics.aupro import Protocol, label_regions
from decodiff.harness.metrics.category import PIXEL_METRICS, Value, image_values, pixel_values
from decodiff.harness.metrics.curves import UndefinedMetric
from decodiff.harness.metrics.ranks import Backend


def as_numpy(x: Any) -> np.ndarray:
    """numpy view of an array or a (possibly CUDA, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _score_dtype(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.float16:
        return a.astype(np.float32)
    if not np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64)
    return a


def _first_bad(values: np.ndarray, keys: Sequence[str] | None) -> str:
    bad = np.flatnonzero(~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1))[0]
    return repr(keys[bad]) if keys is not None else f"batch index {bad}"


@dataclass
class ImageData:
    """A category's image-level samples, in update order (what a bootstrap resamples)."""

    keys: list[str | None]
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class ScoredBatch:
    """What MetricSuite.update hands to a category's accumulator: its arguments but the category."""

    image_scores: Any
    image_labels: Any
    maps: Any
    masks: Any
    keys: Sequence[str] | None


class CategoryAccumulator:
    """Image scores/labels and pixel scores split by ground truth, for one category."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._normal: list[np.ndarray] = []
        self._anomalous: list[np.ndarray] = []
        self._region: list[np.ndarray] = []
        self.n_regions = 0
        self.n_with_mask = 0  # images whose pixels are in the pixel state
        self.n_without_mask = 0  # images given without a mask (or without a map)

    # -- filling ---------------------------------------------------------------------------
    def update(self, batch: ScoredBatch) -> None:
        """Add a batch. `maps` [B,H,W] float; `masks` [B,H,W] bool (non-zero = anomalous) or
        None when these samples have no ground-truth masks (their pixels are then left out and
        the category's pixel metrics are reported as not available)."""
        maps, masks, keys = batch.maps, batch.masks, batch.keys
        scores = _score_dtype(as_numpy(batch.image_scores)).reshape(-1)
        labels = as_numpy(batch.image_labels).reshape(-1)
        b = scores.shape[0]
        if labels.shape[0] != b:
            raise ValueError(f"{b} image scores but {labels.shape[0]} labels")
        if keys is not None and len(keys) != b:
            raise ValueError(f"{b} image scores but {len(keys)} keys")
        if not np.isfinite(scores).all():
            raise ValueError(f"image score is NaN or inf for sample {_first_bad(scores, keys)}")
        if labels.dtype != bool and not np.isin(labels, (0, 1)).all():
            raise ValueError(f"image labels must be 0/1, got values {np.unique(labels)[:10].tolist()}")
        if maps is not None:
            maps = _score_dtype(as_numpy(maps))
            if maps.ndim == 2 and b == 1:
                maps = maps[None]
            if maps.ndim != 3 or maps.shape[0] != b:
                raise ValueError(f"maps must be [B, H, W] with B = {b}, got shape {maps.shape}")
            if not (np.isfinite(maps.min()) and np.isfinite(maps.max())):  # NaN propagates; no temporary
                raise ValueError(f"anomaly map has NaN or inf values for sample {_first_bad(maps, keys)}")
        if maps is not None and masks is not None:
            masks = as_numpy(masks)
            if masks.ndim == 2 and b == 1:
                masks = masks[None]
            if masks.shape != maps.shape:
                raise ValueError(
                    f"masks {masks.shape} and maps {maps.shape} differ in shape"
                    + (f" (first sample {keys[0]!r})" if keys else "")
                )
            masks = masks.astype(bool, copy=False)
            self._normal.append(maps[~masks])
            anomalous_images = masks.any(axis=(1, 2))
            if anomalous_images.any():  # label only the images with anomalous pixels (same pixel order)
                sub = masks if anomalous_images.all() else masks[anomalous_images]
                regions, n = label_regions(sub)
                self._anomalous.append(maps[masks])
                self._region.append((regions[sub] - 1 + self.n_regions).astype(np.int32, copy=False))
                self.n_regions += n
            self.n_with_mask += b
        else:
            self.n_without_mask += b
        self._scores.append(scores)
        self._labels.append(labels.astype(np.int8))
        self.keys.extend(keys if keys is not None else [None] * b)

    def merge(self, other: CategoryAccumulator) -> None:
        """Add another accumulator's samples (e.g. from another rank) to this one."""
        self.keys.extend(other.keys)
        self._scores.extend(other._scores)
        self._labels.extend(other._labels)
        self._normal.extend(other._normal)
        self._anomalous.extend(other._anomalous)
        self._region.extend(r + self.n_regions for r in other._region)
        self.n_regions += other.n_regions
        self.n_with_mask += other.n_with_mask
        self.n_without_mask += other.n_without_mask

    # -- reading ---------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return len(self.keys)

    def images(self) -> ImageData:
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=np.int8)
        return ImageData(list(self.keys), scores, labels)

    @property
    def n_normal_pixels(self) -> int:
        return sum(p.size for p in self._normal)

    @property
    def pixel_dtype(self) -> np.dtype:
        return np.result_type(*self._normal, *self._anomalous) if self._normal else np.dtype(np.float32)

    def pixels(self, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normal scores, anomalous scores, region ids) as one array each. The normal scores
        are written into `out` (a scratch buffer that the caller reuses across categories and
        may sort in place), else into a new array; the state itself stays as it is."""
        normal = (
            np.concatenate(self._normal, out=None if out is None else out[: self.n_normal_pixels])
            if self._normal
            else np.zeros(0, dtype=np.float32)
        )
        for parts in (self._anomalous, self._region):  # small: consolidated once, kept
            if len(parts) > 1:
                parts[:] = [np.concatenate(parts)]
        anomalous = self._anomalous[0] if self._anomalous else np.zeros(0, dtype=normal.dtype)
        region = self._region[0] if self._region else np.zeros(0, dtype=np.int32)
        return normal, anomalous, region

    def pixels_unavailable(self) -> str | None:
        """Why the pixel metrics cannot be computed for lack of data, or None."""
        if self.n_without_mask:
            return (
                f"no ground-truth mask (or no anomaly map) for {self.n_without_mask} of "
                f"{self.n_images} images: pixel metrics are not available"
            )
        if self.n_with_mask == 0:
            return "no anomaly maps given"
        return None

    # -- metrics ---------------------------------------------------------------------------
    def image_values(self) -> dict[str, Value]:
        img = self.images()
        return image_values(img.scores, img.labels)

    def pixel_values(
        self,
        protocol: Protocol = "mvtec",
        fpr_limit: float = 0.3,
        backend: Backend = "numpy",
        device: str = "cpu",
        scratch: np.ndarray | None = None,
    ) -> dict[str, Value]:
        """The four pixel metrics; `scratch` (>= n_normal_pixels, of pixel_dtype) saves a fresh
        copy of the normal scores, which the sort needs."""
        reason = self.pixels_unavailable()
        if reason is not None:
            return {m: UndefinedMetric(reason) for m in PIXEL_METRICS}
        normal, anomalous, region = self.pixels(out=scratch)
        return pixel_values(
            normal,
            anomalous,
            region,
            self.n_regions,
            protocol=protocol,
            fpr_limit=fpr_limit,
            sort_in_place=True,
            backend=backend,
            device=device,
        )
