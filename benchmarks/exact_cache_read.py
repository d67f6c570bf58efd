"""What a sample of the exact latent cache costs to read (review of issue 12), side by side in one process.

An exact-cache record holds every shift of one image (81 variants of [2, 4, 32, 32] for the SD VAE at
256 px: 2.65 MB in float32); a training sample reads the whole record through the tar stream and keeps
the one variant it draws (harness/training/latent_cache.py `ExactPick`). This script writes one shard of such
records (float32, as the cache stores them, and float16, the layout considered instead) and reads it
back the way training does (datasets/tar_records.py, then `ExactPick`), in interleaved rounds (the
fastest round counts). The file is read from the page cache: the CPU cost per sample; a cache that does
not fit in memory, or lies on a network file system, adds the bytes per record at that storage's speed.

    python benchmarks/exact_cache_read.py [--records 32] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from decodiff.datasets.tar_records import tar_records
from decodiff.datasets.transforms import Preprocess
from decodiff.harness.training.latent_cache import ExactPick


def write_shard(path: Path, records: int, dtype: type, variants: int = 81) -> int:
    with tarfile.open(path, "w") as tar:
        for k in range(records):
            arr = np.random.default_rng(k).standard_normal((variants, 2, 4, 32, 32)).astype(dtype)
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            key = f"cat/train/good/{k:03d}"
            meta = json.dumps({"key": key, "category": "cat", "variants": variants, "augment": "exact"}).encode()
            for ext, data in (("latent.npy", buf.getvalue()), ("meta.json", meta)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path.stat().st_size


def read_all(path: Path, pick: ExactPick) -> int:
    n = 0
    with open(path, "rb") as f:
        for rec in tar_records(f, str(path)):
            pick(rec)
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args()
    pick = ExactPick(Preprocess(resize=None, crop=None, translate=4), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        shards = {name: Path(tmp) / f"{name}.tar" for name in ("float32", "float16")}
        sizes = {name: write_shard(p, args.records, getattr(np, name)) for name, p in shards.items()}
        for p in shards.values():
            read_all(p, pick)  # warm-up: the page cache holds both
        best = {name: float("inf") for name in shards}
        for _ in range(args.rounds):  # interleaved
            for name, p in shards.items():
                start = time.perf_counter()
                n = read_all(p, pick)
                best[name] = min(best[name], (time.perf_counter() - start) / n)
    rows = [
        {
            "layout": name,
            "mb_per_record": round(sizes[name] / args.records / 1e6, 3),
            "ms_per_sample": round(best[name] * 1e3, 3),
            "samples_per_second_per_reader": round(1 / best[name]),
        }
        for name in shards
    ]
    out = {
        "benchmark": "exact_cache_read",
        "machine": platform.machine(),
        "records": args.records,
        "rounds": args.rounds,
        "rows": rows,
        "float16_over_float32_time": round(best["float16"] / best["float32"], 3),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
