#!/usr/bin/env bash
# Evaluation speed of this checkout against another commit's code, side by side (issue 16): the same
# trained model evaluated by `decodiff evaluate`, the two codes alternating, ROUNDS rounds each, so that
# the machine's moods hit both alike. The other commit runs from a temporary git worktree whose
# decodiff.* folders are put first on the Python path, with this checkout's virtual environment (the
# same packages). Prints each run's "evaluate: N images in S s" and mean-metrics line, then the best
# and median seconds of each code and their ratios. Each code evaluates with its own presets. A
# `this:key=value` argument goes to this checkout only (a key the other commit does not know), e.g.
# `this:infer.reference_cache=false` to time every evaluation of this code as a first one.
#
#   benchmarks/eval_vs_commit.sh COMMIT CHECKPOINT [ROUNDS] [key=value | this:key=value ...]
#   benchmarks/eval_vs_commit.sh a9d6e1f .cache/decodiff/models/98f9e9d8528c91bb/checkpoint 3
#   benchmarks/eval_vs_commit.sh b56c640 .cache/decodiff/models/98f9e9d8528c91bb/checkpoint 3 \
#       this:infer.reference_cache=false     # against the code of issue 16's filing, first evaluations
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
commit=${1:?usage: eval_vs_commit.sh COMMIT CHECKPOINT [ROUNDS] [key=value ...]}
checkpoint=$(realpath "${2:?usage: eval_vs_commit.sh COMMIT CHECKPOINT [ROUNDS] [key=value ...]}")
rounds=${3:-3}
shift $(($# < 3 ? $# : 3))
both=() this_only=()
for a in "$@"; do
  case $a in this:*) this_only+=("${a#this:}") ;; *) both+=("$a") ;; esac
done
work=$(mktemp -d "${TMPDIR:-/tmp}/decodiff-vs.XXXXXX")
cleanup() { git -C "$repo" worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
git -C "$repo" worktree add -q --detach "$work/src" "$commit"
mkdir -p "$work/path/decodiff"
for d in harness models datasets reports jobs configs; do ln -s "$work/src/$d" "$work/path/decodiff/$d"; done
cd "$repo"
for r in $(seq "$rounds"); do
  for code in other this; do
    path=$([ "$code" = other ] && echo "$work/path" || echo "")
    extra=("${both[@]}")
    [ "$code" = this ] && extra+=("${this_only[@]}")
    line=$(PYTHONPATH=$path HF_HUB_OFFLINE=1 .venv/bin/python -m decodiff.harness.cli evaluate \
      --checkpoint "$checkpoint" run.out_dir="$work/runs" "${extra[@]}" 2>&1 \
      | grep -oE "evaluate: [0-9]+ images in [0-9.]+s|mean:.*" | tr '\n' ' ')
    echo "round $r $code: $line"
  done
done | tee "$work/log"
python3 - "$work/log" "$commit" <<'PY'
import re, statistics, sys
secs = {"other": [], "this": []}
for line in open(sys.argv[1]):
    m = re.search(r"round \d+ (other|this): evaluate: \d+ images in ([0-9.]+)s", line)
    if m:
        secs[m.group(1)].append(float(m.group(2)))
o, t = secs["other"], secs["this"]
print(f"{sys.argv[2]}: best {min(o):.1f} s, median {statistics.median(o):.1f} s; this checkout: best {min(t):.1f} s, "
      f"median {statistics.median(t):.1f} s; speed-up {min(o) / min(t):.2f}x best, "
      f"{statistics.median(o) / statistics.median(t):.2f}x median")
PY
