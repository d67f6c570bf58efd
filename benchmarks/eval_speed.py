"""Evaluation speed of the demo's test set (162 images) under inference settings, side by side
in one process, and whether the numbers change (issue 16).

Trains (or reuses from the cache) the model of the preset with the given overrides, then runs
the real evaluation (`harness.evaluation.evaluate.evaluate`: data, deviation correction, decodes, maps,
metrics) once per variant per round, rounds interleaved, the fastest round counting. Reports
images/s and CPU seconds per image (CPU time of this process, which other load on a shared
machine inflates less), and each variant's mean metrics beside the first variant's: equal to
the last digit of the report (0.1 %), and the largest difference of any metric.

    python benchmarks/eval_speed.py                                  # layouts: contiguous vs channels-last
    python benchmarks/eval_speed.py --variants "infer.channels_last=false" "" "infer.precision=bf16"
    python benchmarks/eval_speed.py --set train.max_steps=60 --set run.cache_dir=/tmp/cache --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from decodiff.harness.process_env import set_process_defaults

set_process_defaults()  # offline as `decodiff`; the OpenMP wait is the environment's (thread_wait.py sets it)

import torch  # noqa: E402

from decodiff.harness.allocator import allocator_line  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="demo")
    ap.add_argument("--set", action="append", default=[], help="override for every variant (key=value)")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["infer.channels_last=false", ""],
        help="space-separated override lists, one per variant ('' = the defaults)",
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data
    from decodiff.harness.evaluation.evaluate import evaluate
    from decodiff.harness.training.model_cache import trained_model
    from decodiff.harness.training.vae_fit import get_vae

    base = build_config(args.config, args.set)
    data = prepare_data(base)
    vae = get_vae(base, data)
    model, classes, info, _ = trained_model(base, data, vae)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = args.variants if r % 2 == 0 else args.variants[::-1]
            for v in order:
                cfg = build_config(args.config, [*args.set, *v.split()])
                wall, cpu = time.perf_counter(), time.process_time()
                res = evaluate(cfg, data, model, vae, classes, out=Path(tmp))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                row = results.setdefault(v or "(defaults)", {"walls": [], "cpus": []})
                row["walls"].append(wall)
                row["cpus"].append(cpu)
                row["images"] = len(res.samples)
                row["means"] = {
                    f"{m['level']}_{m['metric']}": m["value"] for m in res.records if m["category"] == "mean"
                }
                print(
                    f"round {r + 1}: {v or '(defaults)'}: {wall:.1f}s wall, {cpu:.1f}s CPU", file=sys.stderr, flush=True
                )
    first = next(iter(results.values()))["means"]
    for row in results.values():
        n = row["images"]
        row["images_per_second"] = round(n / min(row["walls"]), 3)
        row["cpu_seconds_per_image"] = round(min(row["cpus"]) / n, 4)
        diffs = [
            abs(row["means"][k] - first[k]) for k in first if row["means"].get(k) is not None and first[k] is not None
        ]
        row["max_metric_difference"] = max(diffs) if diffs else None
        row["same_to_report_digits"] = all(
            round(100 * row["means"][k], 1) == round(100 * first[k], 1) for k in first if first[k] is not None
        )
        row["bitwise_same_metrics"] = row["means"] == first
    names = list(results)
    speed = {
        f"{n} vs {names[0]}": round(results[n]["images_per_second"] / results[names[0]]["images_per_second"], 2)
        for n in names[1:]
    }
    out = {
        "config": args.config,
        "overrides": args.set,
        "model_steps": info.get("steps"),
        "threads": args.threads,
        "rounds": args.rounds,
        "variants": results,
        "speedup": speed,
        "loadavg": os.getloadavg(),
        "allocator": allocator_line(),  # glibc defaults or DECODIFF_ALLOCATOR=kept (README "glibc's allocator")
    }
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
