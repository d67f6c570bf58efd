#!/usr/bin/env bash
# The main command's targets as a newcomer meets them: a fresh clone's `make bench`, set-up
# included, within 15 minutes, and a second `make bench` at most half as long (it reuses the
# environment, the data, the shards, the VAE and the trained model).
#
# Clones this repository's HEAD into a temporary folder, runs `make bench` twice there with no
# pip cache (packages come from the registry, as on a new machine), and prints one JSON line:
# both wall times, their ratio, where the time went (phases: set-up = `make venv`, then the run's
# own timings.json: data, vae, cache, training, evaluation, report; "other" is start-up and what
# no phase covers), the training steps/s and evaluation images/s, the stage lines of the first
# run and both runs' mean metrics. `benchmarks/fresh_clone_bench.sh --parse RUN_DIR` prints the
# phase summary of an existing `decodiff bench` run folder (how the parsing is tested).
#
#   benchmarks/fresh_clone_bench.sh                     # the demo preset as shipped
#   ARGS="train.max_steps=1500" benchmarks/fresh_clone_bench.sh
#   KEEP=1 benchmarks/fresh_clone_bench.sh              # keep the clone (its runs/ and logs)
#
# Run it on an otherwise idle machine: other load stretches the training stage.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
if [ "${1:-}" = "--parse" ]; then  # the phases of one run folder, as the summary below reports them
  exec python3 "$here/run_phases.py" "$2"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/decodiff-fresh.XXXXXX")
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; fi
git clone -q "$repo" "$work/clone"
cd "$work/clone"
echo "fresh_clone_bench: $(git rev-parse --short HEAD) in $work/clone" >&2

run() {  # run NAME TARGET: `make TARGET` timed, its stdout/stderr kept as NAME.out / NAME.err
  local start end
  start=$(date +%s.%N)
  PIP_NO_CACHE_DIR=1 make "$2" ARGS="${ARGS:-}" > "$1.out" 2> "$1.err" || {
    echo "fresh_clone_bench: $1 run failed; last lines of $work/clone/$1.err:" >&2
    tail -20 "$1.err" >&2
    exit 1
  }
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 1))"
}
setup=$(run setup venv)   # the first `make bench` would do this first: timed as its own phase
bench1=$(run first bench)
first=$(python3 -c "print(round($setup + $bench1, 1))")
second=$(run second bench)

python3 - "$first" "$second" "$(git rev-parse HEAD)" "${ARGS:-}" "$setup" "$bench1" "$work/clone/benchmarks" <<'PY'
import json
import re
import sys

first, second, commit, args = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
setup, bench1 = float(sys.argv[5]), float(sys.argv[6])
sys.path.insert(0, sys.argv[7])
from run_phases import phases_of_output  # noqa: E402


def lines(name, pattern):
    return [ln.strip() for ln in open(f"{name}.err", errors="replace") if re.search(pattern, ln)]


stages = lines("first", r"\] (\w[\w ]*: .*done in |VAE: |train: UNet|evaluate: \d+ images in)")
first_phases = phases_of_output("first.out", bench1, {"set-up": setup})
second_phases = phases_of_output("second.out", second)
print(json.dumps({
    "commit": commit, "args": args,
    "first_run_seconds": first, "second_run_seconds": second, "second_over_first": round(second / first, 3),
    "first_run_phases": first_phases["phases"], "first_run_rates": first_phases["rates"],
    "second_run_phases": second_phases["phases"],
    "first_run_stages": stages,
    "first_run_mean": (lines("first", r"\] mean: ") or ["?"])[-1].split("mean: ", 1)[-1],
    "second_run_mean": (lines("second", r"\] mean: ") or ["?"])[-1].split("mean: ", 1)[-1],
    "second_run_reused": bool(lines("second", r"train: reusing")),
}))
PY
