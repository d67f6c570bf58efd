"""The main job: data -> shards -> VAE -> training -> deviation correction -> metrics ->
MLflow run and Markdown report. Each stage is also a library call of its own."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, prepare_data
from decodiff.harness.training.distributed import accelerator_if_launched, builders_first
from decodiff.harness.training.init_weights import init_params, source_files
from decodiff.harness.training.model_cache import trained_model
from decodiff.harness.evaluation.evaluate import EvalResult, evaluate
from decodiff.harness.progress import log
from decodiff.harness.provenance import code_version
from decodiff.harness.runs import check_folders, new_run_dir, write_run_files, write_summary
from decodiff.harness.timings import Timings
from decodiff.harness.tracking import (check_tracking, end_run, flatten_config, log_artifacts, log_results, start_run,
                                      tracking_failed, tracking_uri)
from decodiff.harness.evaluation.uncertainty import Uncertainty, bootstrap
from decodiff.harness.training.vae_fit import get_vae
from decodiff.models.deviation import reverse_timesteps
from decodiff.models.vae import FrozenVAE
from decodiff.reports.build import build_run_report
from decodiff.reports.rundata import (FOLDER, RunData, load_run_data, save_baselines, save_qualitative, save_run_json,
                                      save_samples, save_uncertainty)
from decodiff.reports.write import write_report_files, write_run_tables


@dataclass
class BenchResult:
    run_dir: Path
    report: Path
    run_id: str | None
    records: list[dict[str, Any]]
    summary: dict[str, Any]


def bench(cfg: Config) -> BenchResult | None:
    """The whole job. Under several launched processes (`accelerate launch ... bench`) every rank
    trains and evaluates its share; the main process alone writes the run folder, report and
    MLflow run and gets the result, the others get None."""
    t0 = time.time()
    check_folders(cfg)
    check_tracking(cfg)  # an unreachable server fails now, not after the training
    if cfg.model.init_from:  # a missing initialisation fails now, not after the VAE
        source_files(cfg.model.init_from)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    acc = accelerator_if_launched(cfg)
    main = acc is None or acc.is_main_process
    timings = Timings()
    with builders_first(acc):
        with timings.phase("data"):
            data = prepare_data(cfg)
        with timings.phase("vae"):
            vae = get_vae(cfg, data)
    with timings.phase("training"):
        model, classes, train_info, reused = trained_model(cfg, data, vae, accelerator=acc)
    if not reused:  # the latent cache is built inside the training call: its own phase
        timings.split("training", "cache", train_info.get("latent_cache_seconds") or 0.0,
                      train_info.get("latent_cache_cpu_seconds") or 0.0)
        for key in ("steps_per_second", "samples_per_second"):
            if train_info.get(key):
                timings.rates[f"train_{key}"] = train_info[key]
    timings.notes["model_reused"] = reused
    if acc is not None:
        acc.free_memory()  # the DDP wrapper and optimizer state of the training: not needed to evaluate
    run_dir = new_run_dir(cfg, "bench") if main else None  # made once there is a model: a failed training leaves none
    if run_dir is not None:
        log(f"run folder {run_dir}")
    with timings.phase("evaluation"):
        result = evaluate(cfg, data, model, vae, classes, out=run_dir)
    if run_dir is None:
        return None
    timings.rates["eval_images_per_second"] = round(result.images_per_second, 3)
    with timings.phase("report"):
        unc, qual = report_extras(cfg, data, model, vae, classes, result)
        out = finish_run(cfg, run_dir, data, vae, train_info, result, kind="bench", started=t0, uncertainty=unc,
                         qualitative=qual)
    timings.write(run_dir)
    log(f"timings: {timings.line()} ({run_dir / 'timings.json'})")
    return out


def report_extras(cfg: Config, data: PreparedData, model: Any, vae: FrozenVAE, classes: list[str],
                  result: EvalResult) -> tuple[Uncertainty | None, dict[str, Any] | None]:
    """What the report shows beyond the metrics, for a caller that still holds the model: the
    bootstrap intervals and the qualitative examples with their correction trajectories."""
    unc = run_uncertainty(cfg, result)
    qual = None
    if result.samples:
        from decodiff.harness.evaluation.qualitative import qualitative_examples

        qual = qualitative_examples(cfg, data, model, vae, classes, result.samples, unc.image_quality if unc else {})
    return unc, qual


def run_uncertainty(cfg: Config, result: EvalResult) -> Uncertainty | None:
    """Bootstrap intervals of the run's metrics (None when metrics.bootstrap is 0 or no images)."""
    if not cfg.metrics.bootstrap or not result.samples:
        return None
    start = time.time()
    unc = bootstrap(result.records[0]["dataset"] if result.records else "unknown", result.samples, result.pixel_stats,
                    result.records, resamples=cfg.metrics.bootstrap, seed=cfg.run.seed, fpr_limit=cfg.metrics.fpr_limit,
                    aupro_protocol=cfg.metrics.aupro_protocol)
    log(f"bootstrap: {cfg.metrics.bootstrap} resamples of the test images in {time.time() - start:.1f}s")
    return unc


def _steps(cfg: Config) -> str:
    i = cfg.infer
    steps = reverse_timesteps(cfg.process.steps, i.reverse_steps, i.start_step, i.step_mapping)
    return ", ".join(str(t) for t in steps) + (f"; {i.step_mapping} mapping" if i.start_step is None else "")


def finish_run(cfg: Config, run_dir: Path, data: PreparedData, vae: FrozenVAE, train_info: dict[str, Any],
               result: EvalResult, *, kind: str, started: float, uncertainty: Uncertainty | None = None,
               qualitative: dict[str, Any] | None = None) -> BenchResult:
    prov = write_run_files(run_dir, cfg, {
        "data": {"source": data.source, "shards": data.location, "checksum": data.manifest.checksum,
                 "shard_sha256": {s.name: s.sha256 for s in data.manifest.shards if s.category in data.categories}},
        "vae": vae.source,
        "model": train_info,
        "recipe": {"name": cfg.recipe, "departures": cfg.departures()},
    })
    trained = "reused from cache" if train_info.get("reused") else "trained in this run"
    model_line = (f"UNet {cfg.model.size}, {train_info.get('steps')} steps, {trained} ({train_info.get('checkpoint')})"
                  if cfg.method != "vae-recon" else "none (the VAE's own reconstruction error)")
    if train_info.get("imported_from"):
        sha = train_info.get("init", {}).get("sha256", "")[:12]
        model_line = (f"UNet {train_info.get('size')}, imported from {train_info['imported_from']} "
                      f"({train_info.get('format')} format, sha256 {sha}), not trained here "
                      f"({train_info.get('checkpoint')})")
    elif train_info.get("init"):
        model_line += f"; initialised from {train_info['init']['from']} (sha256 {train_info['init']['sha256'][:12]})"
    provenance = {
        "method": {"deco-diff": "DeCo-Diff (deviation correction)",
                   "ddim-recon": "baseline ddim-recon: epsilon-trained UNet, noise to t then DDIM back",
                   "vae-recon": "baseline vae-recon: |Decoder(Encoder(x)) - x|"}[cfg.method],
        "data": f"{data.source} ({len(data.categories)} categories; data checksum {data.manifest.checksum[:12]})",
        "model": model_line,
        "VAE": vae.source,
        "inference": f"{cfg.infer.reverse_steps} reverse steps (t = {_steps(cfg)}), strategy {cfg.infer.strategy}, "
                     f"{cfg.infer.combination} map, "
                     f"gamma_p={cfg.infer.gamma_p}, gamma_l={cfg.infer.gamma_l}, image score {cfg.infer.image_score}",
        "AUPRO": f"protocol {cfg.metrics.aupro_protocol}, FPR limit {cfg.metrics.fpr_limit}",
        "recipe": cfg.recipe_text(),
        "baselines": baselines_line(result),
        "code version": prov["code_version"],
        "config": f"{run_dir / 'config.yaml'} (digest {prov['config_digest']})",
    }
    run_id = None
    if cfg.tracking.enabled:  # started first, so that the report names the run
        tags = {"code_version": code_version(), "data_checksum": data.manifest.checksum, "dataset": data.manifest.dataset,
                "kind": kind, "vae": vae.source[:250], "model_reused": str(train_info.get("reused")),
                "recipe": cfg.recipe, "recipe_departures": ",".join(d["key"] for d in cfg.departures())[:4000] or "none"}
        try:
            run_id = start_run(cfg, run_name=run_dir.name, tags=tags)
        except Exception as exc:  # the store went away since the pre-flight check
            raise tracking_failed(cfg, None, exc, run_dir) from None
    tracking_step = False
    try:
        if uncertainty is None:
            uncertainty = run_uncertainty(cfg, result)
        report = write_run_report(run_dir, result, title=f"DeCo-Diff {kind}: {cfg.run.name}", dataset=data.manifest.dataset,
                                  provenance=provenance, params=flatten_config(cfg.to_dict()), run_id=run_id,
                                  uncertainty=uncertainty, qualitative=qualitative, method=cfg.method)
        if run_id is not None:
            tracking_step = True
            extra = {"eval_images_per_second": result.images_per_second, "eval_seconds": result.seconds}
            extra.update({f"baseline_seconds/{k}": v for k, v in result.baseline_seconds.items()})
            log_results(cfg, run_id, result.records, extra, params=init_params(train_info),
                        baseline_records=result.baseline_records)
            files = [run_dir / n for n in ("config.yaml", "provenance.json", "report.md", "report.html", "tables.tex",
                                           "metrics.csv", "image_table.csv", "pixel_table.csv", "defect_table.csv",
                                           "baselines.csv")]
            log_artifacts(cfg, run_id, files, {d: run_dir / d for d in ("tables", "figures", FOLDER)})
            end_run(cfg, run_id, "FINISHED")
            log(f"MLflow run {run_id} at {tracking_uri(cfg)}")
    except Exception as exc:
        if run_id is not None:
            error = tracking_failed(cfg, run_id, exc, run_dir)  # marks the run FAILED if the store still answers
            if tracking_step:
                raise error from None
        raise
    except BaseException:
        if run_id is not None:
            tracking_failed(cfg, run_id, RuntimeError("interrupted"))
        raise
    summary = {"run_id": run_id, "report": str(report.resolve()), "metrics": result.records,
               "baselines": result.baseline_records,
               "run_dir": str(run_dir.resolve()), "seconds": round(time.time() - started, 1)}
    write_summary(run_dir, summary)
    return BenchResult(run_dir.resolve(), report.resolve(), run_id, result.records, summary)


def baselines_line(result: EvalResult) -> str:
    """What the baselines were and what they cost, for the report's header."""
    if not result.baseline_seconds:
        return "none (infer.baselines=[])"
    from decodiff.harness.evaluation.baselines import BASELINES

    names = [n for n in BASELINES if n in result.baseline_seconds]
    cost = sum(result.baseline_seconds.values())
    return (f"{', '.join(names)}, in this run on the same test images: {cost:.1f}s for them (bank building, maps, "
            f"metrics); the whole evaluation {result.seconds:.1f}s (switch off: infer.baselines=[])")


def write_run_report(run_dir: Path, result: EvalResult, *, title: str, dataset: str, provenance: dict[str, str],
                     params: dict[str, str], run_id: str | None, uncertainty: Uncertainty | None,
                     qualitative: dict[str, Any] | None, method: str = "deco-diff") -> Path:
    """report_data/ first, then the report made from it as read back, so that a report rebuilt
    later from the folder or from MLflow is the same file."""
    folder = run_dir / FOLDER
    meta = RunData(name=run_dir.name, title=title, dataset=dataset, records=result.records, run_id=run_id,
                   provenance=[(k, str(v)) for k, v in provenance.items()])
    save_run_json(folder, meta)
    save_baselines(folder, result.baseline_records)
    save_samples(folder, result.samples)
    if uncertainty is not None:
        save_uncertainty(folder, uncertainty.bootstrap, uncertainty.intervals, uncertainty.pixel_curves)
    if qualitative is not None:
        save_qualitative(folder, qualitative)
    run = load_run_data(folder, result.records, params, run_id=run_id)
    write_run_tables(run_dir, result.records, result.samples, result.baseline_records, method=method)
    return write_report_files(build_run_report(run), run_dir)
