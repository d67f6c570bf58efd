#!/usr/bin/env bash
# The demo trained once with each UNet initialisation (issue 12, item 4): `model.init=ldm` (LDM's
# zero-initialised residual conv2, transformer proj_out and conv_out) and `model.init=diffusers`
# (diffusers' defaults, the demo preset's), one after the other, each in its own cache folder so
# that nothing is reused; prints one JSON line with both runs' mean metrics and wall times.
#
#   benchmarks/init_demo_compare.sh                 # ~10 min per run on an idle 2-core CPU
#   ARGS="train.max_steps=1500" benchmarks/init_demo_compare.sh
#
# Run it on an otherwise idle machine: each run is the full demo (1,100 steps).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$repo/.venv/bin/python"
work=$(mktemp -d "${TMPDIR:-/tmp}/decodiff-init.XXXXXX")
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; fi
for init in ldm diffusers; do
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  HF_HUB_OFFLINE=1 nice -n 5 "$py" -m decodiff.harness.cli bench --config demo --json model.init=$init \
    run.cache_dir="$work/$init/cache" run.out_dir="$work/$init/runs" ${ARGS:-} > "$work/$init.json" 2> "$work/$init.err" || {
    echo "init_demo_compare: the $init run failed; last lines:" >&2; tail -20 "$work/$init.err" >&2; exit 1; }
  end=$(date +%s.%N)
  "$py" -c "print(round($end - $start, 1))" > "$work/$init.seconds"
done
"$py" - "$work" "${ARGS:-}" <<'PY'
import json
import sys
from pathlib import Path

work, args = Path(sys.argv[1]), sys.argv[2]
out = {"benchmark": "init_demo_compare", "args": args}
for init in ("ldm", "diffusers"):
    res = json.loads((work / f"{init}.json").read_text())
    means = {f"{r['level']}_{r['metric']}": round(100 * r["value"], 1) for r in res["metrics"]
             if r["category"] == "mean" and r.get("value") is not None}
    out[init] = {"seconds": float((work / f"{init}.seconds").read_text()), "means": means}
print(json.dumps(out))
PY
