"""`decodiff submit slurm|ray (train|bench|sweep) CONFIG`: a cluster job from a config.

Every config is resolved and validated here, before anything is written or submitted, and
kept in the job's folder (`<run.out_dir>/jobs/<name>-<backend>-<kind>-<time>/`) beside the
sbatch script or the Ray entrypoint, so a job can be read, rerun or resubmitted as it was.
Paths in the config (out_dir, cache_dir, data.root, data.shards, vae.pretrained) are made
absolute: cluster jobs see the same shared file system from another working directory.
"""
from __future__ import annotations

import argparse
import re
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from decodiff.harness.commands.common import print_json

PATH_KEYS = (("run", "out_dir"), ("run", "cache_dir"), ("data", "root"), ("data", "shards"), ("vae", "pretrained"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="submit a train, bench or sweep job to SLURM or a Ray cluster",
                       description="Render and submit a cluster job. The job calls `decodiff` on the cluster; its "
                                   "script, resolved configs and logs stay in its job folder. "
                                   "`decodiff jobs status|logs|stop ID` follows it.")
    bsub = p.add_subparsers(dest="backend", metavar="BACKEND")
    bsub.required = True

    s = bsub.add_parser("slurm", help="an sbatch job: multi-node Accelerate training, the benchmark, or a Ray cluster "
                                      "across the allocation for a sweep",
                        description="Render an sbatch script into the job folder and submit it. train/bench: one "
                                    "`accelerate launch` per node through srun (main address and port from SLURM), "
                                    "machine rank = SLURM_NODEID; bench then evaluates on the first node. sweep: a "
                                    "Ray head and workers across the nodes, then `decodiff sweep`. Preemption: USR1 "
                                    "before the time limit -> the training checkpoints and exits 75 -> the job "
                                    "requeues itself and resumes.")
    _common(s)
    s.add_argument("--nodes", "-N", type=int, default=1, help="nodes (default 1)")
    s.add_argument("--gpus-per-node", "-G", type=int, default=0, help="GPUs per node (default 0: CPU)")
    s.add_argument("--cpus-per-task", type=int, help="CPUs per node (one task per node)")
    s.add_argument("--processes-per-node", type=int,
                   help="training processes per node (default: one per GPU; 1 on CPU nodes)")
    s.add_argument("--mem", help="memory per node, sbatch syntax (e.g. 200G; 0 = all)")
    s.add_argument("--partition", "-p")
    s.add_argument("--time", "-t", help="time limit (minutes, H:MM:SS or D-HH:MM:SS); checked against the plan")
    s.add_argument("--account", "-A")
    s.add_argument("--qos")
    s.add_argument("--constraint")
    s.add_argument("--per-category", nargs="?", const="", metavar="C1,C2",
                   help="a job array with one task per category (the config's, or these)")
    s.add_argument("--array", action="append", default=[], metavar="KEY=V1,V2",
                   help="a job array over the values of a config key (repeatable: the product)")
    s.add_argument("--max-parallel", type=int, help="array tasks running at once")
    s.add_argument("--grace", type=int, default=120,
                   help="seconds of warning (USR1) before the time limit for the checkpoint (default 120)")
    s.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="a shell line run first in the job (module load ..., source venv/bin/activate); repeatable")
    s.add_argument("--no-env-path", action="store_true",
                   help="do not put this environment's bin folder first on the job's PATH (use --setup instead)")
    s.add_argument("--sbatch-arg", action="append", default=[], metavar="OPTION",
                   help="an extra #SBATCH option, verbatim (e.g. --exclusive); repeatable")
    s.set_defaults(func=run_slurm)

    r = bsub.add_parser("ray", help="a Ray job through the Job Submission API",
                        description="Submit the command as a Ray job: the resolved config travels in the job's "
                                    "working directory (the runtime environment), the code is the cluster's installed "
                                    "decodiff-bench unless --py-module/--pip say otherwise.")
    _common(r)
    r.add_argument("--address", help="the dashboard's HTTP address, e.g. http://HEAD:8265 "
                                     "(default: $RAY_API_SERVER_ADDRESS)")
    r.add_argument("--cpus", type=float, help="CPUs reserved for the entrypoint")
    r.add_argument("--gpus", type=float, help="GPUs reserved for the entrypoint")
    r.add_argument("--memory", type=int, help="memory reserved for the entrypoint, bytes")
    r.add_argument("--pip", action="append", default=[], metavar="SPEC", help="runtime_env pip package (repeatable)")
    r.add_argument("--py-module", action="append", default=[], metavar="PATH",
                   help="local package folder or wheel shipped with the job (runtime_env py_modules; repeatable)")
    r.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable (repeatable)")
    r.add_argument("--runtime-env", type=Path, metavar="FILE", help="YAML/JSON runtime_env merged into the job's")
    r.add_argument("--follow", action="store_true", help="print the job's logs until it ends; exit with its outcome")
    r.set_defaults(func=run_ray)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("train", "bench", "sweep"), help="what the job runs")
    p.add_argument("items", nargs="+", metavar="CONFIG [CONFIG...] [key=value...]",
                   help="config preset or YAML (sweep: the sweep file), then overrides; several configs make a job "
                        "array (e.g. one per data set)")
    p.add_argument("--name", help="job name (default: the config's run.name or the sweep's name)")
    p.add_argument("--shards", action="append", default=[], metavar="NAME=DIR", help="sweep: shard folder of data set NAME")
    p.add_argument("--gpu", metavar="NAME", help="GPU model for the plan (h100, a100, ...; default: a100 when GPUs are asked)")
    p.add_argument("--throughput", type=Path, metavar="FILE", help="measured throughput JSON (benchmarks/train_speed.py)")
    p.add_argument("--dry-run", action="store_true", help="write the job folder and print the script; submit nothing")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


# ---- shared --------------------------------------------------------------------------------------
def _usage(msg: str) -> Exception:
    from decodiff.harness.cli import UsageError

    return UsageError(msg)


def _split(items: list[str], kind: str) -> tuple[list[str], list[str]]:
    configs = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    if not configs:
        raise _usage(f"submit {kind}: give a config (preset name or YAML file) before the overrides")
    if kind == "sweep" and len(configs) > 1:
        raise _usage(f"submit sweep: one sweep file, got {', '.join(configs)}")
    return configs, overrides


def _split_values(text: str) -> list[str]:
    """`a,b,[1,2]` -> ["a", "b", "[1,2]"]: commas inside brackets or braces stay."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out if v.strip()]


def _absolute(cfg_dict: dict[str, Any], base: Path) -> dict[str, Any]:
    for section, key in PATH_KEYS:
        v = cfg_dict.get(section, {}).get(key)
        if isinstance(v, str) and v and "://" not in v and not Path(v).is_absolute():
            cfg_dict[section][key] = str((base / v).resolve())
    return cfg_dict


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "job"


def _new_job_dir(out_dir: Path, name: str, backend: str, kind: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / "jobs" / f"{_slug(name)}-{backend}-{kind}-{stamp}-{secrets.token_hex(2)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


class Task:
    def __init__(self, label: str, cfg) -> None:
        self.label, self.cfg = label, cfg


def _tasks(configs: list[str], overrides: list[str], per_category: str | None, arrays: list[str]) -> list[Task]:
    """Every array task's validated config: configs x categories x --array values."""
    from decodiff.harness.config import ConfigError, build_config

    axes: list[list[tuple[str, list[str]]]] = []
    for spec in arrays:
        key, sep, values = spec.partition("=")
        vals = _split_values(values)
        if not sep or not key or not vals:
            raise _usage(f"--array {spec!r}: expected KEY=V1,V2,... (e.g. infer.reverse_steps=2,5)")
        axes.append([(f"{key}={v}", [f"{key}={v}"]) for v in vals])
    tasks: list[Task] = []
    for config in configs:
        base = build_config(config, overrides)
        cat_axis: list[tuple[str, list[str]]] = [("", [])]
        if per_category is not None:
            known = _categories(base)
            cats = _split_values(per_category) or known
            if not cats:
                raise ConfigError(f"--per-category: {config} names no categories and its data set has no known list; "
                                  "give them: --per-category C1,C2")
            unknown = [c for c in cats if known and c not in known]
            if unknown:
                raise ConfigError(f"--per-category: {', '.join(unknown)} not in {config}'s data set "
                                  f"(it has {', '.join(known)})")
            cat_axis = [(c, [f"data.categories=[{c}]"]) for c in cats]
        combos: list[tuple[list[str], list[str]]] = [([], [])]
        for axis in [cat_axis] + axes:
            combos = [(labels + ([lab] if lab else []), ov + o) for labels, ov in combos for lab, o in axis]
        for labels, extra in combos:
            cfg = build_config(config, overrides + extra)
            tasks.append(Task(":".join([Path(config).stem] + labels), cfg))
    return tasks


def _categories(cfg) -> list[str]:
    from decodiff.jobs.datasizes import data_size

    if cfg.data.categories:
        return list(cfg.data.categories)
    size = data_size(cfg.to_dict()["data"])
    return list(size.categories) if size else []


def _plans(tasks: list[Task] | None, sweep_plan, args, nodes: int, gpus_per_node: int):
    """Plans for the tasks (one per task) or the sweep; None when the plan cannot be made."""
    from decodiff.jobs.errors import JobError
    from decodiff.jobs.plan import Allocation, plan_run
    from decodiff.jobs.plan import plan_sweep as plan_trials

    try:
        alloc = Allocation(nodes=nodes, gpus_per_node=gpus_per_node)
        if sweep_plan is not None:
            from decodiff.harness.commands.plan import sweep_allocation, sweep_workloads

            profile = device_profile(args.gpu, args.throughput, gpus_per_node, True)
            return [plan_trials(sweep_plan.name, sweep_workloads(sweep_plan), profile,
                                sweep_allocation(sweep_plan, nodes, gpus_per_node))]
        from decodiff.jobs.workload import workload

        out = []
        for t in tasks or []:
            profile = device_profile(args.gpu, args.throughput, gpus_per_node, t.cfg.train.allow_tf32)
            out.append(plan_run(workload(t.cfg.to_dict(), t.label), profile, alloc))
        return out
    except JobError as exc:
        from decodiff.harness.progress import log

        log(f"plan: not available ({exc})")
        return None


def device_profile(gpu: str | None, throughput: Path | None, gpus_per_node: int, allow_tf32: bool = True):
    """The measured profile when a throughput file is given, else the built-in estimate."""
    from decodiff.jobs.throughput import builtin_profile, load_throughput, measured_profile

    if throughput is not None:
        from decodiff.jobs.workload import measurement_gflops

        measured = load_throughput(throughput)
        return measured_profile(
            measured,
            lambda m: measurement_gflops(m.model, m.latent_size, m.latent_channels, m.num_classes)[0],
            lambda m: measurement_gflops(m.model, m.latent_size, m.latent_channels, m.num_classes, m.reverse_steps)[1],
            allow_tf32)
    return builtin_profile(gpu or ("a100" if gpus_per_node > 0 else "cpu"), allow_tf32)


def _report_plans(plans, limit: str | None) -> list[str]:
    from decodiff.harness.progress import log
    from decodiff.jobs.plan import format_table, time_limit_warning

    warnings = []
    if not plans:
        return warnings
    longest = max(plans, key=lambda p: p.wall_seconds)
    for line in format_table(longest).splitlines():
        log(line)
    if len(plans) > 1:
        log(f"({len(plans)} array tasks; the longest is shown)")
    w = time_limit_warning(longest, limit)
    if w:
        log(f"WARNING: {w}")
        warnings.append(w)
    return warnings


def _write_config(cfg, path: Path, base: Path) -> None:
    import os

    import yaml

    data = _absolute(cfg.to_dict(), base)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def _sweep_plan(grid: str, overrides: list[str], shards: list[str]):
    from decodiff.harness.sweep.spec import plan_sweep

    return plan_sweep(grid, overrides, _shards(shards))


def _shards(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise _usage(f"--shards {item!r}: expected NAME=DIR")
        out[name] = str(Path(folder).resolve()) if "://" not in folder else folder
    return out


def _check_processes(tasks: list[Task], processes: int) -> None:
    """The global batch is split over processes and accumulation steps: each must get one sample."""
    from decodiff.harness.config import ConfigError

    for t in tasks:
        need = t.cfg.train.grad_accum * processes
        if t.cfg.train.batch_size < need:
            raise ConfigError(f"train.batch_size {t.cfg.train.batch_size} ({t.label}) is smaller than grad_accum x "
                              f"processes = {t.cfg.train.grad_accum} x {processes}; raise train.batch_size or use fewer GPUs")


def _env_bin() -> Path | None:
    here = Path(sys.executable).parent
    return here if (here / "decodiff").exists() else None


# ---- SLURM -----------------------------------------------------------------------------------------
def run_slurm(args: argparse.Namespace) -> int:
    from decodiff.harness.progress import log
    from decodiff.jobs import sbatch, slurm
    from decodiff.jobs.errors import JobError
    from decodiff.jobs.records import JobRecord, add_record

    configs, overrides = _split(args.items, args.kind)
    res = sbatch.SlurmResources(nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                                mem=args.mem, time=args.time, partition=args.partition, account=args.account,
                                qos=args.qos, constraint=args.constraint, grace=args.grace,
                                max_parallel=args.max_parallel, sbatch_args=args.sbatch_arg,
                                processes_per_node=args.processes_per_node)
    try:
        res.check()
        if args.kind == "sweep" and (args.per_category is not None or args.array or len(configs) > 1):
            raise JobError("submit slurm sweep: --per-category/--array/several configs are for train and bench; "
                           "a sweep spreads its own trials over the Ray cluster")
        if not args.dry_run and shutil.which("sbatch") is None:
            raise JobError("sbatch not found on PATH: run on a SLURM login node (or --dry-run to only render)")
        cwd = Path.cwd().resolve()
        if args.kind == "sweep":
            plan = _sweep_plan(configs[0], overrides, args.shards)  # every trial validated
            base = plan.trials[0].config if plan.trials else None
            name = args.name or plan.name
            out_dir = Path(base.run.out_dir if base else "runs")
            tasks, mixed = [], "no"
        else:
            plan = None
            tasks = _tasks(configs, overrides, args.per_category, args.array)
            name = args.name or tasks[0].cfg.run.name
            out_dir = Path(tasks[0].cfg.run.out_dir)
            mixed = tasks[0].cfg.train.mixed_precision
            _check_processes(tasks, res.processes)
        plans = _plans(tasks, plan, args, res.nodes, res.gpus_per_node) if (args.time or args.dry_run) else None
        job_dir = _new_job_dir(out_dir if out_dir.is_absolute() else cwd / out_dir, name, "slurm", args.kind)
        job = sbatch.SlurmJob(kind=args.kind, name=_slug(name), job_dir=job_dir, workdir=cwd,
                              env_bin=None if args.no_env_path else _env_bin(), setup=args.setup, mixed_precision=mixed)
        if plan is not None:
            grid_path = Path(configs[0])
            if grid_path.is_file():
                shutil.copy2(grid_path, job_dir / "sweep.yaml")  # a record; the job reads the original
                job.grid = grid_path.resolve()
            else:
                job.grid = Path(configs[0])  # a preset name
            job.sweep_overrides = overrides
            job.sweep_options = [f"--shards={n}={d}" for n, d in _shards(args.shards).items()]
        else:
            for i, t in enumerate(tasks):
                path = job_dir / (f"config-{i}.yaml" if len(tasks) > 1 else "config.yaml")
                _write_config(t.cfg, path, cwd)
                job.tasks.append(sbatch.Task(path, t.label))
        text = sbatch.render(job, res)
        script = job_dir / sbatch.script_name()
        tmp = job_dir / f".{script.name}.tmp"
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(script)
    except JobError as exc:
        raise _usage(str(exc)) from None
    warnings = _report_plans(plans, args.time)
    n_tasks = max(1, len(tasks))
    result: dict[str, Any] = {"backend": "slurm", "kind": args.kind, "name": name, "job_dir": str(job_dir),
                              "script": str(script), "tasks": n_tasks, "submitted": False, "warnings": warnings,
                              "plan": [p.to_json() for p in plans] if plans else None}
    if args.dry_run:
        log(f"dry run: wrote {script}; submit it with `sbatch {script}`")
        if args.json:
            print_json(result)
        else:
            sys.stdout.write(text)
        return 0
    try:
        job_id = slurm.submit(script)
    except JobError as exc:
        log(f"error: {exc}")
        return 1
    rec = JobRecord(id=job_id, backend="slurm", kind=args.kind, name=name, job_dir=str(job_dir),
                    submitted=time.strftime("%Y-%m-%dT%H:%M:%S"), script=str(script), tasks=n_tasks,
                    extra={"labels": [t.label for t in tasks]})
    add_record(rec)
    log(f"submitted SLURM job {job_id} ({n_tasks} task(s)); logs in {job_dir}; `decodiff jobs status {job_id}`")
    result.update(id=job_id, submitted=True, log=sbatch.log_pattern(job))
    if args.json:
        print_json(result)
    else:
        print(job_id)
    return 0


# ---- Ray ---------------------------------------------------------------------------------------
def run_ray(args: argparse.Namespace) -> int:
    import json
    import shlex

    import yaml

    from decodiff.harness.progress import log
    from decodiff.jobs import ray_jobs
    from decodiff.jobs.errors import JobError
    from decodiff.jobs.records import JobRecord, add_record

    configs, overrides = _split(args.items, args.kind)
    if len(configs) > 1:
        raise _usage("submit ray: one config per job (submit one job per data set)")
    address = args.address or ray_jobs.address_from_env()
    if not address and not args.dry_run:
        raise _usage("submit ray: --address is required (the dashboard's http://HEAD:8265), or set "
                     "RAY_API_SERVER_ADDRESS")
    env_vars = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for item in args.env:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise _usage(f"--env {item!r}: expected KEY=VALUE")
        env_vars[k] = v
    extra_env: dict[str, Any] = {}
    if args.runtime_env is not None:
        if not args.runtime_env.is_file():
            raise _usage(f"--runtime-env {args.runtime_env}: file not found")
        try:
            extra_env = yaml.safe_load(args.runtime_env.read_text()) or {}
        except yaml.YAMLError as exc:
            raise _usage(f"--runtime-env {args.runtime_env}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(extra_env, dict):
            raise _usage(f"--runtime-env {args.runtime_env}: expected a mapping (working_dir, pip, env_vars, ...)")
    for m in args.py_module:
        if not Path(m).exists():
            raise _usage(f"--py-module {m}: not found")
    cwd = Path.cwd().resolve()
    try:
        if address and not args.dry_run:
            address = ray_jobs.normalise_address(address)
            ray_jobs.check_reachable(address)  # seconds, before anything is written
        if args.kind == "sweep":
            plan = _sweep_plan(configs[0], overrides, args.shards)
            base = plan.trials[0].config if plan.trials else None
            name = args.name or plan.name
            out_dir = Path(base.run.out_dir if base else "runs")
            tasks = []
        else:
            plan = None
            tasks = _tasks(configs, overrides, None, [])
            name = args.name or tasks[0].cfg.run.name
            out_dir = Path(tasks[0].cfg.run.out_dir)
        plans = _plans(tasks, plan, args, 1, 1 if (args.gpus or 0) > 0 else 0) if args.dry_run else None
        out_dir = out_dir if out_dir.is_absolute() else cwd / out_dir
        job_dir = _new_job_dir(out_dir, name, "ray", args.kind)
        upload = job_dir / "upload"
        upload.mkdir()
        if plan is not None:
            grid = Path(configs[0])
            if grid.is_file():
                shutil.copy2(grid, upload / "sweep.yaml")
                grid_arg = "sweep.yaml"
            else:
                grid_arg = configs[0]
            # the driver joins the cluster it runs on; outputs go where the submitter's config says
            cache = Path(base.run.cache_dir if base else ".cache/decodiff")
            sweep_over = overrides + [f"run.out_dir={out_dir}", f"run.cache_dir={cache if cache.is_absolute() else cwd / cache}"]
            entry = ["decodiff", "sweep", grid_arg, *sweep_over, "--address", "auto", "--json",
                     *[f"--shards={n}={d}" for n, d in _shards(args.shards).items()]]
        else:
            _write_config(tasks[0].cfg, upload / "config.yaml", cwd)
            entry = ["decodiff", args.kind, "--config", "config.yaml", "--json"]
        entrypoint = " ".join(shlex.quote(e) for e in entry)
        runtime_env: dict[str, Any] = {"working_dir": str(upload), "env_vars": env_vars}
        if args.pip:
            runtime_env["pip"] = list(args.pip)
        if args.py_module:
            runtime_env["py_modules"] = [str(Path(m).resolve()) for m in args.py_module]
        for k, v in extra_env.items():
            if k == "env_vars" and isinstance(v, dict):
                runtime_env["env_vars"].update({str(a): str(b) for a, b in v.items()})
            else:
                runtime_env[k] = v
        sid = f"decodiff-{args.kind}-{_slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        sub = ray_jobs.RaySubmission(entrypoint=entrypoint, submission_id=sid, runtime_env=runtime_env,
                                     metadata={"decodiff_kind": args.kind, "decodiff_name": name, "job_dir": str(job_dir)},
                                     num_cpus=args.cpus, num_gpus=args.gpus, memory=args.memory)
        (job_dir / "submission.json").write_text(json.dumps(sub.__dict__, indent=2) + "\n")
    except JobError as exc:
        raise _usage(str(exc)) from None
    warnings = _report_plans(plans, None)
    result: dict[str, Any] = {"backend": "ray", "kind": args.kind, "name": name, "job_dir": str(job_dir),
                              "address": address, "entrypoint": entrypoint, "runtime_env": runtime_env,
                              "submitted": False, "warnings": warnings}
    if args.dry_run:
        log(f"dry run: wrote {job_dir / 'submission.json'}; nothing submitted")
        if args.json:
            print_json(result)
        else:
            print(json.dumps({"entrypoint": entrypoint, "runtime_env": runtime_env}, indent=2))
        return 0
    try:
        job_id = ray_jobs.submit(address, sub)
    except JobError as exc:
        log(f"error: {exc}")
        return 1
    add_record(JobRecord(id=job_id, backend="ray", kind=args.kind, name=name, job_dir=str(job_dir),
                         submitted=time.strftime("%Y-%m-%dT%H:%M:%S"), address=address))
    log(f"submitted Ray job {job_id} to {address}; `decodiff jobs logs {job_id}`")
    result.update(id=job_id, submitted=True)
    if args.follow:
        try:
            for chunk in ray_jobs.follow_logs(address, job_id):
                sys.stderr.write(chunk)
                sys.stderr.flush()
            st = ray_jobs.status(address, job_id)
        except JobError as exc:
            log(f"error: {exc}")
            return 1
        result.update(state=st.state, exit_code=st.exit_code)
        log(f"job {job_id}: {st.state}" + (f" ({st.message})" if st.message else ""))
    if args.json:
        print_json(result)
    else:
        print(job_id)
    if args.follow:
        return 0 if result["state"] == "SUCCEEDED" else 1
    return 0
