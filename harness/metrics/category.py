"""The metric values of one category (or of a pooled set), each level from one sort.

Image level: AUROC, AUPRC, F1max of the image scores. Pixel level: the same three over all
pixels plus AUPRO, all four from one sort of the normal pixels and one search of the anomalous
pixels in it (and of the 200 thresholds, for the deco-diff-code AUPRO). A value that does not
exist is returned as an UndefinedMetric carrying the reason, never as a number. `aupro()` gives
the pixel AUPRO alone from a category's maps and masks, by the same path.
"""

from __future__ import annotations

import numpy as np

from decodiff.harness.metrics.aupro import (
    Protocol,
    aupro_deco_diff_code,
    aupro_mvtec,
    check_fpr_limit,
    check_protocol,
    deco_diff_code_thresholds,
    label_regions,
)
from decodiff.harness.metrics.curves import (
    UndefinedMetric,
    binary_metrics,
    check_defined,
    ranking_metrics,
    split_scores,
)
from decodiff.harness.metrics.ranks import Backend, Counts, count_normals, round_down_to, sort_and_count

IMAGE_METRICS: tuple[str, ...] = ("auroc", "auprc", "f1max")
PIXEL_METRICS: tuple[str, ...] = ("auroc", "auprc", "f1max", "aupro")

Value = float | UndefinedMetric  # a metric's value, or why it has none


def image_values(scores: np.ndarray, labels: np.ndarray) -> dict[str, Value]:
    """The image-level metrics (always on CPU: a few thousand scores)."""
    try:
        r = binary_metrics(scores, labels, what="images")
    except UndefinedMetric as e:
        return {m: e for m in IMAGE_METRICS}
    return {"auroc": r.auroc, "auprc": r.auprc, "f1max": r.f1max}


def pixel_values(
    normal: np.ndarray,
    anomalous: np.ndarray,
    region: np.ndarray,
    n_regions: int,
    *,
    protocol: Protocol = "mvtec",
    fpr_limit: float = 0.3,
    sort_in_place: bool = False,
    backend: Backend = "numpy",
    device: str = "cpu",
) -> dict[str, Value]:
    """All four pixel metrics from one sort of the normal pixels and one search of the
    anomalous pixels (plus, for the deco-diff-code AUPRO, of its 200 thresholds).
    `sort_in_place`: `normal` is the caller's scratch and may be reordered (numpy path)."""
    check_protocol(protocol)
    check_fpr_limit(fpr_limit)
    dtype = np.result_type(normal.dtype, anomalous.dtype)
    if normal.dtype != dtype:
        normal, sort_in_place = normal.astype(dtype), True
    anomalous = anomalous.astype(dtype, copy=False)
    on_cpu = backend == "numpy"
    if on_cpu:  # the one sort; on torch it happens on the device, inside sort_and_count
        normal = normal if sort_in_place else normal.copy()
        normal.sort()
    if normal.size and anomalous.size:
        lo = min(normal[0] if on_cpu else normal.min(), anomalous.min())
        hi = max(normal[-1] if on_cpu else normal.max(), anomalous.max())
    else:
        lo = hi = None
    try:
        check_defined(normal.size, anomalous.size, lo == hi, "pixels")
    except UndefinedMetric as e:
        return {m: e for m in PIXEL_METRICS}
    order = np.argsort(anomalous)
    anomalous, region = anomalous[order], region[order]
    queries = [anomalous]
    thresholds = None
    if protocol == "deco-diff-code":
        thresholds = deco_diff_code_thresholds(lo, hi)
        queries.append(round_down_to(dtype, thresholds))
    q = np.concatenate(queries) if len(queries) > 1 else anomalous
    counts = count_normals(normal, q) if on_cpu else sort_and_count(normal, q, backend=backend, device=device)
    p = anomalous.size
    anomalous_counts = Counts(counts.below[:p], counts.at_or_below[:p], counts.n_normal)
    r = ranking_metrics(anomalous, anomalous_counts)
    out: dict[str, Value] = {"auroc": r.auroc, "auprc": r.auprc, "f1max": r.f1max}
    try:
        if protocol == "mvtec":
            out["aupro"] = aupro_mvtec(region, anomalous_counts, n_regions, fpr_limit)
        else:
            out["aupro"] = aupro_deco_diff_code(
                anomalous, region, n_regions, thresholds, normal.size - counts.at_or_below[p:], normal.size, fpr_limit
            )
    except UndefinedMetric as e:
        out["aupro"] = e
    return out


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, protocol: Protocol = "mvtec") -> float:
    """AUPRO of a category's anomaly maps [B, H, W] against its ground-truth masks [B, H, W]."""
    maps = np.asarray(maps)
    masks = np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    labels, n_regions = label_regions(masks)
    normal, anomalous = split_scores(maps, masks)
    value = pixel_values(normal, anomalous, labels[masks] - 1, n_regions, protocol=protocol, fpr_limit=fpr_limit)[
        "aupro"
    ]
    if isinstance(value, UndefinedMetric):
        raise value
    return value
