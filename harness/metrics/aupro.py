"""AUPRO: the area under the per-region-overlap curve up to a false-positive-rate limit.

Regions are the connected components of each ground-truth mask, 8-connected (a pixel touches
its 8 neighbours), as in the MVTec-AD evaluation code, which labels each mask with
`scipy.ndimage.label` and a 3x3 structure of ones. The DeCo-Diff code's `skimage.measure.label`
defaults to the same full connectivity in 2D, so both protocols see the same regions. Regions
never join across images.

Two protocols, always labelled in the results:

- `"mvtec"` (the MVTec-AD definition, exact): at every distinct threshold t, PRO(t) is the mean
  over all regions of the fraction of the region's pixels scoring >= t, FPR(t) the fraction of
  all normal pixels of the category scoring >= t. The curve joins these points (plus (0, 0))
  with straight lines, is integrated exactly from FPR 0 up to the limit (interpolating linearly
  inside the segment that crosses it) and divided by the limit.
  Computed without any per-threshold pass: an anomalous pixel p of region r lifts the curve by
  w = 1/(R*|r|) from the FPR at which its score is reached; if normal pixels tie with it, that
  lift is a linear ramp across the tie's FPR interval [a, b]. The area up to L is therefore
  sum_p w * (L - (a+b)/2) for b <= L, w * (L-a)^2 / (2(b-a)) for a < L < b, 0 beyond, and
  a, b are the counts of normal pixels above / at-or-above p's score, from one sort.
- `"deco-diff-code"` (the variant that produced the DeCo-Diff paper's numbers, reproduced from
  the facts in shared/paper/reference-implementation-facts.md): thresholds
  `np.arange(min, max, (max - min) / 200)` over the category's maps (in the maps' dtype, as the
  published code computes them), a pixel counts above a threshold when its score is strictly
  greater; per-region overlap averaged over regions, FPR over normal pixels; the points with
  FPR < limit are kept, their FPR axis divided by the largest kept FPR (not by the limit), and
  the trapezoid area returned (as sklearn.metrics.auc would, for a decreasing x).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from decodiff.harness.metrics.curves import UndefinedMetric
from decodiff.harness.metrics.ranks import Counts

Protocol = Literal["mvtec", "deco-diff-code"]
PROTOCOLS: tuple[str, ...] = ("mvtec", "deco-diff-code")
CONNECTIVITY = 8
"""Pixels are neighbours when they share an edge or a corner (scipy.ndimage.label with a 3x3
structure of ones, as the MVTec-AD evaluation code does)."""
DECO_DIFF_CODE_THRESHOLDS = 200

# 3x3x3 structure whose only non-zero plane is the middle one: 8-connectivity inside each
# image of a [B, H, W] stack, no connection between images. One scipy call labels a batch.
_STACK_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STACK_STRUCTURE[1] = True


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions of a [B, H, W] (or [H, W]) boolean mask stack: int32 labels 1..n,
    distinct across images, 0 on normal pixels; and n."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        return ndimage.label(masks, structure=np.ones((3, 3), dtype=bool))
    if masks.ndim != 3:
        raise ValueError(f"masks must be [B, H, W] or [H, W], got shape {masks.shape}")
    labels, n = ndimage.label(masks, structure=_STACK_STRUCTURE)
    return labels, int(n)


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown AUPRO protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def check_fpr_limit(fpr_limit: float) -> None:
    if not 0.0 < float(fpr_limit) <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def _region_sizes(region: np.ndarray, n_regions: int) -> np.ndarray:
    return np.bincount(region, minlength=n_regions).astype(np.float64)


def aupro_mvtec(region: np.ndarray, counts: Counts, n_regions: int, fpr_limit: float = 0.3) -> float:
    """Exact MVTec-AD AUPRO from the anomalous pixels' region ids (0..n_regions-1) and, for each
    of those pixels, the counts of normal pixels below / at-or-below its score."""
    n = counts.n_normal
    lim = float(fpr_limit) * n  # the limit in units of normal pixels
    above = (n - counts.at_or_below).astype(np.float64)  # normal pixels strictly above: FPR a*n
    reached = (n - counts.below).astype(np.float64)  # normal pixels at or above: FPR b*n
    area = np.zeros(region.size, dtype=np.float64)
    full = reached <= lim
    area[full] = lim - 0.5 * (above[full] + reached[full])
    cut = ~full & (above < lim)  # the tie interval contains the limit
    area[cut] = (lim - above[cut]) ** 2 / (2.0 * (reached[cut] - above[cut]))
    per_region = np.bincount(region, weights=area, minlength=n_regions) / _region_sizes(region, n_regions)
    return float(per_region.mean() / lim)


def deco_diff_code_thresholds(
    vmin: np.floating, vmax: np.floating, steps: int = DECO_DIFF_CODE_THRESHOLDS
) -> np.ndarray:
    """The published code's thresholds: np.arange(min, max, (max - min) / steps), computed from
    min and max in the maps' own dtype (numpy returns float64; the count may be steps + 1)."""
    if not vmax > vmin:
        raise UndefinedMetric("all pixel scores are equal (no thresholds between min and max)")
    return np.arange(vmin, vmax, (vmax - vmin) / steps)


def aupro_deco_diff_code(
    anomalous: np.ndarray,
    region: np.ndarray,
    n_regions: int,
    thresholds: np.ndarray,
    normal_above: np.ndarray,
    n_normal: int,
    fpr_limit: float = 0.3,
) -> float:
    """The DeCo-Diff code's AUPRO. `normal_above[j]`: normal pixels scoring > thresholds[j]."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    t = thresholds.size
    # a pixel is above thresholds[j] for j < k, where k = #thresholds strictly below its score
    k = np.searchsorted(thresholds, anomalous.astype(np.float64), side="left")
    weight = 1.0 / _region_sizes(region, n_regions)[region]
    hist = np.bincount(k, weights=weight, minlength=t + 1)
    pro = np.cumsum(hist[::-1])[::-1][1:] / n_regions  # pro[j] = sum over k > j
    fpr = np.asarray(normal_above, dtype=np.float64) / n_normal
    keep = fpr < fpr_limit
    if keep.sum() < 2:
        raise UndefinedMetric(f"fewer than 2 of the {t} thresholds have FPR < {fpr_limit} (deco-diff-code protocol)")
    x, y = fpr[keep], pro[keep]
    if x.max() == 0:
        raise UndefinedMetric(
            "every kept threshold has FPR 0, so the FPR axis cannot be rescaled (deco-diff-code protocol)"
        )
    x = x / x.max()
    # thresholds ascend, so x descends: the area is sum (x_i - x_{i+1}) * (y_i + y_{i+1}) / 2
    return float(np.sum((x[:-1] - x[1:]) * (y[:-1] + y[1:])) / 2.0)
