"""The demo trained with several recipes, one after the other, each its own full `decodiff bench`
run (issue 16, item 2: the demo's quality in fewer steps). For each variant: wall seconds of the
command, training seconds and steps/s (its timings.json), the five mean metrics and every
category's image AUROC, as one JSON line each, then a Markdown table.

Variants share one cache folder, so the demo data, its shards and the latent cache are built once;
a trained model is cached under its config, so a variant whose model is already there is reused
(the row then says so, and its time is not a training time: pass a fresh --cache-dir to time all).

    python benchmarks/demo_recipe_compare.py --variant base: \\
        --variant "lr4e-4:train.max_steps=700 train.lr=4e-4" --variant "ema:train.max_steps=700 train.ema=0.995"
    python benchmarks/demo_recipe_compare.py --seeds 0 1 --variant "700:train.max_steps=700"
    python benchmarks/demo_recipe_compare.py --variant ldm:model.init=ldm --variant diffusers:model.init=diffusers

Run it on an otherwise idle machine: the preset (700 steps) takes ~5-6 minutes a run on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from run_phases import run_phases  # noqa: E402  (a sibling script: the phases of a run folder)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, rest = text.partition(":")
    if not sep or not name:
        raise SystemExit(
            f"demo_recipe_compare: --variant {text!r}: expected NAME:OVERRIDES (e.g. 'fast:train.max_steps=700')"
        )
    return name, shlex.split(rest)


def run_variant(name: str, overrides: list[str], seed: int, cache: Path, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "decodiff.harness.cli",
        "bench",
        "--config",
        "demo",
        "--json",
        f"run.cache_dir={cache}",
        f"run.out_dir={out / f'{name}-s{seed}'}",
        f"run.seed={seed}",
        *overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise SystemExit(f"demo_recipe_compare: variant {name!r} (seed {seed}) failed:\n{tail}")
    res = json.loads(proc.stdout)
    run_dir = Path(res["report"]).parent
    phases = run_phases(run_dir)
    means = {
        f"{r['level']}_{r['metric']}": round(100 * r["value"], 1)
        for r in res["metrics"]
        if r["category"] == "mean" and r.get("value") is not None and r["metric"] in ("auroc", "auprc", "aupro")
    }
    image_auroc = {
        r["category"]: round(100 * r["value"], 1)
        for r in res["metrics"]
        if r["level"] == "image" and r["metric"] == "auroc" and r["category"] != "mean"
    }
    return {
        "variant": name,
        "overrides": " ".join(overrides),
        "seed": seed,
        "wall_s": round(wall, 1),
        "training_s": phases["phases"].get("training", 0.0),
        "steps_per_s": phases["rates"].get("train_steps_per_second"),
        "model_reused": phases["model_reused"],
        "means": means,
        "image_auroc": image_auroc,
        "run_dir": str(run_dir),
    }


def table(rows: list[dict[str, Any]]) -> str:
    cats = sorted({c for r in rows for c in r["image_auroc"]})
    keys = ["image_auroc", "pixel_auroc", "pixel_auprc", "pixel_aupro", "image_auprc"]
    head = [
        "variant",
        "seed",
        "training s",
        "steps/s",
        *[f"mean {k.replace('_', ' ')}" for k in keys],
        *[f"{c} image AUROC" for c in cats],
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        train = "reused" if r["model_reused"] else f"{r['training_s']}"
        cells = [
            r["variant"],
            str(r["seed"]),
            train,
            f"{r['steps_per_s'] or 0:.2f}",
            *[str(r["means"].get(k, "")) for k in keys],
            *[str(r["image_auroc"].get(c, "")) for c in cats],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--variant",
        action="append",
        required=True,
        help="NAME:OVERRIDES, e.g. 'fast:train.max_steps=700 train.lr=4e-4'",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "decodiff")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/demo_recipe_compare"))
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    rows = []
    for seed in args.seeds:
        for name, overrides in variants:
            print(f"demo_recipe_compare: {name} (seed {seed}) ...", file=sys.stderr, flush=True)
            row = run_variant(name, overrides, seed, args.cache_dir, args.out_dir)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
