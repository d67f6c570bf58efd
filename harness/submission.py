"""Cluster jobs from configs: an sbatch script (SLURM) or a Ray job (the Job Submission API) that
calls `decodiff` on the cluster.

Every config is resolved and validated here, before anything is written or submitted, and kept
in the job's folder (`<run.out_dir>/jobs/<name>-<backend>-<kind>-<time>/`) beside the sbatch
script or the Ray entrypoint, so a job can be read, rerun or resubmitted as it was. Paths in the
config (out_dir, cache_dir, data.root, data.shards, vae.pretrained) are made absolute: cluster
jobs see the same shared file system from another working directory. Several configs, one task
per category and `KEY=V1,V2` axes make a job array: their product, one validated config each.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decodiff.datasets.files import write_atomic
from decodiff.harness import planning
from decodiff.harness.config import Config, ConfigError, build_config
from decodiff.harness.errors import UsageError
from decodiff.harness.planning import parse_shards
from decodiff.harness.progress import log
from decodiff.harness.sweep.spec import SweepPlan
from decodiff.harness.sweep.spec import plan_sweep as expand_sweep
from decodiff.jobs import ray_jobs, sbatch, slurm
from decodiff.jobs.datasizes import data_size
from decodiff.jobs.errors import JobError
from decodiff.jobs.plan import Allocation, PlanResult, format_table, plan_run, plan_sweep, time_limit_warning
from decodiff.jobs.records import JobRecord, add_record

PATH_KEYS = (("run", "out_dir"), ("run", "cache_dir"), ("data", "root"), ("data", "shards"), ("vae", "pretrained"))


@dataclass
class Task:
    """One array task (or the only task): a label for the logs and its validated config."""

    label: str
    cfg: Config


@dataclass
class Submission:
    """A job written to its folder and, unless a dry run, submitted. `text` is what a dry run
    shows (the sbatch script, or the Ray entrypoint and runtime environment as JSON)."""

    backend: str  # slurm | ray
    kind: str  # train | bench | sweep
    name: str
    job_dir: Path
    text: str
    warnings: list[str]
    submitted: bool = False
    id: str | None = None
    plans: list[PlanResult] | None = None  # jobs.plan.PlanResult per task (SLURM), when the plan was made
    tasks: int = 1
    script: Path | None = None  # SLURM
    log: str | None = None  # SLURM: the log file pattern
    address: str | None = None  # Ray
    entrypoint: str = ""  # Ray
    runtime_env: dict[str, Any] = field(default_factory=dict)  # Ray
    state: str | None = None  # Ray, followed: the job's final state
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        head = {"backend": self.backend, "kind": self.kind, "name": self.name, "job_dir": str(self.job_dir)}
        status = {"submitted": self.submitted, "warnings": self.warnings}
        if self.backend == "slurm":
            out = {**head, "script": str(self.script), "tasks": self.tasks, **status}
            out["plan"] = [p.to_json() for p in self.plans] if self.plans else None
            return {**out, "id": self.id, "log": self.log} if self.submitted else out
        ray = {"address": self.address, "entrypoint": self.entrypoint, "runtime_env": self.runtime_env}
        out = {**head, **ray, **status}
        if self.submitted:
            out["id"] = self.id
        if self.state is not None:
            out.update(state=self.state, exit_code=self.exit_code)
        return out


def split_items(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Command-line items as (configs, key=value overrides)."""
    return [i for i in items if "=" not in i], [i for i in items if "=" in i]


def job_tasks(
    configs: Sequence[str], overrides: Sequence[str] = (), per_category: str | None = None, arrays: Sequence[str] = ()
) -> list[Task]:
    """Every array task's validated config: configs x categories x `arrays` values. `per_category`:
    None (no split), "" (the config's categories) or "C1,C2"; `arrays`: KEY=V1,V2 items."""
    axes: list[list[tuple[str, list[str]]]] = []
    for spec in arrays:
        key, sep, values = spec.partition("=")
        vals = _split_values(values)
        if not sep or not key or not vals:
            raise UsageError(f"--array {spec!r}: expected KEY=V1,V2,... (e.g. infer.reverse_steps=2,5)")
        axes.append([(f"{key}={v}", [f"{key}={v}"]) for v in vals])
    tasks: list[Task] = []
    for config in configs:
        base = build_config(config, list(overrides))
        cat_axis: list[tuple[str, list[str]]] = [("", [])]
        if per_category is not None:
            known = _categories(base)
            cats = _split_values(per_category) or known
            if not cats:
                raise ConfigError(
                    f"--per-category: {config} names no categories and its data set has no known list; "
                    "give them: --per-category C1,C2"
                )
            unknown = [c for c in cats if known and c not in known]
            if unknown:
                raise ConfigError(
                    f"--per-category: {', '.join(unknown)} not in {config}'s data set (it has {', '.join(known)})"
                )
            cat_axis = [(c, [f"data.categories=[{c}]"]) for c in cats]
        combos: list[tuple[list[str], list[str]]] = [([], [])]
        for axis in [cat_axis] + axes:
            combos = [(labels + ([lab] if lab else []), ov + o) for labels, ov in combos for lab, o in axis]
        for labels, extra in combos:
            cfg = build_config(config, list(overrides) + extra)
            tasks.append(Task(":".join([Path(config).stem] + labels), cfg))
    return tasks


# ---- SLURM -----------------------------------------------------------------------------------------
def submit_slurm(
    kind: str,
    configs: Sequence[str],
    overrides: Sequence[str] = (),
    *,
    resources: sbatch.SlurmResources | None = None,
    name: str | None = None,
    per_category: str | None = None,
    arrays: Sequence[str] = (),
    shards: Sequence[str] = (),
    setup: Sequence[str] = (),
    env_path: bool = True,
    gpu: str | None = None,
    throughput: str | Path | None = None,
    dry_run: bool = False,
) -> Submission:
    """Render an sbatch job for `kind` (train, bench or sweep) of `configs` (presets or YAML files;
    a sweep: one sweep file) with `overrides`, write its folder and, unless `dry_run`, submit it
    and record it for `decodiff jobs`. `resources`: nodes, GPUs, time limit...; `shards`:
    NAME=DIR items of a sweep; `setup`: shell lines run first; `env_path`: this environment's bin
    folder first on the job's PATH. Bad input raises UsageError/ConfigError before anything is
    written; a refused submission raises JobError (the folder stays)."""
    _check_configs(kind, configs)
    res = resources or sbatch.SlurmResources()
    try:
        res.check()
        if kind == "sweep" and (per_category is not None or arrays or len(configs) > 1):
            raise JobError(
                "submit slurm sweep: --per-category/--array/several configs are for train and bench; "
                "a sweep spreads its own trials over the Ray cluster"
            )
        if not dry_run and shutil.which("sbatch") is None:
            raise JobError("sbatch not found on PATH: run on a SLURM login node (or --dry-run to only render)")
        cwd = Path.cwd().resolve()
        if kind == "sweep":
            sweep = expand_sweep(configs[0], list(overrides), parse_shards(shards))  # every trial validated
            base = sweep.trials[0].config if sweep.trials else None
            name = name or sweep.name
            out_dir = Path(base.run.out_dir if base else "runs")
            tasks, mixed = [], "no"
        else:
            sweep = None
            tasks = job_tasks(configs, overrides, per_category, arrays)
            name = name or tasks[0].cfg.run.name
            out_dir = Path(tasks[0].cfg.run.out_dir)
            mixed = tasks[0].cfg.train.mixed_precision
            _check_processes(tasks, res.processes)
        plans = _plans(tasks, sweep, gpu, throughput, res.nodes, res.gpus_per_node) if (res.time or dry_run) else None
        job_dir = _new_job_dir(out_dir if out_dir.is_absolute() else cwd / out_dir, name, "slurm", kind)
        job = sbatch.SlurmJob(
            kind=kind,
            name=_slug(name),
            job_dir=job_dir,
            workdir=cwd,
            env_bin=_env_bin() if env_path else None,
            setup=list(setup),
            mixed_precision=mixed,
        )
        if sweep is not None:
            grid_path = Path(configs[0])
            if grid_path.is_file():
                shutil.copy2(grid_path, job_dir / "sweep.yaml")  # a record; the job reads the original
                job.grid = grid_path.resolve()
            else:
                job.grid = Path(configs[0])  # a preset name
            job.sweep_overrides = list(overrides)
            job.sweep_options = [f"--shards={n}={d}" for n, d in parse_shards(shards).items()]
        else:
            for i, t in enumerate(tasks):
                path = job_dir / (f"config-{i}.yaml" if len(tasks) > 1 else "config.yaml")
                _write_config(t.cfg, path, cwd)
                job.tasks.append(sbatch.Task(path, t.label))
        text = sbatch.render(job, res)
        script = job_dir / sbatch.script_name()
        write_atomic(script, lambda p: (p.write_text(text), p.chmod(0o755)))  # executable as it appears
    except JobError as exc:
        raise UsageError(str(exc)) from None
    out = Submission(
        "slurm",
        kind,
        name,
        job_dir,
        text,
        _report_plans(plans, res.time),
        plans=plans,
        tasks=max(1, len(tasks)),
        script=script,
    )
    if dry_run:
        log(f"dry run: wrote {script}; submit it with `sbatch {script}`")
        return out
    out.id = slurm.submit(script)
    _remember(
        out.id,
        "slurm",
        kind,
        name,
        job_dir,
        script=str(script),
        tasks=out.tasks,
        extra={"labels": [t.label for t in tasks]},
    )
    log(f"submitted SLURM job {out.id} ({out.tasks} task(s)); logs in {job_dir}; `decodiff jobs status {out.id}`")
    out.submitted, out.log = True, sbatch.log_pattern(job)
    return out


# ---- Ray ---------------------------------------------------------------------------------------
def submit_ray(
    kind: str,
    configs: Sequence[str],
    overrides: Sequence[str] = (),
    *,
    address: str | None = None,
    cpus: float | None = None,
    gpus: float | None = None,
    memory: int | None = None,
    pip: Sequence[str] = (),
    py_modules: Sequence[str] = (),
    env: Sequence[str] = (),
    runtime_env: str | Path | None = None,
    name: str | None = None,
    shards: Sequence[str] = (),
    gpu: str | None = None,
    throughput: str | Path | None = None,
    dry_run: bool = False,
    follow: bool = False,
) -> Submission:
    """Submit `kind` (train, bench or sweep) of one config (or sweep file) with `overrides` as a Ray
    job to the dashboard at `address` (default $RAY_API_SERVER_ADDRESS): the resolved config
    travels in the job's working directory. `cpus`/`gpus`/`memory` are reserved for the
    entrypoint; `pip`, `py_modules`, `env` (KEY=VALUE items) and a `runtime_env` YAML/JSON file
    shape its runtime environment. `follow`: stream the job's logs to stderr until it ends and set
    `state`. Bad input raises UsageError/ConfigError before anything is written; a refused
    submission or a lost connection raises JobError."""
    _check_configs(kind, configs)
    if len(configs) > 1:
        raise UsageError("submit ray: one config per job (submit one job per data set)")
    address = address or ray_jobs.address_from_env()
    if not address and not dry_run:
        raise UsageError(
            "submit ray: --address is required (the dashboard's http://HEAD:8265), or set RAY_API_SERVER_ADDRESS"
        )
    env_vars = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for item in env:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"--env {item!r}: expected KEY=VALUE")
        env_vars[k] = v
    extra_env = _runtime_env_file(Path(runtime_env)) if runtime_env is not None else {}
    for m in py_modules:
        if not Path(m).exists():
            raise UsageError(f"--py-module {m}: not found")
    cwd = Path.cwd().resolve()
    try:
        if address and not dry_run:
            address = ray_jobs.normalise_address(address)
            ray_jobs.check_reachable(address)  # seconds, before anything is written
        if kind == "sweep":
            sweep = expand_sweep(configs[0], list(overrides), parse_shards(shards))
            base = sweep.trials[0].config if sweep.trials else None
            name = name or sweep.name
            out_dir = Path(base.run.out_dir if base else "runs")
            tasks = []
        else:
            sweep = None
            tasks = job_tasks(configs, overrides)
            name = name or tasks[0].cfg.run.name
            out_dir = Path(tasks[0].cfg.run.out_dir)
        plans = _plans(tasks, sweep, gpu, throughput, 1, 1 if (gpus or 0) > 0 else 0) if dry_run else None
        out_dir = out_dir if out_dir.is_absolute() else cwd / out_dir
        job_dir = _new_job_dir(out_dir, name, "ray", kind)
        upload = job_dir / "upload"
        upload.mkdir()
        if sweep is not None:
            grid = Path(configs[0])
            if grid.is_file():
                shutil.copy2(grid, upload / "sweep.yaml")
                grid_arg = "sweep.yaml"
            else:
                grid_arg = configs[0]
            # the driver joins the cluster it runs on; outputs go where the submitter's config says
            cache = Path(base.run.cache_dir if base else ".cache/decodiff")
            sweep_over = list(overrides) + [
                f"run.out_dir={out_dir}",
                f"run.cache_dir={cache if cache.is_absolute() else cwd / cache}",
            ]
            entry = [
                "decodiff",
                "sweep",
                grid_arg,
                *sweep_over,
                "--address",
                "auto",
                "--json",
                *[f"--shards={n}={d}" for n, d in parse_shards(shards).items()],
            ]
        else:
            _write_config(tasks[0].cfg, upload / "config.yaml", cwd)
            entry = ["decodiff", kind, "--config", "config.yaml", "--json"]
        entrypoint = " ".join(shlex.quote(e) for e in entry)
        renv: dict[str, Any] = {"working_dir": str(upload), "env_vars": env_vars}
        if pip:
            renv["pip"] = list(pip)
        if py_modules:
            renv["py_modules"] = [str(Path(m).resolve()) for m in py_modules]
        for k, v in extra_env.items():
            if k == "env_vars" and isinstance(v, dict):
                renv["env_vars"].update({str(a): str(b) for a, b in v.items()})
            else:
                renv[k] = v
        sid = f"decodiff-{kind}-{_slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        sub = ray_jobs.RaySubmission(
            entrypoint=entrypoint,
            submission_id=sid,
            runtime_env=renv,
            metadata={"decodiff_kind": kind, "decodiff_name": name, "job_dir": str(job_dir)},
            num_cpus=cpus,
            num_gpus=gpus,
            memory=memory,
        )
        write_atomic(job_dir / "submission.json", json.dumps(sub.__dict__, indent=2) + "\n")
    except JobError as exc:
        raise UsageError(str(exc)) from None
    text = json.dumps({"entrypoint": entrypoint, "runtime_env": renv}, indent=2)
    out = Submission(
        "ray",
        kind,
        name,
        job_dir,
        text,
        _report_plans(plans, None),
        plans=plans,
        address=address,
        entrypoint=entrypoint,
        runtime_env=renv,
    )
    if dry_run:
        log(f"dry run: wrote {job_dir / 'submission.json'}; nothing submitted")
        return out
    out.id = ray_jobs.submit(address, sub)
    _remember(out.id, "ray", kind, name, job_dir, address=address)
    log(f"submitted Ray job {out.id} to {address}; `decodiff jobs logs {out.id}`")
    out.submitted = True
    if follow:
        for chunk in ray_jobs.follow_logs(address, out.id):
            sys.stderr.write(chunk)
            sys.stderr.flush()
        st = ray_jobs.status(address, out.id)
        out.state, out.exit_code = st.state, st.exit_code
        log(f"job {out.id}: {st.state}" + (f" ({st.message})" if st.message else ""))
    return out


# ---- shared --------------------------------------------------------------------------------------
def _check_configs(kind: str, configs: Sequence[str]) -> None:
    if kind not in sbatch.KINDS:
        raise UsageError(f"submit: kind {kind!r}, expected one of {', '.join(sbatch.KINDS)}")
    if not configs:
        raise UsageError(f"submit {kind}: give a config (preset name or YAML file) before the overrides")
    if kind == "sweep" and len(configs) > 1:
        raise UsageError(f"submit sweep: one sweep file, got {', '.join(configs)}")


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


def _categories(cfg: Config) -> list[str]:
    if cfg.data.categories:
        return list(cfg.data.categories)
    size = data_size(cfg.to_dict()["data"])
    return list(size.categories) if size else []


def _plans(
    tasks: list[Task],
    sweep: SweepPlan | None,
    gpu: str | None,
    throughput: str | Path | None,
    nodes: int,
    gpus_per_node: int,
) -> list[PlanResult] | None:
    """Plans for the tasks (one per task) or the sweep; None when the plan cannot be made."""
    throughput = Path(throughput) if throughput is not None else None
    try:
        if sweep is not None:
            profile = planning.device_profile(gpu, throughput, gpus_per_node, True)
            return [
                plan_sweep(
                    sweep.name,
                    planning.sweep_workloads(sweep),
                    profile,
                    planning.sweep_allocation(sweep, nodes, gpus_per_node),
                )
            ]
        alloc = Allocation(nodes=nodes, gpus_per_node=gpus_per_node)
        return [
            plan_run(
                planning.run_workload(t.cfg, t.label),
                planning.device_profile(gpu, throughput, gpus_per_node, t.cfg.train.allow_tf32),
                alloc,
            )
            for t in tasks
        ]
    except JobError as exc:
        log(f"plan: not available ({exc})")
        return None


def _report_plans(plans: list[PlanResult] | None, limit: str | None) -> list[str]:
    """The longest task's plan as a table on stderr; a warning when the time limit is too short."""
    if not plans:
        return []
    longest = max(plans, key=lambda p: p.wall_seconds)
    for line in format_table(longest).splitlines():
        log(line)
    if len(plans) > 1:
        log(f"({len(plans)} array tasks; the longest is shown)")
    w = time_limit_warning(longest, limit)
    if w:
        log(f"WARNING: {w}")
        return [w]
    return []


def _runtime_env_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"--runtime-env {path}: file not found")
    try:
        extra = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"--runtime-env {path}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(extra, dict):
        raise UsageError(f"--runtime-env {path}: expected a mapping (working_dir, pip, env_vars, ...)")
    return extra


def _write_config(cfg: Config, path: Path, base: Path) -> None:
    write_atomic(path, yaml.safe_dump(_absolute(cfg.to_dict(), base), sort_keys=False))


def _check_processes(tasks: list[Task], processes: int) -> None:
    """The global batch is split over processes and accumulation steps: each must get one sample."""
    for t in tasks:
        need = t.cfg.train.grad_accum * processes
        if t.cfg.train.batch_size < need:
            raise ConfigError(
                f"train.batch_size {t.cfg.train.batch_size} ({t.label}) is smaller than grad_accum x "
                f"processes = {t.cfg.train.grad_accum} x {processes}; raise train.batch_size or use "
                "fewer GPUs"
            )


def _env_bin() -> Path | None:
    here = Path(sys.executable).parent
    return here if (here / "decodiff").exists() else None


def _remember(job_id: str, backend: str, kind: str, name: str, job_dir: Path, **fields: Any) -> None:
    """The job index entry `decodiff jobs` reads: who, where, when, and the backend's own fields."""
    add_record(
        JobRecord(
            id=job_id,
            backend=backend,
            kind=kind,
            name=name,
            job_dir=str(job_dir),
            submitted=time.strftime("%Y-%m-%dT%H:%M:%S"),
            **fields,
        )
    )
