"""Start-up cost of the command line: the modules `import decodiff.harness.cli` loads, the modules
and wall time of `decodiff --help` (which imports every command module), for this checkout and,
optionally, another one (e.g. a clone of an older commit with its own .venv), in interleaved rounds.

    python benchmarks/cli_startup.py                                   # this checkout alone
    python benchmarks/cli_startup.py --other /tmp/old-clone --rounds 7 # side by side, one JSON line

Module counts are exact; times are the best of the rounds (the machine's load only adds time).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

COUNT = (
    "import sys; n0 = len(sys.modules); import decodiff.harness.cli as c; n1 = len(sys.modules); "
    "c.build_parser(); print(n1 - n0, len(sys.modules) - n0)"
)


def _python(repo: Path) -> str:
    venv = repo / ".venv" / "bin" / "python"
    return str(venv if venv.exists() else Path(sys.executable))


def _counts(repo: Path) -> tuple[int, int]:
    out = subprocess.run([_python(repo), "-c", COUNT], cwd=repo, capture_output=True, text=True, check=True)
    cli, parser = out.stdout.split()
    return int(cli), int(parser)


def _help_seconds(repo: Path) -> float:
    start = time.perf_counter()
    subprocess.run([_python(repo), "-m", "decodiff.harness.cli", "--help"], cwd=repo, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", type=Path, help="another checkout (with its own .venv) to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    repos = {"this": Path(__file__).resolve().parents[1]}
    if args.other:
        repos["other"] = args.other.resolve()
    times: dict[str, list[float]] = {k: [] for k in repos}
    for _ in range(args.rounds):
        for name, repo in repos.items():  # interleaved, so both see the same load
            times[name].append(_help_seconds(repo))
    out: dict[str, object] = {"benchmark": "cli_startup", "rounds": args.rounds}
    for name, repo in repos.items():
        cli, parser = _counts(repo)
        out[name] = {
            "repo": str(repo),
            "modules_import_cli": cli,
            "modules_help": parser,
            "help_seconds_best": round(min(times[name]), 3),
        }
    if args.other:
        out["help_this_over_other"] = round(min(times["this"]) / min(times["other"]), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
