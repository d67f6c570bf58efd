"""`decodiff jobs list|status|logs|stop|wait ID`: follow submitted jobs on SLURM or Ray.

The back end, Ray address and job folder come from the local job index written at submit time
(jobs/records.py); --backend/--address/--job-dir answer for jobs submitted elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from decodiff.harness.commands.common import add_actions, print_json
from decodiff.harness.errors import UsageError

HELP = "status, logs and stopping of submitted SLURM and Ray jobs"
DESCRIPTION = "Follow jobs submitted with `decodiff submit` (SLURM job ids, array tasks as ID_N; Ray submission ids)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    jsub = add_actions(p, "jobs_command")

    ls = jsub.add_parser("list", help="the jobs submitted from here, newest first")
    ls.add_argument("-n", type=int, default=20, help="how many (default 20)")
    ls.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ls.set_defaults(func=run_list)

    for name, helptext in (
        ("status", "state and exit code (every array task)"),
        ("logs", "the job's output (all array tasks, or ID_N for one)"),
        ("stop", "cancel the job (scancel / Ray stop)"),
        ("wait", "wait until the job ends; exit 0 when it succeeded"),
    ):
        a = jsub.add_parser(name, help=helptext)
        a.add_argument("id", metavar="ID", help="SLURM job id (ID_N: one array task) or Ray submission id")
        a.add_argument("--backend", choices=("slurm", "ray"), help="default: from the job index, else by the id's form")
        a.add_argument("--address", help="Ray dashboard address (default: the one it was submitted to)")
        a.add_argument("--job-dir", type=Path, help="SLURM: the job folder (default: from the job index)")
        if name == "logs":
            a.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
        if name == "wait":
            a.add_argument("--timeout", type=float, help="give up after this many seconds (exit 3)")
        if name in ("status", "wait", "stop"):
            a.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        a.set_defaults(func=run_action, action=name)


def run_list(args: argparse.Namespace) -> int:
    from decodiff.jobs.records import all_records, index_path

    recs = list(reversed(all_records()))[: args.n]
    if args.json:
        print_json({"index": str(index_path()), "jobs": [r.to_json() for r in recs]})
        return 0
    for r in recs:
        where = r.address or r.job_dir
        print(f"{r.id}\t{r.backend}\t{r.kind}\t{r.name}\t{r.submitted}\t{where}")
    return 0


def _resolve(args: argparse.Namespace):
    from decodiff.jobs.ray_jobs import address_from_env
    from decodiff.jobs.records import find_record

    rec = find_record(args.id)
    backend = args.backend or (rec.backend if rec else ("slurm" if args.id.split("_")[0].isdigit() else "ray"))
    if backend == "ray":
        address = args.address or (rec.address if rec else None) or address_from_env()
        if not address:
            raise UsageError(f"job {args.id}: no record of its Ray address; give --address http://HEAD:8265")
        return backend, address, None, 1
    job_dir = args.job_dir or (Path(rec.job_dir) if rec else None)
    return backend, None, job_dir, rec.tasks if rec else 1


def run_action(args: argparse.Namespace) -> int:
    from decodiff.jobs.errors import JobError

    backend, address, job_dir, tasks = _resolve(args)
    try:
        if backend == "ray":
            return _ray(args, address)
        return _slurm(args, job_dir, tasks)
    except JobError as exc:
        raise UsageError(str(exc)) from None


def _ray(args: argparse.Namespace, address: str) -> int:
    from decodiff.jobs import ray_jobs

    if args.action == "logs":
        if args.follow:
            for chunk in ray_jobs.follow_logs(address, args.id):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            sys.stdout.write(ray_jobs.logs(address, args.id))
        return 0
    if args.action == "stop":
        stopped = ray_jobs.stop(address, args.id)
        out = {"id": args.id, "stopped": stopped}
        print_json(out) if args.json else print(f"{args.id}: {'stop requested' if stopped else 'already finished'}")
        return 0
    st = ray_jobs.wait(address, args.id, args.timeout) if args.action == "wait" else ray_jobs.status(address, args.id)
    if args.json:
        print_json({"backend": "ray", "address": address, **st.to_json()})
    else:
        print(f"{st.id}\t{st.state}\t{st.message}")
    if args.action == "wait":
        return 0 if st.state == "SUCCEEDED" else (3 if not st.final else 1)
    return 0


def _slurm(args: argparse.Namespace, job_dir: Path | None, tasks: int) -> int:
    from decodiff.jobs import slurm

    if args.action == "logs":
        if job_dir is None:
            raise UsageError(f"job {args.id}: no record of its folder; give --job-dir DIR")
        if args.follow:
            for chunk in slurm.follow_logs(args.id, job_dir, tasks):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            sys.stdout.write(slurm.read_logs(args.id, job_dir))
        return 0
    if args.action == "stop":
        slurm.cancel(args.id)
        print_json({"id": args.id, "stopped": True}) if args.json else print(f"{args.id}: cancelled")
        return 0
    states = (
        slurm.wait(args.id, job_dir, tasks, args.timeout)
        if args.action == "wait"
        else slurm.status(args.id, job_dir, tasks)
    )
    if args.json:
        print_json(
            {
                "backend": "slurm",
                "id": args.id,
                "job_dir": str(job_dir) if job_dir else None,
                "tasks": [s.to_json() for s in states],
            }
        )
    else:
        for s in states:
            code = "" if s.exit_code is None else f"exit {s.exit_code}"
            print("\t".join(x for x in (s.id, s.state, code, s.reason, s.elapsed) if x))
    if args.action == "wait":
        if not all(s.final for s in states):
            return 3
        return 0 if all(s.state == "COMPLETED" and not s.exit_code for s in states) else 1
    return 0
