"""`decodiff submit slurm|ray (train|bench|sweep) CONFIG`: a cluster job from a config (the job
folder, the sbatch script or Ray submission and the checks: harness/submission.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from decodiff.harness.commands.common import add_actions, print_json

HELP = "submit a train, bench or sweep job to SLURM or a Ray cluster"
DESCRIPTION = """Render and submit a cluster job. The job calls `decodiff` on the cluster; its script, resolved configs
and logs stay in its job folder. `decodiff jobs status|logs|stop ID` follows it."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    bsub = add_actions(p, "backend", metavar="BACKEND")

    s = bsub.add_parser(
        "slurm",
        help="an sbatch job: multi-node Accelerate training, the benchmark, or a Ray cluster "
        "across the allocation for a sweep",
        description="Render an sbatch script into the job folder and submit it. train/bench: one "
        "`accelerate launch` per node through srun (main address and port from SLURM), "
        "machine rank = SLURM_NODEID; bench then evaluates on the first node. sweep: a "
        "Ray head and workers across the nodes, then `decodiff sweep`. Preemption: USR1 "
        "before the time limit -> the training checkpoints and exits 75 -> the job "
        "requeues itself and resumes.",
    )
    _common(s)
    # defaults left to the library (jobs.sbatch.SlurmResources), which the help restates
    s.add_argument("--nodes", "-N", type=int, default=argparse.SUPPRESS, help="nodes (default 1)")
    s.add_argument("--gpus-per-node", "-G", type=int, default=argparse.SUPPRESS, help="GPUs per node (default 0: CPU)")
    s.add_argument("--cpus-per-task", type=int, help="CPUs per node (one task per node)")
    s.add_argument(
        "--processes-per-node", type=int, help="training processes per node (default: one per GPU; 1 on CPU nodes)"
    )
    s.add_argument("--mem", help="memory per node, sbatch syntax (e.g. 200G; 0 = all)")
    s.add_argument("--partition", "-p")
    s.add_argument("--time", "-t", help="time limit (minutes, H:MM:SS or D-HH:MM:SS); checked against the plan")
    s.add_argument("--account", "-A")
    s.add_argument("--qos")
    s.add_argument("--constraint")
    s.add_argument(
        "--per-category",
        nargs="?",
        const="",
        metavar="C1,C2",
        help="a job array with one task per category (the config's, or these)",
    )
    s.add_argument(
        "--array",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a job array over the values of a config key (repeatable: the product)",
    )
    s.add_argument("--max-parallel", type=int, help="array tasks running at once")
    s.add_argument(
        "--grace",
        type=int,
        default=argparse.SUPPRESS,
        help="seconds of warning (USR1) before the time limit for the checkpoint (default 120)",
    )
    s.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line run first in the job (module load ..., source venv/bin/activate); repeatable",
    )
    s.add_argument(
        "--no-env-path",
        action="store_true",
        help="do not put this environment's bin folder first on the job's PATH (use --setup instead)",
    )
    s.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="an extra #SBATCH option, verbatim (e.g. --exclusive); repeatable",
    )
    s.set_defaults(func=run_slurm)

    r = bsub.add_parser(
        "ray",
        help="a Ray job through the Job Submission API",
        description="Submit the command as a Ray job: the resolved config travels in the job's "
        "working directory (the runtime environment), the code is the cluster's installed "
        "decodiff-bench unless --py-module/--pip say otherwise.",
    )
    _common(r)
    r.add_argument(
        "--address", help="the dashboard's HTTP address, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)"
    )
    r.add_argument("--cpus", type=float, help="CPUs reserved for the entrypoint")
    r.add_argument("--gpus", type=float, help="GPUs reserved for the entrypoint")
    r.add_argument("--memory", type=int, help="memory reserved for the entrypoint, bytes")
    r.add_argument("--pip", action="append", default=[], metavar="SPEC", help="runtime_env pip package (repeatable)")
    r.add_argument(
        "--py-module",
        action="append",
        default=[],
        metavar="PATH",
        help="local package folder or wheel shipped with the job (runtime_env py_modules; repeatable)",
    )
    r.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable (repeatable)")
    r.add_argument("--runtime-env", type=Path, metavar="FILE", help="YAML/JSON runtime_env merged into the job's")
    r.add_argument("--follow", action="store_true", help="print the job's logs until it ends; exit with its outcome")
    r.set_defaults(func=run_ray)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("train", "bench", "sweep"), help="what the job runs")
    p.add_argument(
        "items",
        nargs="+",
        metavar="CONFIG [CONFIG...] [key=value...]",
        help="config preset or YAML (sweep: the sweep file), then overrides; several configs make a job "
        "array (e.g. one per data set)",
    )
    p.add_argument("--name", help="job name (default: the config's run.name or the sweep's name)")
    p.add_argument(
        "--shards", action="append", default=[], metavar="NAME=DIR", help="sweep: shard folder of data set NAME"
    )
    p.add_argument(
        "--gpu", metavar="NAME", help="GPU model for the plan (h100, a100, ...; default: a100 when GPUs are asked)"
    )
    p.add_argument(
        "--throughput", type=Path, metavar="FILE", help="measured throughput JSON (benchmarks/train_speed.py)"
    )
    p.add_argument("--dry-run", action="store_true", help="write the job folder and print the script; submit nothing")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def run_slurm(args: argparse.Namespace) -> int:
    from decodiff.harness.submission import split_items, submit_slurm  # the library: deferred (--help)
    from decodiff.jobs.errors import JobError
    from decodiff.jobs.sbatch import SlurmResources

    configs, overrides = split_items(args.items)
    given = {k: getattr(args, k) for k in ("nodes", "gpus_per_node", "grace") if hasattr(args, k)}
    res = SlurmResources(
        **given,
        cpus_per_task=args.cpus_per_task,
        mem=args.mem,
        time=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        max_parallel=args.max_parallel,
        sbatch_args=args.sbatch_arg,
        processes_per_node=args.processes_per_node,
    )
    try:
        job = submit_slurm(
            args.kind,
            configs,
            overrides,
            resources=res,
            name=args.name,
            per_category=args.per_category,
            arrays=args.array,
            shards=args.shards,
            setup=args.setup,
            env_path=not args.no_env_path,
            gpu=args.gpu,
            throughput=args.throughput,
            dry_run=args.dry_run,
        )
    except JobError as exc:  # sbatch refused it
        _error(exc)
        return 1
    _print(job, args.json)
    return 0


def run_ray(args: argparse.Namespace) -> int:
    from decodiff.harness.submission import split_items, submit_ray  # the library: deferred (--help)
    from decodiff.jobs.errors import JobError

    configs, overrides = split_items(args.items)
    try:
        job = submit_ray(
            args.kind,
            configs,
            overrides,
            address=args.address,
            cpus=args.cpus,
            gpus=args.gpus,
            memory=args.memory,
            pip=args.pip,
            py_modules=args.py_module,
            env=args.env,
            runtime_env=args.runtime_env,
            name=args.name,
            shards=args.shards,
            gpu=args.gpu,
            throughput=args.throughput,
            dry_run=args.dry_run,
            follow=args.follow,
        )
    except JobError as exc:  # the cluster refused it, or the connection was lost while following
        _error(exc)
        return 1
    _print(job, args.json)
    if args.follow:
        return 0 if job.state == "SUCCEEDED" else 1
    return 0


def _print(job, as_json: bool) -> None:
    if as_json:
        print_json(job.to_json())
    elif job.submitted:
        print(job.id)
    elif job.backend == "slurm":
        sys.stdout.write(job.text)
    else:
        print(job.text)


def _error(exc: Exception) -> None:
    from decodiff.harness.progress import log

    log(f"error: {exc}")
