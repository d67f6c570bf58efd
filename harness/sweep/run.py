"""Sweeps: a grid (or random search) of configs x data sets x seeds, run as Ray Tune trials.

    plan = plan_sweep("table3-strategy-steps", overrides, shards)   # validated, no side effects
    check_data(plan)                                                   # every data set sharded
    result = run_sweep(plan, SweepOptions(...))

The order of events in `run_sweep`:
1. the sweep folder: created, or (--resume) reopened; finished trials are never run again;
2. the MLflow parent run (created once, reused on resume);
3. one Ray Tune run over the work items, in order: first one training per group of trials that
   share a model (trials that differ only in inference-time keys, infer.* and metrics.*), then
   the trials. Each item first makes sure its data, validation split and VAE exist (one item
   makes them under a file lock, the others find them made); a trial then trains or reuses its
   model (the training key's lock makes concurrent trials train it once), evaluates on the test
   set (and the validation split) and writes its run folder. Tune retries failed items;
4. MLflow child runs for finished trials, the combined long table (metrics.csv), results.json
   (the results contract, one record per trial, split, metric and category) and report.md.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decodiff.datasets.files import write_atomic, write_json_atomic
from decodiff.datasets.imageio import DataError
from decodiff.datasets.stream import check_shards, load_manifest
from decodiff.harness.config import Config
from decodiff.harness.process_env import sleep_for_company
from decodiff.harness.progress import log
from decodiff.harness.provenance import code_version
from decodiff.harness.sweep.cost import estimate
from decodiff.harness.sweep.ray_tune import ray_session, run_phase
from decodiff.harness.sweep.spec import SweepError, SweepPlan, SweepSpec, TrialPlan, digest, same_experiment
from decodiff.harness.sweep.trial import attempts, read_result, tune_entry, write_result_once
from decodiff.harness.tracking import tracking_uri
from decodiff.harness.training.vae_fit import resolve_pretrained
from decodiff.models.errors import VAEError
from decodiff.models.vae import EXPECTED_VAE, vae_source_problem

STATE = "sweep.json"


@dataclass
class SweepOptions:
    out: Path | None = None  # sweep folder (default: <run.out_dir>/sweeps/<name>)
    resume: bool = False
    address: str | None = None  # Ray cluster address; None: a local Ray
    cpus: int | None = None  # CPUs of the local Ray (default: all)
    gpus: int | None = None  # GPUs of the local Ray (default: detected)


@dataclass
class SweepResult:
    folder: Path
    summary: dict[str, Any]  # results contract: run_id, report, metrics (+ sweep, trials, best)
    finished: list[str]
    failed: dict[str, str]
    not_run: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed and not self.not_run


# ---- paths and checks ---------------------------------------------------------------------------------
def _abs(path: str | None) -> str | None:
    if path is None or "://" in path or path.startswith(("pipe:", "builtin:")):
        return path
    return str(Path(path).expanduser().resolve())


def base_config(plan: SweepPlan) -> Config:
    """The base config (preset + set + CLI overrides): output, cache and tracking come from it."""
    return Config.model_validate(plan.base)


def sweep_folder(plan: SweepPlan, out: Path | None) -> Path:
    return Path(out) if out else Path(base_config(plan).run.out_dir) / "sweeps" / plan.name


def tracking_config(plan: SweepPlan) -> Config:
    cfg = base_config(plan)
    return cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": tracking_uri(cfg)})})


def check_data(plan: SweepPlan) -> dict[str, Any]:
    """Every trial's data set must be sharded (or be the demo set, generated on the way); the
    categories must exist. Returns manifests by shard location. Raises SweepError (one line)."""
    manifests: dict[str, Any] = {}
    seen: set[str] = set()
    for t in plan.trials:
        d = t.config.data
        pre = t.config.vae.pretrained
        key = json.dumps([t.dataset, d.dataset, d.shards, d.root, d.categories, pre])
        if key in seen:
            continue
        seen.add(key)
        if pre:
            try:
                problem = vae_source_problem(resolve_pretrained(pre))
            except VAEError as exc:  # an unknown builtin:NAME
                raise SweepError(f"{plan.source}: trial {t.label}: {exc}") from None
            if problem:
                raise SweepError(
                    f"{plan.source}: trial {t.label}: vae.pretrained={pre}: no VAE folder there "
                    f"({problem}; {EXPECTED_VAE})"
                )
        if d.shards:
            if d.shards not in manifests:
                try:
                    manifests[d.shards] = load_manifest(_abs(d.shards))
                except (DataError, OSError, ValueError) as exc:
                    raise SweepError(
                        f"{plan.source}: data set '{t.dataset}' is not sharded at {d.shards} ({exc})"
                    ) from None
                try:  # every shard there at its manifest size: a damaged set fails now, not in every trial
                    check_shards(_abs(d.shards), manifests[d.shards])
                except DataError as exc:
                    raise SweepError(f"{plan.source}: data set '{t.dataset}': {exc}") from None
            unknown = [c for c in d.categories or [] if c not in manifests[d.shards].categories]
            if unknown:
                raise SweepError(
                    f"{plan.source}: data set '{t.dataset}': unknown categories {unknown} "
                    f"(the shards at {d.shards} have {sorted(manifests[d.shards].categories)})"
                )
        elif d.dataset != "demo":
            where = f" (data.root={d.root})" if d.root else ""
            raise SweepError(
                f"{plan.source}: data set '{t.dataset}'{where} is not sharded: shard it once with `decodiff data shard "
                f"--dataset {d.dataset} --root DIR --out SHARDS{' --masks-optional' if d.masks_optional else ''}` "
                f"and pass --shards {t.dataset}=SHARDS "
                f"(or data.shards=SHARDS, or shards_root in the sweep file); trials read shards, never raw folders"
            )
    return manifests


def dry_run(plan: SweepPlan, out: Path | None = None) -> dict[str, Any]:
    """The trials and their estimated cost, without running anything."""
    manifests = check_data(plan)
    folder = sweep_folder(plan, out)
    finished = {t.id for t in plan.trials if read_result(folder / "trials" / t.id)}
    trained = {g for g in plan.groups() if read_result(folder / "trainings" / g)}
    groups = plan.groups()
    return {
        "sweep": plan.name,
        "file": plan.source,
        "folder": str(folder),
        "axes": plan.axes,
        "recipe": plan.recipe(),
        "trials": [
            {
                "trial": t.id,
                "dataset": t.dataset,
                "overrides": t.overrides,
                "recipe": t.config.recipe,
                "departures": t.config.departures(),
                "group": t.group,
                "shares_training_with": len(groups[t.group]) - 1,
                "finished": t.id in finished,
            }
            for t in plan.trials
        ],
        "trainings": plan.trainings(),
        "cost": estimate(plan, manifests, trained, finished),
        "resources": plan.spec.resources.model_dump(),
        "objective": {**plan.spec.objective.model_dump(), "split": plan.objective_split()},
    }


# ---- the sweep folder ------------------------------------------------------------------------------------
def _open_folder(plan: SweepPlan, folder: Path, resume: bool) -> dict[str, Any]:
    state_path = folder / STATE
    if state_path.is_file():
        if not resume:
            raise SweepError(
                f"{folder} already holds a sweep: --resume continues it (finished trials are kept), "
                f"--out DIR starts another"
            )
        state = json.loads(state_path.read_text())
        for run in state.get("runs", []):
            if run.get("status") == "running":  # that driver was killed before it could say so
                run["status"] = "killed"
        log(f"sweep: resuming {folder}")
    else:
        if resume:
            log(f"sweep: nothing to resume in {folder}; starting")
        folder.mkdir(parents=True, exist_ok=True)
        state = {"name": plan.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": [], "parent_run_id": None}
    state.update(
        {
            "file": plan.source,
            "spec": plan.spec.model_dump(mode="json"),
            "cli_overrides": plan.cli_overrides,
            "trials": [
                {"trial": t.id, "dataset": t.dataset, "overrides": t.overrides, "group": t.group} for t in plan.trials
            ],
        }
    )
    state["runs"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "resume": resume, "status": "running"})
    write_json_atomic(state_path, state)
    return state


def _save_state(folder: Path, state: dict[str, Any], status: str) -> None:
    state["runs"][-1].update({"status": status, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_json_atomic(folder / STATE, state)


def _trial_config(t: TrialPlan, folder: Path, reuse: bool | None = None) -> dict[str, Any]:
    """A trial's config for the workers: absolute paths, its own output folder."""
    cfg = t.config
    run = cfg.run.model_copy(
        update={
            "out_dir": str((folder / "trials" / t.id).resolve()),
            "name": t.id,
            "cache_dir": _abs(cfg.run.cache_dir),
        }
    )
    options = {
        **cfg.data.options,
        **({"split_csv": _abs(str(cfg.data.options["split_csv"]))} if "split_csv" in cfg.data.options else {}),
    }  # a file, read from the worker's folder
    data = cfg.data.model_copy(
        update={"root": _abs(cfg.data.root), "shards": _abs(cfg.data.shards), "options": options}
    )
    vae = cfg.vae.model_copy(update={"pretrained": _abs(cfg.vae.pretrained)})
    update: dict[str, Any] = {"run": run, "data": data, "vae": vae}
    if reuse is not None:
        update["train"] = cfg.train.model_copy(update={"reuse": reuse})
    return cfg.model_copy(update=update).to_dict()


def _prepare_key(t: TrialPlan, plan: SweepPlan) -> str:
    c = t.config
    return "p" + digest(
        {
            "data": c.data.model_dump(exclude={"num_workers"}),
            "vae": c.vae.model_dump(exclude={"micro_batch"}),  # speed only (and keys as before it existed)
            "seed": c.run.seed,
            "cache": _abs(c.run.cache_dir),
            "validation": plan.spec.validation.model_dump() if plan.spec.validation else None,
        }
    )


# ---- running ---------------------------------------------------------------------------------------------------
def trial_company(items: int, spec: SweepSpec, options: SweepOptions) -> str | None:
    """Why the sweep's work items share cores (None: they run one at a time on this machine, so
    their threads may spin as on free cores: sleeping cost a one-at-a-time demo sweep 45 % of its
    training speed, README "Speed on a shared machine")."""
    if options.address:
        return "a cluster sweep's trials may share a node"
    if spec.resources.training_processes > 1:
        return f"{spec.resources.training_processes} training processes per trial on this machine"
    fit = int((options.cpus or os.cpu_count() or 1) // spec.resources.cpus) or 1
    at_once = min(items, spec.max_concurrent or items, fit)
    return f"{at_once} of the sweep's work items at once on this machine" if at_once > 1 else None


def run_sweep(plan: SweepPlan, options: SweepOptions) -> SweepResult:
    check_data(plan)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine
    folder = sweep_folder(plan, options.out).resolve()
    state = _open_folder(plan, folder, options.resume)
    spec = plan.spec
    res = spec.resources
    validation = spec.validation.model_dump() if spec.validation else None
    objective = {"metric": spec.objective.metric, "split": plan.objective_split()}
    tcfg = tracking_config(plan)
    tracking = tcfg.tracking.enabled
    if tracking:
        state["parent_run_id"] = _start_parent(tcfg, plan, folder, state.get("parent_run_id"))
        write_json_atomic(folder / STATE, state)
    failed: dict[str, str] = {}
    status = "interrupted"
    try:
        _adopt_earlier(plan, folder)
        todo = [t for t in plan.trials if read_result(folder / "trials" / t.id) is None]
        if len(todo) < len(plan.trials):
            log(f"sweep: {len(plan.trials) - len(todo)} of {len(plan.trials)} trials already finished; they are kept")
        groups: dict[str, list[TrialPlan]] = {}
        for t in todo:
            groups.setdefault(t.group, []).append(t)
        # A model that several trials share is trained first, as a work item of its own; the
        # trials queue behind it (Tune starts items in order) and reuse it.
        shared = [g for g, ts in groups.items() if len(ts) > 1 or res.training_processes > 1]
        common = {"validation": validation, "processes": res.training_processes, "cpus": res.cpus, "gpus": res.gpus}
        payloads: dict[str, dict[str, Any]] = {}
        labels: dict[str, str] = {}
        for g in shared:
            if read_result(folder / "trainings" / g) is not None:
                continue
            lead = groups[g][0]
            payloads[g] = {
                "kind": "train",
                "id": g,
                "folder": str(folder / "trainings" / g),
                "prepare": str(folder / "prepare" / _prepare_key(lead, plan)),
                "config": _trial_config(lead, folder),
                **common,
            }
            labels[g] = f"{lead.dataset} training shared by {len(groups[g])} trials"
        for t in todo:
            payloads[t.id] = {
                "kind": "trial",
                "id": t.id,
                "folder": str(folder / "trials" / t.id),
                "prepare": str(folder / "prepare" / _prepare_key(t, plan)),
                "config": _trial_config(t, folder, reuse=True if t.group in shared else None),
                "dataset": t.dataset,
                "overrides": t.overrides,
                "objective": objective,
                **common,
            }
            labels[t.id] = t.label
        log(f"sweep {plan.name}: {len(todo)} trial(s) to run, {len(shared)} shared training(s) first; folder {folder}")
        if payloads:
            company = trial_company(len(payloads), spec, options)
            if company and (choice := sleep_for_company(company)):
                log(f"threads: {choice}")
            with ray_session(folder, options.address, options.cpus, options.gpus):
                status_of = run_phase(
                    "sweep",
                    payloads,
                    labels,
                    tune_entry,
                    folder / "tune",
                    {"cpu": res.cpus, "gpu": res.gpus},
                    spec.retries,
                    spec.max_concurrent,
                )
            for key, err in status_of.items():
                if err and read_result(Path(payloads[key]["folder"])) is None:
                    if payloads[key]["kind"] == "trial":
                        failed[key] = err
                    else:
                        log(f"sweep: shared training {key} failed: {err}")
        status = "finished"
    except KeyboardInterrupt:
        log("sweep: interrupted; finished trials are kept, --resume continues")
        raise
    finally:
        result = _collect(plan, folder, state, failed, tcfg if tracking else None, status)
    return result


def _comparison_report(plan: SweepPlan, folder: Path) -> str | None:
    """The report stage (as `decodiff report --sweep`): settings compared with bootstrap intervals,
    per-category tables, figures, HTML and LaTeX, beside the paper's numbers where it has some."""
    # the report stage pulls matplotlib and the paper's tables (0.3 s): `--dry-run` starts without them
    from decodiff.harness.report_inputs import resolve_sweep
    from decodiff.reports import published
    from decodiff.reports.build import build_comparison_report, sweep_missing
    from decodiff.reports.write import write_report_files

    try:
        inputs = resolve_sweep(folder)  # reads sweep.json and results.json
        datasets = {t.config.data.dataset for t in plan.trials}
        compare = any(published.has_published(d) for d in datasets)
        default_ds = inputs.runs[0].dataset if inputs.runs else "unknown"
        meta = [
            ("sweep folder", str(folder)),
            ("sweep file", plan.source),
            ("trials", f"{len(inputs.runs)} of {len(plan.trials)} finished"),
        ]
        if plan.spec.description:
            meta.append(("description", plan.spec.description.strip()))
        report = build_comparison_report(
            f"DeCo-Diff sweep: {plan.name}",
            meta,
            inputs.runs,
            list(inputs.missing) + sweep_missing(inputs.sweep, default_ds),
            compare_published=compare,
            sweep=inputs.sweep,
        )
        return str(write_report_files(report, folder / "comparison"))
    except Exception as exc:  # the tables above are already written; a figure must not cost the sweep
        log(f"sweep: comparison report not written ({type(exc).__name__}: {exc})")
        return None


def _trial_rows(plan: SweepPlan, folder: Path, failed: dict[str, str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for t in plan.trials:
        r = read_result(folder / "trials" / t.id)
        marker = folder / "trials" / t.id / "mlflow.json"
        failed_here = failed is not None and t.id in failed
        rows.append(
            {
                "trial": t.id,
                "dataset": t.dataset,
                "overrides": t.overrides,
                "group": t.group,
                "status": "finished" if r else ("failed" if failed_here else "not run"),
                "error": failed.get(t.id) if failed else None,
                "run_dir": r and r.get("run_dir"),
                "report": r and r.get("report"),
                "attempts": len(attempts(folder / "trials" / t.id)),
                "model_checkpoint": r and r.get("train", {}).get("checkpoint"),
                "allocator": r and r.get("allocator"),
                "mlflow_run_id": json.loads(marker.read_text())["run_id"] if marker.is_file() else None,
            }
        )
    return rows


def _adopt_earlier(plan: SweepPlan, folder: Path) -> None:
    """Finished trials whose ids changed (a config field added by a code update) are recognised by
    their resolved config and kept under the new id; their folders stay where they are."""
    trials_dir = folder / "trials"
    known = {t.id for t in plan.trials}
    earlier = {}
    for path in sorted(trials_dir.iterdir()) if trials_dir.is_dir() else []:
        r = read_result(path)
        if path.name not in known and r is not None and r.get("run_dir") and "adopted_from" not in r:
            earlier[path.name] = r
    for t in plan.trials:
        if not earlier or read_result(trials_dir / t.id) is not None:
            continue
        validation = plan.spec.validation.model_dump() if plan.spec.validation else None
        for old_id, r in list(earlier.items()):
            if r.get("dataset") != t.dataset or r.get("validation") != validation:
                continue
            try:
                old_cfg = yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text())
            except (OSError, yaml.YAMLError):
                continue
            if same_experiment(old_cfg, t.config):
                (trials_dir / t.id).mkdir(parents=True, exist_ok=True)
                write_result_once(trials_dir / t.id, {**r, "id": t.id, "adopted_from": old_id})
                marker = trials_dir / old_id / "mlflow.json"
                if marker.is_file():
                    write_json_atomic(trials_dir / t.id / "mlflow.json", json.loads(marker.read_text()))
                log(
                    f"sweep: trial {t.id} is finished trial {old_id} (same settings; config keys added since "
                    f"are at their defaults): kept, not rerun"
                )
                del earlier[old_id]
                break


def _start_parent(tcfg: Config, plan: SweepPlan, folder: Path, existing: str | None) -> str | None:
    from decodiff.harness.sweep.report import start_parent_run  # pandas (0.2 s): not for --dry-run

    try:
        return start_parent_run(tcfg, plan, folder, existing)
    except Exception as exc:  # tracking must not cost the sweep
        log(f"sweep: MLflow parent run could not be started ({exc}); trials run untracked")
        return None


def _collect(
    plan: SweepPlan, folder: Path, state: dict[str, Any], failed: dict[str, str], tcfg: Config | None, status: str
) -> SweepResult:
    """Gather every finished trial (this run's and earlier ones), log new ones to MLflow, and write
    metrics.csv, results.json and report.md."""
    # the sweep's tables need pandas (0.2 s): `--dry-run` starts without it
    from decodiff.harness.sweep.report import (
        best_trial,
        combined_table,
        finish_parent_run,
        log_child_run,
        trial_records,
        write_results,
        write_sweep_report,
    )

    results: dict[str, dict[str, Any]] = {}
    for t in plan.trials:
        r = read_result(folder / "trials" / t.id)
        if r is not None:
            results[t.id] = r
            failed.pop(t.id, None)
    parent = state.get("parent_run_id")
    if tcfg is not None and parent:
        for t in plan.trials:
            marker = folder / "trials" / t.id / "mlflow.json"
            if t.id in results and not marker.is_file():
                try:
                    rid = log_child_run(tcfg, parent, plan, t, results[t.id])
                    write_json_atomic(marker, {"run_id": rid, "parent_run_id": parent})
                except Exception as exc:
                    log(f"sweep: MLflow child run for {t.id} failed ({exc}); a later --resume retries it")
    records = [r for t in plan.trials if t.id in results for r in trial_records(t, results[t.id])]
    write_atomic(folder / "metrics.csv", combined_table(records, plan.axes).to_csv(index=False))
    best = best_trial(plan, results)
    not_run = [t.id for t in plan.trials if t.id not in results and t.id not in failed]
    prov = {
        "sweep file": plan.source
        + (f" (command-line overrides: {' '.join(plan.cli_overrides)})" if plan.cli_overrides else ""),
        "trials": f"{len(results)} finished, {len(failed)} failed, {len(not_run)} not run, of {len(plan.trials)}",
        "trainings": f"{plan.trainings()} distinct training setting(s) for {len(plan.trials)} trials",
        "validation": (
            f"{plan.spec.validation.holdout:.0%} of each category's normal training images held out, "
            f"{plan.spec.validation.defects} synthetic defect(s) each"
            if plan.spec.validation
            else "none"
        ),
        "code version": code_version(),
        "folder": str(folder),
    }
    report = write_sweep_report(folder, plan, results, failed, best, prov)
    trials = _trial_rows(plan, folder, failed)
    summary = {
        "run_id": parent,
        "report": str(report),
        "comparison": None,
        "metrics": records,
        "sweep": str(folder),
        "status": status if not failed else "finished with failures" if status == "finished" else status,
        "trials": trials,
        "best": best,
        "objective": {**plan.spec.objective.model_dump(), "split": plan.objective_split()},
    }
    write_results(folder, summary)
    if status == "finished" and results:  # the report stage reads results.json, then is named in it
        summary["comparison"] = _comparison_report(plan, folder)
        write_results(folder, summary)
    final = (
        "FINISHED"
        if status == "finished" and not failed and not not_run
        else "FAILED"
        if status == "finished"
        else "KILLED"
    )
    if tcfg is not None and parent:
        try:
            finish_parent_run(tcfg, parent, folder, best, final)
        except Exception as exc:
            log(f"sweep: MLflow parent run not updated ({exc})")
    _save_state(folder, state, summary["status"])
    log(f"sweep {plan.name}: {len(results)} finished, {len(failed)} failed, {len(not_run)} not run; report {report}")
    return SweepResult(folder, summary, list(results), dict(failed), not_run)
