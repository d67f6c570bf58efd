"""All seven metrics of a test set: per category, their mean over categories, and pooled.

`MetricSuite` is what evaluation talks to: `update(category, ...)` per batch, `compute()` once.
It returns the long table of the results contract (shared/DESIGN.md), one record per
(category, level, metric):

    {"dataset", "category", "level": "image"|"pixel", "metric": "auroc"|"auprc"|"f1max"|"aupro",
     "value": float | None, "reason": str (only when value is None)}

plus, on AUPRO records, "protocol" ("mvtec" | "deco-diff-code") and "fpr_limit"; and on the
aggregate records, "aggregate": "mean" | "pooled". Aggregates use the category names "mean"
and "pooled":
- mean: the unweighted mean of the defined per-category values, with "n_categories" (how many
  were averaged) and, where some category had no value, "skipped" (their names); no value
  (with a reason) when no category has one;
- pooled: every category's images (image level) or pixels (pixel level) ranked together as one
  set; regions stay per image, the FPR is over all normal pixels of all categories.
A metric that cannot be computed (no anomalies, no normals, constant scores, no masks) has
value None and the reason; never a made-up 0.5 or 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from decodiff.harness.metrics.aupro import check_fpr_limit, check_protocol
from decodiff.harness.metrics.category import IMAGE_METRICS, PIXEL_METRICS, Value, image_values, pixel_values
from decodiff.harness.metrics.curves import UndefinedMetric
from decodiff.harness.metrics.ranks import Backend
from decodiff.harness.metrics.streaming import CategoryAccumulator, ImageData, ScoredBatch

MEAN = "mean"
POOLED = "pooled"


def choose_backend(device: str, backend: Backend | None = None) -> tuple[Backend, str]:
    """numpy on CPU; torch on a CUDA device when CUDA is there (else numpy, said on stderr)."""
    if backend is not None:
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
        return backend, device
    if device.startswith("cuda"):
        import torch  # only asked for a CUDA device (0.7 s): the numpy path starts without it

        if torch.cuda.is_available():
            return "torch", device
        print(
            f"[decodiff] metrics: device {device!r} asked for but CUDA is not available; using numpy on CPU",
            file=sys.stderr,
        )
    return "numpy", "cpu"


def record(dataset: str, category: str, level: str, metric: str, value: Value, **extra: Any) -> dict[str, Any]:
    """One row of the long table; an UndefinedMetric becomes value None with its reason."""
    rec: dict[str, Any] = {"dataset": dataset, "category": category, "level": level, "metric": metric}
    if isinstance(value, UndefinedMetric):
        rec["value"] = None
        rec["reason"] = str(value)
    else:
        rec["value"] = float(value)
    rec.update(extra)
    return rec


def mean_records(records: Sequence[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """The mean over categories of each (level, metric), skipping undefined values and saying so."""
    out = []
    keys = list(dict.fromkeys((r["level"], r["metric"]) for r in records if r["category"] not in (MEAN, POOLED)))
    for level, metric in keys:
        rows = [
            r for r in records if r["level"] == level and r["metric"] == metric and r["category"] not in (MEAN, POOLED)
        ]
        defined = [r for r in rows if r["value"] is not None]
        skipped = [r["category"] for r in rows if r["value"] is None]
        extra: dict[str, Any] = {"aggregate": MEAN, "n_categories": len(defined)}
        if skipped:
            extra["skipped"] = skipped
        extra.update({k: rows[0][k] for k in ("protocol", "fpr_limit") if k in rows[0]})
        if defined:
            value: Value = float(np.mean([r["value"] for r in defined]))
        else:
            value = UndefinedMetric(f"undefined in every category ({len(rows)})")
        out.append(record(dataset, MEAN, level, metric, value, **extra))
    return out


class MetricSuite:
    """Streams a test set's image scores and anomaly maps; computes the long table.

    `device="cuda"` runs the pixel metrics' sort and searches with torch on the GPU (same
    values as numpy, tested); anything else runs numpy on CPU. Memory: the state holds each
    pixel's score once (float32 maps: 4 bytes a pixel, plus 4 per anomalous pixel for its
    region); compute adds one scratch copy of the largest category's normal scores, or of all
    of them for the pooled pixel metrics, which `pooled=False` skips."""

    def __init__(
        self,
        dataset: str,
        aupro_protocol: str = "mvtec",
        fpr_limit: float = 0.3,
        device: str = "cpu",
        *,
        backend: Backend | None = None,
        pooled: bool = True,
    ) -> None:
        check_protocol(aupro_protocol)
        check_fpr_limit(fpr_limit)
        self.dataset = dataset
        self.aupro_protocol = aupro_protocol
        self.fpr_limit = float(fpr_limit)
        self.backend, self.device = choose_backend(device, backend)
        self.pooled = pooled
        self.state: dict[str, CategoryAccumulator] = {}
        self._seen: set[str] = set()
        self.timings: dict[str, float] = {}  # seconds the last compute spent per part (for logs)

    @property
    def categories(self) -> list[str]:
        return list(self.state)

    def update(
        self,
        category: str,
        image_scores: Any,
        image_labels: Any,
        maps: Any = None,
        masks: Any = None,
        keys: Sequence[str] | None = None,
    ) -> None:
        """Add a batch of one category: image scores [B], labels [B] (0/1), anomaly maps
        [B,H,W] and ground-truth masks [B,H,W] (None: these samples have no masks)."""
        if keys is not None:
            keys = [str(k) for k in keys]
            dup = [k for k in keys if k in self._seen] or [k for k in set(keys) if keys.count(k) > 1]
            if dup:
                raise ValueError(f"sample key {dup[0]!r} given twice")
        self.state.setdefault(category, CategoryAccumulator()).update(
            ScoredBatch(image_scores, image_labels, maps, masks, keys)
        )
        if keys is not None:
            self._seen.update(keys)

    def merge(self, other: MetricSuite) -> None:
        """Add the samples another suite saw (another rank's share of the test set)."""
        for cat, acc in other.state.items():
            self.state.setdefault(cat, CategoryAccumulator()).merge(acc)
        self._seen |= other._seen

    def images(self, category: str | None = None) -> ImageData:
        """Keys, image scores and labels of one category (or of all, in category order): what a
        bootstrap over images needs, without touching the pixel state."""
        accs = [self.state[category]] if category is not None else list(self.state.values())
        parts = [a.images() for a in accs]
        if not parts:
            return ImageData([], np.zeros(0), np.zeros(0, dtype=np.int8))
        return ImageData(
            [k for p in parts for k in p.keys],
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
        )

    def _pixel_records(self, category: str, values: dict[str, Value], **extra: Any) -> list[dict[str, Any]]:
        aupro_extra = {"protocol": self.aupro_protocol, "fpr_limit": self.fpr_limit}
        return [
            record(self.dataset, category, "pixel", m, values[m], **extra, **(aupro_extra if m == "aupro" else {}))
            for m in PIXEL_METRICS
        ]

    def compute(self) -> list[dict[str, Any]]:
        """The long table: per category (in the order first seen), then mean, then pooled."""
        with_pixels = [a for a in self.state.values() if a.pixels_unavailable() is None]
        pooled_pixels = self.pooled and len(with_pixels) == len(self.state) > 0
        scratch = None
        if with_pixels:  # one buffer for every category's sort (and then the pooled one)
            sizes = [a.n_normal_pixels for a in with_pixels]
            scratch = np.empty(
                sum(sizes) if pooled_pixels else max(sizes), dtype=np.result_type(*[a.pixel_dtype for a in with_pixels])
            )
        start = time.perf_counter()
        records: list[dict[str, Any]] = []
        for cat, acc in self.state.items():
            img = acc.image_values()
            records += [record(self.dataset, cat, "image", m, img[m]) for m in IMAGE_METRICS]
            pix = acc.pixel_values(self.aupro_protocol, self.fpr_limit, self.backend, self.device, scratch=scratch)
            records += self._pixel_records(cat, pix)
        records += mean_records(records, self.dataset)
        middle = time.perf_counter()
        if self.state:
            records += self._pooled_records(scratch if pooled_pixels else None)
        self.timings = {"categories_and_mean_s": middle - start, "pooled_s": time.perf_counter() - middle}
        return records

    def _pooled_records(self, scratch: np.ndarray | None = None) -> list[dict[str, Any]]:
        img = self.images()
        values = image_values(img.scores, img.labels)
        out = [record(self.dataset, POOLED, "image", m, values[m], aggregate=POOLED) for m in IMAGE_METRICS]
        missing = [c for c, a in self.state.items() if a.pixels_unavailable() is not None]
        if missing:
            pix: dict[str, Value] = {
                m: UndefinedMetric(f"pixel metrics not available for categories {missing}") for m in PIXEL_METRICS
            }
        elif not self.pooled:
            pix = {m: UndefinedMetric("pooled pixel metrics not computed (pooled=False)") for m in PIXEL_METRICS}
        else:
            pix = self._pooled_pixel_values(scratch)
        return out + self._pixel_records(POOLED, pix, aggregate=POOLED)

    def _pooled_pixel_values(self, scratch: np.ndarray | None = None) -> dict[str, Value]:
        accs = list(self.state.values())
        dtype = np.result_type(*[a.pixel_dtype for a in accs])
        n = sum(a.n_normal_pixels for a in accs)
        normal = (
            scratch[:n]
            if scratch is not None and scratch.size >= n and scratch.dtype == dtype
            else np.empty(n, dtype=dtype)
        )
        start, anomalous, region, offset = 0, [], [], 0
        for a in accs:
            part, anom, reg = a.pixels(out=normal[start:])
            start += part.size
            anomalous.append(anom)
            region.append(reg + np.int32(offset))
            offset += a.n_regions
        return pixel_values(
            normal,
            np.concatenate(anomalous).astype(dtype, copy=False),
            np.concatenate(region),
            offset,
            protocol=self.aupro_protocol,
            fpr_limit=self.fpr_limit,
            sort_in_place=True,
            backend=self.backend,
            device=self.device,
        )
