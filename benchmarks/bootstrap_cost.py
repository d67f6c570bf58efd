"""What the bootstrap intervals cost a run, at the scale of one MVTec-AD category (default 150 test
images of 256 x 256, a third of them defective), against the exact metric suite on the same maps:
  - PixelStats.update (per image, during evaluation),
  - bootstrap() with 1000 resamples (image and pixel metrics, after evaluation),
  - MetricSuite.update + compute (the exact metrics every run computes anyway).
Also: the binned pixel metrics against the exact ones (absolute difference).

    .venv/bin/python benchmarks/bootstrap_cost.py [--images 150] [--size 256] [--resamples 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from decodiff.harness.evaluation.uncertainty import PixelStats, binned_pixel_metrics, bootstrap
from decodiff.harness.metrics import MetricSuite


def synthetic(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    maps = rng.gamma(2.0, 0.05, (n, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        if i % 3 == 0:
            cy, cx, r = rng.integers(20, size - 20, 2).tolist() + [int(rng.integers(4, 20))]
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            masks[i] = blob
            maps[i][blob] += rng.gamma(2.0, 0.12, blob.sum()).astype(np.float32)
    return np.clip(maps, 0, 1), masks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--json")
    args = ap.parse_args()
    maps, masks = synthetic(args.images, args.size)
    labels = masks.reshape(len(masks), -1).any(axis=1).astype(np.int8)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    keys = [f"c/{i}" for i in range(len(maps))]

    t = time.perf_counter()
    suite = MetricSuite("bench")
    for i in range(0, len(maps), 16):
        suite.update(
            "c", scores[i : i + 16], labels[i : i + 16], maps[i : i + 16], masks[i : i + 16], keys=keys[i : i + 16]
        )
    records = suite.compute()
    exact_s = time.perf_counter() - t

    t = time.perf_counter()
    stats = PixelStats()
    for i in range(0, len(maps), 16):
        stats.update("c", keys[i : i + 16], labels[i : i + 16], maps[i : i + 16], masks[i : i + 16])
    stats_s = time.perf_counter() - t

    samples = [{"key": k, "category": "c", "label": int(y), "score": float(s)} for k, y, s in zip(keys, labels, scores)]
    t = time.perf_counter()
    unc = bootstrap("bench", samples, stats, records, resamples=args.resamples)
    boot_s = time.perf_counter() - t

    a = stats.arrays("c")
    ones = np.ones((1, len(keys)))
    binned = binned_pixel_metrics(ones @ a["h_norm"], ones @ a["h_anom"], ones @ a["pro"], ones @ a["n_regions"], 0.3)
    exact = {r["metric"]: r["value"] for r in records if r["category"] == "c" and r["level"] == "pixel"}
    diff = {m: abs(float(binned[m][0]) - exact[m]) for m in exact}
    width = {i["metric"]: i["high"] - i["low"] for i in unc.intervals if i["category"] == "c" and i["level"] == "pixel"}
    out = {
        "images": args.images,
        "size": args.size,
        "resamples": args.resamples,
        "exact_metrics_s": round(exact_s, 3),
        "pixel_stats_s": round(stats_s, 3),
        "bootstrap_s": round(boot_s, 3),
        "binned_minus_exact": {m: round(v, 5) for m, v in diff.items()},
        "interval_width": {m: round(v, 4) for m, v in width.items()},
    }
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
