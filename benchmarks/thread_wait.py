"""OpenMP's wait policy on a shared machine: how much of our speed survives a second job on the
same cores, with idle threads spinning (libgomp's default) or sleeping (OMP_WAIT_POLICY=PASSIVE,
which a `decodiff` command chooses where it finds other processes busy: harness/process_env.py).

The policy is read once, when torch loads its OpenMP runtime, so each measurement runs in a
process of its own: `--workload unet` is our XS UNet's training step and 5-step inference
(benchmarks/unet_vs_reference.py, ours alone), `--workload eval` the demo's whole evaluation of its
162 test images with the cached demo model (benchmarks/eval_speed.py; `make bench` first).
`--load N` runs N training jobs of our UNet on the same cores during each measurement, under the
same policy as the measured process (a second job of ours; `--load-policy` sets theirs apart, e.g.
`default` for a foreign job that spins). Rounds are interleaved (the order of the policies
alternates); the best round counts.

    python benchmarks/thread_wait.py --workload unet --load 1 --rounds 2
    python benchmarks/thread_wait.py --workload eval --load 0 --rounds 3      # the idle cost, if any
    python benchmarks/thread_wait.py --workload unet --load 1 --rounds 1 -- --reference ~/DeCo-Diff
    python benchmarks/thread_wait.py --workload unet --load 0 --rounds 3 -- --size demo --latent 16 --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# libgomp's default when OMP_WAIT_POLICY is unset is a spin count of 300,000 (throttled to 100 when a
# process has more threads than cores); setting that count keeps `decodiff`'s PASSIVE default away
POLICIES = {
    "default": {"GOMP_SPINCOUNT": "300000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin1k": {"GOMP_SPINCOUNT": "1000"},  # short spins, then sleep
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
}


def policy_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return {**env, **POLICIES[policy]}


def start_load(n: int, policy: str, warmup: float) -> list[subprocess.Popen]:
    cmd = [sys.executable, str(HERE / "unet_vs_reference.py"), "--background", "--size", "XS", "--batch", "8"]
    procs = [
        subprocess.Popen(cmd, env=policy_env(policy), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(n)
    ]
    time.sleep(warmup if n else 0)
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def measure(workload: str, policy: str, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        if workload == "unet":
            cmd = [str(HERE / "unet_vs_reference.py"), "--rounds", "1", "--json", str(out), *extra]
        else:
            cmd = [str(HERE / "eval_speed.py"), "--variants", "", "--rounds", "1", "--json", str(out), *extra]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *cmd], env=policy_env(policy), check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        data = json.loads(out.read_text())
    if workload == "unet":  # ours, and the reference where `-- --reference PATH` gave one
        row = {}
        for who, t in data["timings"].items():
            prefix = "" if who == "ours" else f"{who}_"
            row[f"{prefix}train_s"] = t["train"]["best_seconds"]
            row[f"{prefix}train_cpu_s"] = t["train"]["best_cpu_seconds"]
            row[f"{prefix}infer_s"] = t["infer"]["best_seconds"]
            row[f"{prefix}infer_cpu_s"] = t["infer"]["best_cpu_seconds"]
        return {**row, "process_s": round(wall, 1)}
    (v,) = data["variants"].values() if "variants" in data else data.values()
    return {"images_per_s": v["images_per_second"], "cpu_s_per_image": v["cpu_seconds_per_image"], "process_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["unet", "eval"], default="unet")
    ap.add_argument("--policies", nargs="+", choices=sorted(POLICIES), default=["default", "passive"])
    ap.add_argument("--load", type=int, default=1, help="training jobs of our UNet on the same cores")
    ap.add_argument("--load-policy", choices=sorted(POLICIES), help="their policy (default: the measured one's)")
    ap.add_argument("--load-warmup", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("extra", nargs="*", help="after --: arguments for the workload's script")
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {p: [] for p in args.policies}
    for r in range(args.rounds):
        for policy in args.policies if r % 2 == 0 else args.policies[::-1]:
            load = start_load(args.load, args.load_policy or policy, args.load_warmup)
            try:
                rows[policy].append(measure(args.workload, policy, args.extra))
            finally:
                stop(load)
            print(f"round {r + 1}/{args.rounds} {policy}: {rows[policy][-1]}", file=sys.stderr, flush=True)
    lower_is_better = args.workload == "unet"
    best = {
        p: {k: (min if lower_is_better or k != "images_per_s" else max)(row[k] for row in rs) for k in rs[0]}
        for p, rs in rows.items()
    }
    result = {
        "workload": args.workload,
        "load_jobs": args.load,
        "load_policy": args.load_policy or "same as measured",
        "rounds": args.rounds,
        "best": best,
        "all": rows,
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    line = json.dumps(result)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")


if __name__ == "__main__":
    main()
