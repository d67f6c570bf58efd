"""How fast and how exact are the metrics? (issue 4, "Measure")

An MVTec-AD-sized synthetic test set: 15 categories with the MVTec-AD test split's image counts
(1,725 maps of 256x256, 1,258 anomalous with 1 to 5 irregular regions each), maps in [0, 1]
(clipped, so the ends hold large tie groups) as float32. Three ways to get the metrics:

- fast: `MetricSuite` (this package), exact: the maps streamed in batches of 16 through
  `update`, then `compute`; all seven metrics per category and their mean, then the pooled
  variant, timed apart;
- usual: scikit-learn's roc_auc_score, average_precision_score and precision_recall_curve
  (F1max) per category at both levels, and the 200-threshold AUPRO of the published DeCo-Diff
  code (regions labelled once per image rather than per threshold, which only helps it); by
  default on 4 of the 15 categories (it takes minutes), compared with the fast path on the same
  4 categories and the same protocol, value by value;
- binned: a 1,000-bin histogram approximation of the pixel metrics (not exact), all categories;
- and, beside the usual path, the MVTec-AD evaluation's exact AUPRO algorithm (argsort of every
  pixel + cumulative sums), as the large-scale check of the fast path's exact AUPRO.

Data generation is not timed; each path regenerates the same data from the seed. The fast and
binned paths run `--repeat` times (default 3) and the fastest run counts; the slow path runs
once. Peak memory: the process's peak RSS right after the first fast run (which runs first, so
no other path has touched memory yet); for a clean number per path run
`/usr/bin/time -v python benchmarks/metrics_speed.py --only fast --repeat 1`.

    python benchmarks/metrics_speed.py [--quick] [--json out.json] [--only fast|usual|binned]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from decodiff.harness.metrics import MetricSuite
from decodiff.harness.metrics.aupro import label_regions

# MVTec-AD test split: (normal, anomalous) images per category; 467 + 1,258 = 1,725.
MVTEC_TEST = {
    "bottle": (20, 63),
    "cable": (58, 92),
    "capsule": (23, 109),
    "carpet": (28, 89),
    "grid": (21, 57),
    "hazelnut": (40, 70),
    "leather": (32, 92),
    "metal_nut": (22, 93),
    "pill": (26, 141),
    "screw": (41, 119),
    "tile": (33, 84),
    "toothbrush": (12, 30),
    "transistor": (60, 40),
    "wood": (19, 60),
    "zipper": (32, 119),
}
USUAL_DEFAULT = ("bottle", "carpet", "screw", "transistor")
SIZE = 256
BATCH = 16


# -- synthetic data ----------------------------------------------------------------------------
def _region(rng: np.random.Generator, out: np.ndarray) -> None:
    """One irregular blob (a wobbly, rotated ellipse) drawn into the boolean `out`."""
    r0 = rng.uniform(4, 34)
    ecc = rng.uniform(0.45, 1.0)
    ang = rng.uniform(0, np.pi)
    amp = rng.uniform(0, 0.2, 4)
    phase = rng.uniform(0, 2 * np.pi, 4)
    cy, cx = rng.uniform(0, SIZE, 2)
    reach = r0 * 1.8 / ecc
    y0, y1 = int(max(0, cy - reach)), int(min(SIZE, cy + reach + 1))
    x0, x1 = int(max(0, cx - reach)), int(min(SIZE, cx + reach + 1))
    dy = np.arange(y0, y1)[:, None] - cy
    dx = np.arange(x0, x1)[None, :] - cx
    u = dx * np.cos(ang) + dy * np.sin(ang)
    v = (-dx * np.sin(ang) + dy * np.cos(ang)) / ecc
    theta = np.arctan2(v, u)
    radius = r0 * (1 + sum(a * np.cos(k * theta + p) for k, a, p in zip(range(2, 6), amp, phase)))
    out[y0:y1, x0:x1] |= np.hypot(u, v) < radius


def category_batches(
    index: int, n_normal: int, n_anomalous: int, seed: int, batch: int = BATCH
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(maps float32 [B,256,256], masks bool, image scores, image labels) batches of one category,
    the same for a given (seed, index)."""
    rng = np.random.default_rng([seed, index])
    labels = np.array([0] * n_normal + [1] * n_anomalous)
    rng.shuffle(labels)
    for s in range(0, labels.size, batch):
        lab = labels[s : s + batch]
        b = lab.size
        masks = np.zeros((b, SIZE, SIZE), dtype=bool)
        signal = np.zeros((b, SIZE, SIZE), dtype=np.float32)
        for i in np.flatnonzero(lab):
            for _ in range(int(rng.integers(1, 6))):
                region = np.zeros((SIZE, SIZE), dtype=bool)
                _region(rng, region)
                signal[i][region] += rng.uniform(0.1, 0.6)
                masks[i] |= region
        coarse = rng.random((b, 9, 9), dtype=np.float32)
        maps = ndimage.zoom(coarse, (1, SIZE / 9, SIZE / 9), order=1) * np.float32(0.4)
        maps += rng.random((b, SIZE, SIZE), dtype=np.float32) * np.float32(0.12) - np.float32(0.03)
        maps += signal
        np.clip(maps, 0.0, 1.0, out=maps)
        yield maps, masks, maps.max(axis=(1, 2)), lab


def category_arrays(index: int, n_normal: int, n_anomalous: int, seed: int):
    parts = list(category_batches(index, n_normal, n_anomalous, seed))
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(4))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- the three paths ---------------------------------------------------------------------------
def fast_path(
    cats: dict[str, tuple[int, int]], seed: int, protocol: str, pooled: bool, backend: str | None, device: str
) -> dict:
    """MetricSuite on streamed batches; returns timings and the records."""
    suite = MetricSuite("synthetic-mvtec", aupro_protocol=protocol, device=device, backend=backend, pooled=pooled)
    t_update = 0.0
    for name, (nn, na) in cats.items():
        idx = list(MVTEC_TEST).index(name)
        for j, (maps, masks, scores, labels) in enumerate(category_batches(idx, nn, na, seed)):
            keys = [f"{name}/test/{j:03d}_{i:02d}" for i in range(labels.size)]
            t0 = time.perf_counter()
            suite.update(name, scores, labels, maps, masks, keys=keys)
            t_update += time.perf_counter() - t0
    t0 = time.perf_counter()
    records = suite.compute()
    t_compute = time.perf_counter() - t0
    part = suite.timings
    out = {
        "update_s": t_update,
        "compute_s": t_compute,
        "categories_and_mean_s": t_update + part["categories_and_mean_s"],
    }
    if pooled:
        out["pooled_s"] = part["pooled_s"]
    out["records"] = records
    return out


def published_aupro(
    maps: np.ndarray, labels: np.ndarray, n_regions: int, steps: int = 200, limit: float = 0.3
) -> float:
    """The published code's AUPRO loop (200 thresholds, FPR axis rescaled by its largest kept
    value), with the regions labelled once instead of at every threshold."""
    from sklearn.metrics import auc

    flat, lab = maps.ravel(), labels.ravel()
    sizes = np.bincount(lab, minlength=n_regions + 1)
    n_normal = sizes[0]
    lo, hi = maps.min(), maps.max()
    fprs, pros = [], []
    for th in np.arange(lo, hi, (hi - lo) / steps):
        hits = np.bincount(lab[flat > th], minlength=n_regions + 1)
        fprs.append(hits[0] / n_normal)
        pros.append(np.mean(hits[1:] / sizes[1:]))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < limit
    return float(auc(fprs[keep] / fprs[keep].max(), pros[keep]))


def mvtec_sort_aupro(maps: np.ndarray, regions: np.ndarray, n_regions: int, limit: float = 0.3) -> float:
    """The MVTec-AD evaluation algorithm, written from its description: sort every pixel (descending),
    cumulative sums of the FPR and PRO increments, one point per distinct score, trapezoid up to
    the limit with linear interpolation there, divided by the limit. Exact, but one argsort and
    several full-size float64 arrays per category."""
    flat, lab = maps.ravel(), regions.ravel()
    sizes = np.bincount(lab, minlength=n_regions + 1).astype(np.float64)
    order = np.argsort(flat, kind="stable")[::-1]
    s, lab = flat[order], lab[order]
    fpr = np.cumsum(lab == 0) / sizes[0]
    weight = np.where(lab > 0, 1.0 / (n_regions * sizes[lab]), 0.0)
    pro = np.cumsum(weight)
    last = np.append(np.diff(s) != 0, True)
    x, y = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    k = np.searchsorted(x, limit, side="right")  # points with x <= limit
    area = np.sum(np.diff(x[:k]) * (y[1:k] + y[: k - 1]) / 2)
    if k < x.size:
        y_lim = y[k - 1] + (y[k] - y[k - 1]) * (limit - x[k - 1]) / (x[k] - x[k - 1])
        area += (limit - x[k - 1]) * (y_lim + y[k - 1]) / 2
    return float(area / limit)


def usual_path(cats: dict[str, tuple[int, int]], seed: int) -> dict:
    """scikit-learn per category and level, plus the published 200-threshold AUPRO."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    def f1max(y, s):
        p, r, _ = precision_recall_curve(y, s)
        f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
        return float(f1.max())

    values, seconds, sort_seconds = {}, 0.0, 0.0
    for name, (nn, na) in cats.items():
        maps, masks, scores, labels = category_arrays(list(MVTEC_TEST).index(name), nn, na, seed)
        t0 = time.perf_counter()
        y, s = masks.ravel(), maps.ravel()
        v = {
            ("image", "auroc"): roc_auc_score(labels, scores),
            ("image", "auprc"): average_precision_score(labels, scores),
            ("image", "f1max"): f1max(labels, scores),
            ("pixel", "auroc"): roc_auc_score(y, s),
            ("pixel", "auprc"): average_precision_score(y, s),
            ("pixel", "f1max"): f1max(y, s),
        }
        regions = np.zeros(masks.shape, dtype=np.int32)
        n = 0
        for i, m in enumerate(masks):  # label once per image, 8-connected as the published code
            lab_i, k = ndimage.label(m, structure=np.ones((3, 3), dtype=int))
            regions[i] = np.where(lab_i > 0, lab_i + n, 0)
            n += k
        v[("pixel", "aupro")] = published_aupro(maps, regions, n)
        seconds += time.perf_counter() - t0
        t0 = time.perf_counter()  # not part of the usual path: the exact reference for the MVTec AUPRO
        v[("pixel", "aupro-mvtec")] = mvtec_sort_aupro(maps, regions, n)
        sort_seconds += time.perf_counter() - t0
        values[name] = {f"{lvl}_{m}": float(x) for (lvl, m), x in v.items()}
        print(f"  usual: {name} done ({seconds:.0f} s so far)", file=sys.stderr, flush=True)
    return {"seconds": seconds, "values": values, "mvtec_sort_seconds": sort_seconds}


def binned_metrics(maps: np.ndarray, masks: np.ndarray, bins: int = 1000, limit: float = 0.3) -> dict[str, float]:
    """Pixel AUROC / AP / F1max / AUPRO from 1,000-bin histograms (an approximation)."""
    lo, hi = float(maps.min()), float(maps.max())
    q = ((maps - lo) * np.float32((bins - 1e-3) / (hi - lo))).astype(np.int32)
    labels, n_regions = label_regions(masks)
    pos = q[masks]
    neg_hist = np.bincount(q[~masks], minlength=bins)[::-1].astype(np.float64)  # descending thresholds
    pos_hist = np.bincount(pos, minlength=bins)[::-1].astype(np.float64)
    region = labels[masks] - 1
    sizes = np.bincount(region, minlength=n_regions).astype(np.float64)
    pro_hist = np.bincount(pos, weights=1.0 / sizes[region], minlength=bins)[::-1] / n_regions
    tp, fp = np.cumsum(pos_hist), np.cumsum(neg_hist)
    p, n = tp[-1], fp[-1]
    tpr, fpr = np.r_[0, tp / p], np.r_[0, fp / n]
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    prec = tp / np.maximum(tp + fp, 1)
    ap = float(np.sum(pos_hist / p * prec))
    f1 = float(np.max(2 * tp / (tp + fp + p)))
    pro = np.r_[0, np.cumsum(pro_hist)]
    k = np.searchsorted(fpr, limit, side="right")
    area = np.sum(np.diff(fpr[:k]) * (pro[1:k] + pro[: k - 1]) / 2)
    if k < fpr.size:
        y = pro[k - 1] + (pro[k] - pro[k - 1]) * (limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        area += (limit - fpr[k - 1]) * (y + pro[k - 1]) / 2
    return {"auroc": auroc, "auprc": ap, "f1max": f1, "aupro": float(area / limit)}


def binned_path(cats: dict[str, tuple[int, int]], seed: int) -> dict:
    values, seconds = {}, 0.0
    for name, (nn, na) in cats.items():
        maps, masks, _, _ = category_arrays(list(MVTEC_TEST).index(name), nn, na, seed)
        t0 = time.perf_counter()
        values[name] = binned_metrics(maps, masks)
        seconds += time.perf_counter() - t0
    return {"seconds": seconds, "values": values}


# -- report ------------------------------------------------------------------------------------
def by_key(records: list[dict]) -> dict:
    return {(r["category"], r["level"], r["metric"]): r["value"] for r in records}


def max_diff(a: dict, b: dict, keys) -> float:
    return max(abs(a[k] - b[k]) for k in keys)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a fifth of the images per category, 2 usual categories")
    ap.add_argument("--only", choices=("all", "fast", "usual", "binned"), default="all")
    ap.add_argument(
        "--usual-categories", default=None, help=f"comma list or 'all' (default: {','.join(USUAL_DEFAULT)})"
    )
    ap.add_argument("--protocol", default="mvtec", choices=("mvtec", "deco-diff-code"), help="AUPRO of the fast path")
    ap.add_argument("--no-pooled", action="store_true", help="skip the pooled pixel metrics")
    ap.add_argument("--backend", choices=("numpy", "torch"), default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of the fast and binned paths; the fastest counts (the machine is shared)",
    )
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    cats = dict(MVTEC_TEST)
    if args.quick:
        cats = {k: (max(1, a // 5), max(1, b // 5)) for k, (a, b) in cats.items()}
    usual_names = (
        list(cats)
        if args.usual_categories == "all"
        else args.usual_categories.split(",")
        if args.usual_categories
        else list(USUAL_DEFAULT[:2] if args.quick else USUAL_DEFAULT)
    )
    usual_cats = {k: cats[k] for k in usual_names}
    n_maps = sum(a + b for a, b in cats.values())
    n_anom = sum(b for _, b in cats.values())
    result: dict = {
        "maps": n_maps,
        "anomalous": n_anom,
        "categories": len(cats),
        "size": SIZE,
        "seed": args.seed,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "processor": platform.processor() or platform.machine(),
            "cpus": len(__import__("os").sched_getaffinity(0)),
        },
    }
    print(
        f"synthetic MVTec-AD-sized test set: {n_maps} maps of {SIZE}x{SIZE}, {n_anom} anomalous, "
        f"{len(cats)} categories",
        file=sys.stderr,
    )
    rss0 = peak_rss_mb()
    rows = []
    fast = fast_sub = usual = binned = None
    if args.only in ("all", "fast"):
        fast = fast_path(cats, args.seed, args.protocol, not args.no_pooled, args.backend, args.device)
        rss_fast = peak_rss_mb()  # before any other path ran
        runs = [fast] + [
            fast_path(cats, args.seed, args.protocol, not args.no_pooled, args.backend, args.device)
            for _ in range(args.repeat - 1)
        ]
        fast = min(runs, key=lambda r: r["categories_and_mean_s"] + r.get("pooled_s", 0.0))
        result["fast"] = {k: v for k, v in fast.items() if k != "records"}
        result["fast"]["all_runs_s"] = [r["categories_and_mean_s"] + r.get("pooled_s", 0.0) for r in runs]
        result["fast"]["peak_rss_mb"] = rss_fast
        result["fast"]["rss_before_mb"] = rss0
        result["fast"]["records"] = fast["records"]
        rows.append(
            (
                "fast (exact), all categories + mean",
                fast["categories_and_mean_s"],
                f"update (streaming) {fast['update_s']:.2f} s + compute "
                f"{fast['categories_and_mean_s'] - fast['update_s']:.2f} s; AUPRO {args.protocol}",
            )
        )
        if "pooled_s" in fast:
            rows.append(("fast (exact), pooled (all pixels at once)", fast["pooled_s"], "on top of the above"))
        rows.append(
            (
                "  peak RSS of the process after the first fast run",
                None,
                f"{result['fast']['peak_rss_mb']:.0f} MB (before it: {rss0:.0f} MB)",
            )
        )
    if args.only in ("all", "usual"):
        fast_sub = min(
            (
                fast_path(usual_cats, args.seed, "deco-diff-code", False, args.backend, args.device)
                for _ in range(max(1, args.repeat))
            ),
            key=lambda r: r["categories_and_mean_s"],
        )
        fast_mvtec = min(
            (
                fast_path(usual_cats, args.seed, "mvtec", False, args.backend, args.device)
                for _ in range(max(1, args.repeat))
            ),
            key=lambda r: r["categories_and_mean_s"],
        )
        usual = usual_path(usual_cats, args.seed)
        mine = by_key(fast_sub["records"])
        mine.update(
            {(c, "pixel", "aupro-mvtec"): v for (c, lvl, m), v in by_key(fast_mvtec["records"]).items() if m == "aupro"}
        )
        theirs = {(c, *k.split("_")): v for c, vals in usual["values"].items() for k, v in vals.items()}
        diffs = {
            m: max_diff(mine, theirs, [k for k in theirs if (k[1], k[2]) == m])
            for m in dict.fromkeys((k[1], k[2]) for k in theirs)
        }
        ratio = usual["seconds"] / fast_sub["categories_and_mean_s"]
        result["usual"] = {
            "categories": usual_names,
            "seconds": usual["seconds"],
            "values": usual["values"],
            "fast_same_categories_s": fast_sub["categories_and_mean_s"],
            "ratio": ratio,
            "mvtec_sort_aupro_s": usual["mvtec_sort_seconds"],
            "fast_mvtec_same_categories_s": fast_mvtec["categories_and_mean_s"],
            "max_abs_diff": {f"{lvl}_{m}": d for (lvl, m), d in diffs.items()},
        }
        rows.append((f"usual (sklearn + 200-threshold AUPRO), {len(usual_cats)} categories", usual["seconds"], ""))
        rows.append(
            (
                f"fast (exact, deco-diff-code AUPRO), same {len(usual_cats)} categories",
                fast_sub["categories_and_mean_s"],
                f"ratio usual / fast = {ratio:.1f}x",
            )
        )
        rows.append(
            (
                f"exact MVTec-AD AUPRO by argsort + cumsum alone, same {len(usual_cats)}",
                usual["mvtec_sort_seconds"],
                f"fast, all 7 metrics, mvtec AUPRO: {fast_mvtec['categories_and_mean_s']:.2f} s",
            )
        )
        if len(usual_cats) < len(cats):
            share = sum(a + b for a, b in usual_cats.values()) / n_maps
            estimate = usual["seconds"] / share
            result["usual"]["all_categories_estimate_s"] = estimate
            rows.append(("  usual, scaled to all categories by map count", estimate, "an estimate, not measured"))
        rows.append(
            (
                "  max |fast - usual| per metric (aupro-mvtec: vs argsort + cumsum)",
                None,
                ", ".join(f"{lvl} {m} {d:.1e}" for (lvl, m), d in diffs.items()),
            )
        )
    if args.only in ("all", "binned"):
        binned = min((binned_path(cats, args.seed) for _ in range(max(1, args.repeat))), key=lambda r: r["seconds"])
        result["binned"] = {"seconds": binned["seconds"], "values": binned["values"]}
        note = ""
        if fast is not None:
            mine = by_key(fast["records"])
            err = {
                m: max(abs(binned["values"][c][m] - mine[(c, "pixel", m)]) for c in cats)
                for m in ("auroc", "auprc", "f1max")
            }
            result["binned"]["max_abs_error"] = err
            note = "pixel metrics only; max error vs exact: " + ", ".join(f"{m} {e:.1e}" for m, e in err.items())
            if args.protocol == "mvtec":
                e = max(abs(binned["values"][c]["aupro"] - mine[(c, "pixel", "aupro")]) for c in cats)
                result["binned"]["max_abs_error"]["aupro"] = e
                note += f", aupro {e:.1e}"
            rows.append(("binned (1,000 bins, approximate), all categories", binned["seconds"], note))
            rows.append(
                (
                    "  fast (exact, categories + mean) / binned time",
                    None,
                    f"{fast['categories_and_mean_s'] / binned['seconds']:.2f} (below 1: the exact path is faster)",
                )
            )
        else:
            rows.append(("binned (1,000 bins, approximate), all categories", binned["seconds"], note))
    width = max(len(r[0]) for r in rows)
    print(f"{'path'.ljust(width)}  {'seconds':>8}  notes")
    for name, sec, note in rows:
        print(f"{name.ljust(width)}  {'' if sec is None else f'{sec:8.2f}':>8}  {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
