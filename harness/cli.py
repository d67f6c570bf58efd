"""`decodiff`: a thin command line over the library. Each command lives in
harness/commands/<name>.py: its words (`HELP`, `DESCRIPTION`), `add_arguments(parser)` and a `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Order is the order of `decodiff --help`.
COMMANDS = (
    "bench",
    "data",
    "train",
    "evaluate",
    "predict",
    "score",
    "report",
    "model",
    "vae",
    "sweep",
    "plan",
    "submit",
    "jobs",
    "cache",
)

# the commands whose work is torch's threads: they choose the OpenMP wait (harness/process_env.py)
RUNS_MODELS = ("bench", "train", "evaluate", "predict", "score", "vae", "sweep")

EPILOG = """Config: --config PRESET (a name from configs/ or a YAML file) and key.sub=value overrides,
e.g. `decodiff bench --config demo train.max_steps=500 infer.reverse_steps=2`.
Results go to stderr as progress and to stdout with --json (one JSON object)."""


from decodiff.harness.errors import UsageError  # noqa: E402,F401 (commands raise it as cli.UsageError)
from decodiff.harness.process_env import SLEEP_CHOICE, choose_thread_wait, set_process_defaults  # noqa: E402
from decodiff.harness.progress import log  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decodiff",
        description="Train and benchmark DeCo-Diff for anomaly detection.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        mod = importlib.import_module(f"decodiff.harness.commands.{name}")
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.DESCRIPTION))
    return parser


def main(argv: list[str] | None = None) -> int:
    set_process_defaults()  # before anything loads torch: offline, no telemetry
    from decodiff.datasets.imageio import DataError
    from decodiff.harness.config import ConfigError
    from decodiff.harness.errors import CheckpointError
    from decodiff.harness.tracking import TrackingError
    from decodiff.harness.training.preemption import PREEMPTED_EXIT, Preempted
    from decodiff.models.errors import VAEError, WeightsError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in RUNS_MODELS:  # before the command loads torch (a 0.2 s sample of the load)
        choice = choose_thread_wait()  # a sweep decides again for its trials, once it knows how many run at once
        if choice.startswith(SLEEP_CHOICE):  # spinning is the quiet default; the user's own setting needs no line
            log(f"threads: {choice}")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"decodiff: error: {exc}", file=sys.stderr)
        return 2
    except (DataError, CheckpointError, VAEError, WeightsError, FileNotFoundError, TrackingError) as exc:
        print(f"decodiff: error: {_original(exc)}", file=sys.stderr)
        return 1
    except Preempted as exc:
        print(f"decodiff: stopped: {exc}; exit code {PREEMPTED_EXIT} (requeue, then resume)", file=sys.stderr)
        return PREEMPTED_EXIT
    except (ValueError, OSError) as exc:  # a bad value or path the command did not foresee: still one line
        if os.environ.get("DECODIFF_DEBUG"):
            raise
        print(f"decodiff: error: {exc} ({type(exc).__name__}; DECODIFF_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("decodiff: interrupted", file=sys.stderr)
        return 130


def _original(exc: BaseException) -> str:
    """The error's own line: an error raised in a DataLoader worker comes back with the worker's
    traceback in its message (torch re-raises it so); its last line is the original message."""
    text = str(exc)
    if "\nOriginal Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


if __name__ == "__main__":
    sys.exit(main())
