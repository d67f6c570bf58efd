"""glibc's allocator keeping freed memory (DECODIFF_ALLOCATOR=kept, harness/allocator.py) against
glibc's defaults (the default), in fresh processes, rounds interleaved (their order
alternating), the fastest round of each counting.

Workloads (each a real command, run once per policy per round):
- `bench`: `decodiff bench --config demo train.max_steps=N` in an empty cache folder (a first
  run: data, shards, latent cache, training, first evaluation, report); its timings.json gives the
  phases, training steps/s and evaluation images/s;
- `unet`: `benchmarks/unet_vs_reference.py` (our UNet's training step and 5-step inference, and the
  reference's beside it where `--reference` is given) under the same policy for both contestants.

Each process's user and system CPU seconds and peak memory (ru_maxrss) come from wait4, so the
kernel's share (page faults of memory handed back and asked for again) shows.

    python benchmarks/allocator_speed.py --workloads bench --rounds 2
    python benchmarks/allocator_speed.py --workloads unet --reference ~/DeCo-Diff --rounds 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from decodiff.harness.allocator import DEFAULT_LINE, KEEP_LINE, MALLOC_VARIABLES, POLICY_VARIABLE

HERE = Path(__file__).resolve().parent
DECODIFF = str(Path(sys.executable).with_name("decodiff"))
LINES = {"kept": KEEP_LINE, "glibc": DEFAULT_LINE}  # each policy and what its processes must record as holding


def run(cmd: list[str], env_extra: dict[str, str], stdout_path: Path) -> dict[str, float]:
    """Run `cmd` to its end; its wall, user and system seconds and peak memory (MB)."""
    env = {k: v for k, v in os.environ.items() if k not in (*MALLOC_VARIABLES, POLICY_VARIABLE)} | env_extra
    start = time.perf_counter()
    with stdout_path.open("w") as out, (stdout_path.with_suffix(".err")).open("w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if (code := os.waitstatus_to_exitcode(status)) != 0:
        tail = stdout_path.with_suffix(".err").read_text(errors="replace").strip().splitlines()[-5:]
        sys.exit(f"allocator_speed: {' '.join(cmd)} failed (exit {code}):\n" + "\n".join(tail))
    return {
        "wall_seconds": round(wall, 2),
        "user_seconds": round(usage.ru_utime, 2),
        "system_seconds": round(usage.ru_stime, 2),
        "peak_mb": round(usage.ru_maxrss / 1024),
    }


def bench(args: argparse.Namespace, work: Path, tag: str, env: dict[str, str]) -> dict[str, Any]:
    folder = work / tag
    cmd = [DECODIFF, "bench", "--config", "demo", f"train.max_steps={args.steps}", f"run.cache_dir={folder}/cache"]
    res = run([*cmd, f"run.out_dir={folder}/runs", "--json"], env, folder.with_suffix(".out"))
    (run_dir,) = [p for p in (folder / "runs").iterdir() if (p / "timings.json").is_file()]
    t = json.loads((run_dir / "timings.json").read_text())
    res["phases"] = {k: v["seconds"] for k, v in t["phases"].items()}
    res["rates"] = t.get("rates", {})
    res["allocator"] = t.get("allocator")
    return res


def unet(args: argparse.Namespace, work: Path, tag: str, env: dict[str, str]) -> dict[str, Any]:
    out = work / f"{tag}.json"
    cmd = [sys.executable, str(HERE / "unet_vs_reference.py"), "--rounds", str(args.unet_rounds), "--json", str(out)]
    res = run(cmd + (["--reference", args.reference] if args.reference else []), env, work / f"{tag}.out")
    r = json.loads(out.read_text())
    res["best_seconds"] = {f"{n}/{k}": v[k]["best_seconds"] for n, v in r["timings"].items() for k in v}
    res["ratios"] = r["ratios"]
    res["allocator"] = r.get("allocator")
    return res


WORKLOADS = {"bench": bench, "unet": unet}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=["bench"], choices=sorted(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=2, help="processes per policy and workload, interleaved")
    ap.add_argument("--steps", type=int, default=200, help="bench: training steps")
    ap.add_argument("--unet-rounds", type=int, default=2, help="unet: rounds inside each process")
    ap.add_argument("--reference", help="unet: the authors' models.py or its folder")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="allocator-speed-") as tmp:
        for r in range(args.rounds):
            order = list(LINES) if r % 2 == 0 else list(LINES)[::-1]
            for name in args.workloads:
                for policy in order:
                    tag = f"{name}-{policy}-{r}"
                    res = WORKLOADS[name](args, Path(tmp), tag, {POLICY_VARIABLE: policy})
                    if res["allocator"] != LINES[policy]:  # e.g. glibc variables of the caller's own
                        sys.exit(f"allocator_speed: {tag} ran under {res['allocator']!r}, not {LINES[policy]!r}")
                    results.setdefault(name, {}).setdefault(policy, []).append(res)
                    print(f"round {r + 1}: {tag}: {json.dumps(res)}", file=sys.stderr, flush=True)
    best = {
        name: {p: min(runs, key=lambda x: x["wall_seconds"]) for p, runs in by_policy.items()}
        for name, by_policy in results.items()
    }
    # whole processes (start-up and, for unet, both contestants): the phases and ratios say more
    speedup = {name: round(b["glibc"]["wall_seconds"] / b["kept"]["wall_seconds"], 2) for name, b in best.items()}
    out = {"rounds": args.rounds, "best": best, "process_wall_speedup_kept": speedup, "loadavg": os.getloadavg()}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps({**out, "all": results}, indent=1))


if __name__ == "__main__":
    main()
