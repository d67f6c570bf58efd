"""What the baselines (infer.baselines: vae-recon, latent-nn) add to an evaluation: the same
evaluation of the same trained model with and without them, in interleaved rounds (off, on, off,
on, ...), so that machine load hits both alike; plus the seconds the run itself attributes to
each baseline (bank building and metrics included). One JSON line on stdout.

The model is the config's cached training (run `decodiff bench --config demo` first; a model that
is not cached yet is trained, which takes minutes).

    .venv/bin/python benchmarks/baseline_cost.py [--config demo] [--rounds 2] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.evaluate import evaluate
from decodiff.harness.model_cache import trained_model
from decodiff.harness.vae_fit import get_vae


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="demo")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    base = [*args.overrides, "tracking.enabled=false", "metrics.bootstrap=0"]
    cfg_on = build_config(args.config, base)
    cfg_off = build_config(args.config, [*base, "infer.baselines=[]"])
    data = prepare_data(cfg_on)
    vae = get_vae(cfg_on, data)
    model, classes, _, _ = trained_model(cfg_on, data, vae)
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    parts: list[dict[str, float]] = []
    means: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name, cfg in (("off", cfg_off), ("on", cfg_on)):
            t = time.perf_counter()
            res = evaluate(cfg, data, model, vae, classes)
            seconds[name].append(time.perf_counter() - t)
            if name == "on":
                parts.append(res.baseline_seconds)
                means = {m: {f"{r['level']}_{r['metric']}": r["value"] for r in res.baseline_records
                             if r["method"] == m and r["category"] == "mean"} for m in ("vae-recon", "latent-nn")}
                means["deco-diff"] = {f"{r['level']}_{r['metric']}": r["value"] for r in res.records
                                      if r["category"] == "mean"}
    off, on = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    print(json.dumps({
        "config": args.config, "overrides": args.overrides, "rounds": args.rounds,
        "test_images": data.manifest.count("test", data.categories),
        "evaluate_seconds_without": [round(s, 2) for s in seconds["off"]],
        "evaluate_seconds_with": [round(s, 2) for s in seconds["on"]],
        "added_seconds_median": round(on - off, 2), "ratio_with_to_without": round(on / off, 3),
        "attributed_seconds": parts, "means": means,
    }))


if __name__ == "__main__":
    main()
