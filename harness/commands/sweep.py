"""`decodiff sweep`: run a grid or random search of configs x data sets x seeds on Ray Tune."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from decodiff.harness.commands.common import add_json_arg, headline, print_json
from decodiff.harness.errors import UsageError

HELP = "run a grid/random search of trials on Ray Tune (paper ablations in configs/sweeps/)"
DESCRIPTION = """Expand a sweep file (configs/sweeps/NAME.yaml or a path) into trials, each a config; train each
distinct training setting once, evaluate every trial, and write one comparison report, one MLflow
parent run with a child per trial, and the combined long table. A local Ray by default (files inside
the sweep folder), a cluster with --address."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sweep", nargs="?", metavar="GRID", help="sweep file (YAML path) or preset name from configs/sweeps/"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="config overrides for every trial (they win over the sweep's axes)",
    )
    p.add_argument("--out", type=Path, help="sweep folder (default: <run.out_dir>/sweeps/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in its folder; finished trials are kept")
    p.add_argument("--dry-run", action="store_true", help="print the trials and the estimated cost; run nothing")
    p.add_argument("--address", help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local Ray")
    p.add_argument("--cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--gpus", type=int, help="GPUs of the local Ray (default: detected)")
    p.add_argument(
        "--shards",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="shard folder of the sweep's data set NAME (repeatable)",
    )
    p.add_argument("--list", action="store_true", help="list the sweep presets and exit")
    add_json_arg(p)
    p.__class__ = _Intermixed
    p.set_defaults(func=run)


class _Intermixed(argparse.ArgumentParser):
    """Options may sit between GRID and the overrides (`sweep GRID --dry-run train.lr=1e-4`)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Ray and Tune print to stdout; with --json, stdout must carry only the JSON object."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _terminate_as_interrupt(signum, frame):  # SIGTERM (preemption, scancel) stops like Ctrl-C
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from decodiff.harness.sweep.spec import plan_sweep, sweep_preset_names

    if args.list:
        for name in sweep_preset_names():
            print(name)
        return 0
    if not args.sweep:
        raise UsageError("sweep: give a sweep file or preset name (--list shows the presets)")
    shards = {}
    for item in args.shards:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UsageError(f"--shards {item!r}: expected NAME=DIR")
        shards[name] = folder
    plan = plan_sweep(args.sweep, args.overrides, shards)  # every trial's config is validated here

    from decodiff.harness.progress import log
    from decodiff.harness.sweep.run import SweepOptions, dry_run, run_sweep

    if args.dry_run:
        info = dry_run(plan, args.out)
        if args.json:
            print_json(info)
        else:
            _print_plan(info)
        return 0
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    options = SweepOptions(out=args.out, resume=args.resume, address=args.address, cpus=args.cpus, gpus=args.gpus)
    with _stdout_to_stderr() if args.json else contextlib.nullcontext():
        result = run_sweep(plan, options)
    best = result.summary.get("best")
    if best:
        records = [r for r in result.summary["metrics"] if r["trial"] == best["trial"] and r["split"] == "test"]
        log(f"best trial {best['trial']} ({best['label']}): test {headline(records)}")
    if args.json:
        print_json(result.summary)
    else:
        print(result.summary["report"])
    if result.failed:
        log(f"{len(result.failed)} trial(s) failed; `decodiff sweep {args.sweep} --resume` retries them")
        return 1
    return 0


def _print_plan(info: dict) -> None:
    c = info["cost"]
    print(
        f"sweep {info['sweep']} ({info['file']}): {len(info['trials'])} trials, "
        f"{info['trainings']} distinct trainings; "
        f"folder {info['folder']}"
    )
    print(f'recipe: {info["recipe"]} (README "Recipes"; each trial\'s departures from it follow its settings)')
    for t in info["trials"]:
        over = " ".join(f"{k}={v}" for k, v in t["overrides"].items() if k != "data.dataset")
        done = "  [finished]" if t["finished"] else ""
        dep = ", ".join(d["key"] for d in t["departures"])
        departs = f"  [departs from {t['recipe']}: {dep}]" if dep else ""
        print(f"  {t['trial']}  {t['dataset']:<8} {over}{done}{departs}")
    print(
        f"to run: {c['trials']} trials, {c['trainings']} trainings ({c['train_steps']} optimizer steps, "
        f"{c['train_samples']} samples, {c['train_tflop']} TFLOP), {c['eval_images']} evaluated images "
        f"({c['eval_unet_calls']} UNet calls, {c['eval_tflop']} TFLOP); total {c['total_tflop']} TFLOP"
    )
    print(f"  ({c['note']})")
