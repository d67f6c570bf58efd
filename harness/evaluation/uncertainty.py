"""Bootstrap intervals over test images for every metric, per category and for the mean row.

Image level: resample a category's test images (normal and anomalous apart, so both classes
stay present) and recompute AUROC / AUPRC / F1max exactly on each resample.

Pixel level: recomputing the exact pixel metrics a thousand times is out of reach on real data
sets, so evaluation keeps, per test image, histograms of its normal and anomalous pixel scores
and, per threshold bin, the summed overlap of its defect regions (PixelStats). A resample is then
a weighted sum of those per-image rows (one matrix product), and AUROC, AP, F1max and AUPRO (the
MVTec-AD definition) follow from the cumulative counts at 2,304 thresholds: 2,048 even steps on
[0, 1] (the range of the published maps, whose parts are clipped and scaled to [0, 1]) and 256
geometric steps up to 1,000 for maps without clipping. Point values stay the exact ones from the
metric suite; the intervals are percentile intervals of the resampled values. The same per-image
rows give the pixel ROC / PR curves and each anomalous image's own pixel AP (which ranks the best,
typical and worst examples of the qualitative figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from decodiff.datasets.files import write_atomic
from decodiff.harness.metrics import label_regions

THRESHOLDS = np.concatenate([np.linspace(0.0, 1.0, 2049)[:-1], np.geomspace(1.0, 1000.0, 256)])
"""Lower edges of the score bins: a pixel lands in the last bin whose edge it reaches (scores
below 0 in the first, above 1,000 in the last)."""
BINS = THRESHOLDS.size
PIXEL_METRICS = ("auroc", "auprc", "f1max", "aupro")
IMAGE_METRICS = ("auroc", "auprc", "f1max")


def bin_index(scores: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(THRESHOLDS, np.asarray(scores, dtype=np.float64).ravel(), side="right") - 1
    return np.clip(idx, 0, BINS - 1)


@dataclass
class _Category:
    keys: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    h_norm: list[np.ndarray] = field(default_factory=list)  # uint32 [BINS] per image
    h_anom: dict[int, np.ndarray] = field(default_factory=dict)  # image index -> uint32 [BINS]
    pro: dict[int, np.ndarray] = field(default_factory=dict)  # image index -> float64 [BINS]
    n_regions: list[int] = field(default_factory=list)
    unavailable: str | None = None  # why this category has no pixel statistics


class PixelStats:
    """Per-image pixel statistics, filled batch by batch during evaluation."""

    def __init__(self) -> None:
        self.categories: dict[str, _Category] = {}

    def update(
        self, category: str, keys: list[str], labels: np.ndarray, maps: np.ndarray, masks: np.ndarray | None
    ) -> None:
        """Maps [B, H, W] and masks [B, H, W] (None: these images have no masks) of one category."""
        c = self.categories.setdefault(category, _Category())
        if masks is None:
            c.unavailable = c.unavailable or "some test images have no ground-truth mask"
        if c.unavailable:
            return
        for i, key in enumerate(keys):
            m = np.asarray(masks[i], dtype=bool)
            bins = bin_index(maps[i])
            flat = m.ravel()
            c.keys.append(str(key))
            c.labels.append(int(labels[i]))
            c.h_norm.append(np.bincount(bins[~flat], minlength=BINS).astype(np.uint32))
            n_reg = 0
            if flat.any():
                idx = len(c.keys) - 1
                regions, n_reg = label_regions(m)
                region = regions.ravel()[flat] - 1
                b = bins[flat]
                c.h_anom[idx] = np.bincount(b, minlength=BINS).astype(np.uint32)
                sizes = np.bincount(region, minlength=n_reg).astype(np.float64)
                c.pro[idx] = np.bincount(b, weights=1.0 / sizes[region], minlength=BINS)
            c.n_regions.append(int(n_reg))

    def arrays(self, category: str) -> dict[str, np.ndarray] | None:
        """Dense per-image rows of one category (None where it has no pixel statistics)."""
        c = self.categories.get(category)
        if c is None or c.unavailable or not c.keys:
            return None
        n = len(c.keys)
        h_anom = np.zeros((n, BINS), dtype=np.float64)
        pro = np.zeros((n, BINS), dtype=np.float64)
        for i, h in c.h_anom.items():
            h_anom[i] = h
            pro[i] = c.pro[i]
        return {
            "keys": np.array(c.keys),
            "labels": np.array(c.labels, dtype=np.int8),
            "h_norm": np.stack(c.h_norm).astype(np.float64),
            "h_anom": h_anom,
            "pro": pro,
            "n_regions": np.array(c.n_regions, dtype=np.float64),
        }

    def save(self, path: Path) -> None:
        """All categories' rows in one .npz (for recomputing intervals with other settings)."""
        out: dict[str, np.ndarray] = {"thresholds": THRESHOLDS, "categories": np.array(list(self.categories))}
        for i, cat in enumerate(self.categories):
            a = self.arrays(cat)
            if a is None:
                continue
            for k, v in a.items():
                out[f"c{i}_{k}"] = v.astype(np.uint32) if k in ("h_norm", "h_anom") else v
        write_atomic(path, lambda p: np.savez_compressed(p, **out))


# ---- metrics from binned counts ------------------------------------------------------------------
def _top_cumsum(h: np.ndarray) -> np.ndarray:
    """[..., BINS] -> counts at or above each threshold."""
    return np.cumsum(h[..., ::-1], axis=-1)[..., ::-1]


def binned_pixel_metrics(
    hn: np.ndarray, ha: np.ndarray, pro: np.ndarray, n_regions: np.ndarray, fpr_limit: float
) -> dict[str, np.ndarray]:
    """AUROC, AP, F1max and MVTec-AD AUPRO of each row of binned counts ([R, BINS] each,
    n_regions [R]); NaN where a row has no normal or no anomalous pixel."""
    n = hn.sum(axis=1)
    p = ha.sum(axis=1)
    fp = _top_cumsum(hn)
    tp = _top_cumsum(ha)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = n[:, None] - fp  # normal pixels strictly below each bin
        auroc = (ha * (below + 0.5 * hn)).sum(axis=1) / (p * n)
        prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = (ha * prec).sum(axis=1) / p
        f1 = np.max(np.where(tp > 0, 2.0 * tp / (tp + fp + p[:, None]), 0.0), axis=1)
        # PRO curve: thresholds descending -> FPR ascending, starting at (0, 0)
        x = np.concatenate([np.zeros((hn.shape[0], 1)), (fp / n[:, None])[:, ::-1]], axis=1)
        y = np.concatenate([np.zeros((hn.shape[0], 1)), (_top_cumsum(pro) / n_regions[:, None])[:, ::-1]], axis=1)
        aupro = _area_to(x, y, fpr_limit) / fpr_limit
    bad = (n == 0) | (p == 0)
    out = {"auroc": auroc, "auprc": ap, "f1max": f1, "aupro": aupro}
    for v in out.values():
        v[bad] = np.nan
    out["aupro"][n_regions == 0] = np.nan
    return out


def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> np.ndarray:
    """Area under piecewise-linear curves (rows of ascending x) from x = 0 to x = limit."""
    x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
    full = x1 <= limit
    area = np.where(full, (x1 - x0) * (y0 + y1) / 2.0, 0.0)
    cut = (x0 < limit) & (x1 > limit)
    with np.errstate(invalid="ignore", divide="ignore"):
        y_lim = y0 + (y1 - y0) * (limit - x0) / np.where(x1 > x0, x1 - x0, 1.0)
    area += np.where(cut, (limit - x0) * (y0 + y_lim) / 2.0, 0.0)
    return area.sum(axis=1)


# ---- the bootstrap ---------------------------------------------------------------------------------
def _weights(labels: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[R, n] multinomial counts, resampling normal and anomalous images apart."""
    w = np.zeros((resamples, labels.size))
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        if idx.size:
            w[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=resamples)
    return w


def _image_resamples(scores: np.ndarray, labels: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Exact image AUROC / AP / F1max of every resample at once: the distinct scores are the
    bins, so the binned formulas are exact (ties included)."""
    values, inverse = np.unique(scores, return_inverse=True)
    n = scores.size
    normal = sparse.csr_matrix((np.where(labels == 0, 1.0, 0.0), (np.arange(n), inverse)), shape=(n, values.size))
    anomalous = sparse.csr_matrix((np.where(labels == 1, 1.0, 0.0), (np.arange(n), inverse)), shape=(n, values.size))
    hn = np.asarray((normal.T @ w.T).T)
    ha = np.asarray((anomalous.T @ w.T).T)
    out = binned_pixel_metrics(hn, ha, np.zeros_like(ha), np.zeros(w.shape[0]), 1.0)
    out.pop("aupro")
    if values.size < 2:  # a constant score ranks nothing
        for v in out.values():
            v[:] = np.nan
    return out


def _interval(values: np.ndarray, level: float) -> dict[str, Any]:
    ok = values[np.isfinite(values)]
    if ok.size < 2:
        return {"low": None, "high": None, "std": None, "resamples": int(ok.size)}
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(ok, [a, 1.0 - a])
    return {"low": float(lo), "high": float(hi), "std": float(ok.std(ddof=1)), "resamples": int(ok.size)}


def _curve(hn: np.ndarray, ha: np.ndarray, max_points: int = 400) -> dict[str, list[float]]:
    fp, tp = _top_cumsum(hn)[::-1], _top_cumsum(ha)[::-1]  # thresholds descending
    keep = np.flatnonzero((hn + ha)[::-1] > 0)
    if keep.size > max_points:
        keep = keep[np.unique(np.linspace(0, keep.size - 1, max_points).round().astype(int))]
    n, p = max(hn.sum(), 1.0), max(ha.sum(), 1.0)
    fp, tp = fp[keep], tp[keep]
    r = lambda a: [round(float(v), 6) for v in a]  # noqa: E731
    return {
        "fpr": r(np.r_[0.0, fp / n]),
        "tpr": r(np.r_[0.0, tp / p]),
        "recall": r(tp / p),
        "precision": r(tp / np.maximum(tp + fp, 1.0)),
    }


@dataclass
class Uncertainty:
    bootstrap: dict[str, Any]  # settings
    intervals: list[dict[str, Any]]  # dataset, category, level, metric, low, high, std, resamples
    pixel_curves: dict[str, dict[str, list[float]]]
    image_quality: dict[str, float]  # anomalous image key -> its own pixel AP (binned)


def bootstrap(
    dataset: str,
    samples: list[dict[str, Any]],
    stats: PixelStats | None,
    records: list[dict[str, Any]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    fpr_limit: float = 0.3,
    aupro_protocol: str = "mvtec",
) -> Uncertainty:
    """Intervals for every (category, metric) the records define, and for their mean."""
    rng = np.random.default_rng([seed, 20_24])
    defined = {(r["category"], r["level"], r["metric"]) for r in records if r.get("value") is not None}
    cats = sorted({s["category"] for s in samples})
    draws: dict[tuple[str, str, str], np.ndarray] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    quality: dict[str, float] = {}
    for cat in cats:
        rows = [s for s in samples if s["category"] == cat]
        scores = np.array([s["score"] for s in rows], dtype=np.float64)
        labels = np.array([s["label"] for s in rows], dtype=np.int8)
        w = _weights(labels, resamples, rng)
        for m, v in _image_resamples(scores, labels, w).items():
            draws[(cat, "image", m)] = v
        a = stats.arrays(cat) if stats is not None else None
        if a is None:
            continue
        wp = _weights(a["labels"].astype(np.int8), resamples, rng)
        used = (a["h_norm"].sum(axis=0) + a["h_anom"].sum(axis=0)) > 0  # empty bins change no metric
        vals = binned_pixel_metrics(
            wp @ a["h_norm"][:, used], wp @ a["h_anom"][:, used], wp @ a["pro"][:, used], wp @ a["n_regions"], fpr_limit
        )
        for m, v in vals.items():
            if m == "aupro" and aupro_protocol != "mvtec":
                continue  # the binned curve follows the MVTec-AD definition only
            draws[(cat, "pixel", m)] = v
        curves[cat] = _curve(a["h_norm"].sum(axis=0), a["h_anom"].sum(axis=0))
        anomalous = np.flatnonzero(a["h_anom"].sum(axis=1) > 0)
        if anomalous.size:
            own = binned_pixel_metrics(
                a["h_norm"][anomalous],
                a["h_anom"][anomalous],
                a["pro"][anomalous],
                a["n_regions"][anomalous],
                fpr_limit,
            )["auprc"]
            for i, v in zip(anomalous, own):
                quality[str(a["keys"][i])] = float(v) if math.isfinite(v) else 0.0
    intervals = []
    for (cat, lvl, m), v in sorted(draws.items()):
        if (cat, lvl, m) in defined:
            intervals.append({"dataset": dataset, "category": cat, "level": lvl, "metric": m, **_interval(v, level)})
    for lvl, metrics in (("image", IMAGE_METRICS), ("pixel", PIXEL_METRICS)):
        for m in metrics:
            parts = [draws[(c, lvl, m)] for c in cats if (c, lvl, m) in draws and (c, lvl, m) in defined]
            if parts and ("mean", lvl, m) in defined:
                with np.errstate(invalid="ignore"):
                    mean = np.nanmean(np.stack(parts), axis=0) if len(parts) > 1 else parts[0]
                intervals.append(
                    {"dataset": dataset, "category": "mean", "level": lvl, "metric": m, **_interval(mean, level)}
                )
    settings = {
        "resamples": resamples,
        "seed": seed,
        "interval": f"{round(level * 100)}% percentile",
        "method": "stratified image bootstrap",
        "note": "Pixel-level resamples are computed on 2,304 score thresholds (binned); AUPRO intervals follow "
        "the MVTec-AD definition"
        + ("" if aupro_protocol == "mvtec" else f" and are not given for the '{aupro_protocol}' protocol")
        + ".",
    }
    return Uncertainty(settings, intervals, curves, quality)
