"""The end every run shares (bench, evaluate, score, sweep trials): the run folder's config and
provenance, the report, the MLflow run and summary.json, written in one order so that a report
names its MLflow run and a failed tracking step leaves the folder readable."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData
from decodiff.harness.evaluation.baselines import BASELINES
from decodiff.harness.evaluation.evaluate import EvalResult
from decodiff.harness.evaluation.qualitative import qualitative_examples
from decodiff.harness.evaluation.score import ScoreResult
from decodiff.harness.evaluation.uncertainty import Uncertainty, bootstrap
from decodiff.harness.methods import score_text
from decodiff.harness.progress import log
from decodiff.harness.provenance import code_version
from decodiff.harness.recipes import departures, departures_text
from decodiff.harness.runs import write_run_files, write_summary
from decodiff.harness.tracking import (
    end_run,
    flatten_config,
    log_artifacts,
    log_results,
    log_run,
    start_run,
    tracking_failed,
    tracking_uri,
)
from decodiff.harness.training.init_weights import init_params
from decodiff.models.deviation import reverse_timesteps
from decodiff.models.vae import FrozenVAE
from decodiff.reports.build import build_run_report
from decodiff.reports.rundata import (
    FOLDER,
    RunData,
    load_run_data,
    save_baselines,
    save_qualitative,
    save_run_json,
    save_samples,
    save_uncertainty,
)
from decodiff.reports.write import write_report, write_report_files, write_run_tables


@dataclass
class RunResult:
    """A finished run (bench, evaluate, score, sweep trial): its folder, report and MLflow run id,
    the long table, and summary.json's content."""

    run_dir: Path
    report: Path
    run_id: str | None
    records: list[dict[str, Any]]
    summary: dict[str, Any]


def report_extras(
    cfg: Config, data: PreparedData, model: Any, vae: FrozenVAE, classes: list[str], result: EvalResult
) -> tuple[Uncertainty | None, dict[str, Any] | None]:
    """What the report shows beyond the metrics, for a caller that still holds the model: the
    bootstrap intervals and the qualitative examples with their correction trajectories."""
    unc = run_uncertainty(cfg, result)
    qual = None
    if result.samples:
        qual = qualitative_examples(cfg, data, model, vae, classes, result.samples, unc.image_quality if unc else {})
    return unc, qual


def run_uncertainty(cfg: Config, result: EvalResult) -> Uncertainty | None:
    """Bootstrap intervals of the run's metrics (None when metrics.bootstrap is 0 or no images)."""
    if not cfg.metrics.bootstrap or not result.samples:
        return None
    start = time.time()
    unc = bootstrap(
        result.records[0]["dataset"] if result.records else "unknown",
        result.samples,
        result.pixel_stats,
        result.records,
        resamples=cfg.metrics.bootstrap,
        seed=cfg.run.seed,
        fpr_limit=cfg.metrics.fpr_limit,
        aupro_protocol=cfg.metrics.aupro_protocol,
    )
    log(f"bootstrap: {cfg.metrics.bootstrap} resamples of the test images in {time.time() - start:.1f}s")
    return unc


def _steps(cfg: Config) -> str:
    i = cfg.infer
    steps = reverse_timesteps(cfg.process.steps, i.reverse_steps, i.start_step, i.step_mapping)
    return ", ".join(str(t) for t in steps) + (f"; {i.step_mapping} mapping" if i.start_step is None else "")


def finish_run(
    cfg: Config,
    run_dir: Path,
    data: PreparedData,
    vae: FrozenVAE,
    train_info: dict[str, Any],
    result: EvalResult,
    *,
    kind: str,
    started: float,
    uncertainty: Uncertainty | None = None,
    qualitative: dict[str, Any] | None = None,
) -> RunResult:
    """The one ending of every run that evaluated a model (bench, evaluate, sweep trials): provenance and
    config files, the MLflow run (started first, so the report names it), report data, tables and report,
    summary.json; a tracking failure leaves the folder whole and says so."""
    prov = write_run_files(
        run_dir,
        cfg,
        {
            "data": {
                "source": data.source,
                "shards": data.location,
                "checksum": data.manifest.checksum,
                "shard_sha256": {s.name: s.sha256 for s in data.manifest.shards if s.category in data.categories},
            },
            "vae": vae.source,
            "model": train_info,
            "recipe": {"name": cfg.recipe, "departures": cfg.departures()},
        },
    )
    trained = "reused from cache" if train_info.get("reused") else "trained in this run"
    model_line = (
        f"UNet {cfg.model.size}, {train_info.get('steps')} steps, {trained} ({train_info.get('checkpoint')})"
        if cfg.method != "vae-recon"
        else "none (the VAE's own reconstruction error)"
    )
    if train_info.get("imported_from"):
        sha = train_info.get("init", {}).get("sha256", "")[:12]
        model_line = (
            f"UNet {train_info.get('size')}, imported from {train_info['imported_from']} "
            f"({train_info.get('format')} format, sha256 {sha}), not trained here "
            f"({train_info.get('checkpoint')})"
        )
    elif train_info.get("init"):
        model_line += f"; initialised from {train_info['init']['from']} (sha256 {train_info['init']['sha256'][:12]})"
    provenance = {
        "method": {
            "deco-diff": "DeCo-Diff (deviation correction)",
            "ddim-recon": "baseline ddim-recon: epsilon-trained UNet, noise to t then DDIM back",
            "vae-recon": "baseline vae-recon: |Decoder(Encoder(x)) - x|",
        }[cfg.method],
        "data": f"{data.source} ({len(data.categories)} categories; data checksum {data.manifest.checksum[:12]})",
        "model": model_line,
        "VAE": vae.source,
        "inference": f"{cfg.infer.reverse_steps} reverse steps (t = {_steps(cfg)}), strategy {cfg.infer.strategy}, "
        f"{cfg.infer.combination} map, "
        f"gamma_p={cfg.infer.gamma_p}, gamma_l={cfg.infer.gamma_l}, image score: {score_text(cfg)}",
        "AUPRO": _aupro_line(cfg),
        "recipe": cfg.recipe_text(),
        **({"training recipe": made_by} if (made_by := training_recipe(train_info, cfg)) else {}),
        "baselines": baselines_line(result),
        "code version": prov["code_version"],
        "config": f"{run_dir / 'config.yaml'} (digest {prov['config_digest']})",
    }
    run_id = None
    if cfg.tracking.enabled:  # started first, so that the report names the run
        tags = {
            "code_version": code_version(),
            "data_checksum": data.manifest.checksum,
            "dataset": data.manifest.dataset,
            "kind": kind,
            "vae": vae.source[:250],
            "model_reused": str(train_info.get("reused")),
            "recipe": cfg.recipe,
            "recipe_departures": ",".join(d["key"] for d in cfg.departures())[:4000] or "none",
            **({"training_recipe": made_by[:4000]} if made_by else {}),
        }
        try:
            run_id = start_run(cfg, run_name=run_dir.name, tags=tags)
        except Exception as exc:  # the store went away since the pre-flight check
            raise tracking_failed(cfg, None, exc, run_dir) from None
    tracking_step = False
    try:
        if uncertainty is None:
            uncertainty = run_uncertainty(cfg, result)
        report = write_run_report(
            run_dir,
            result,
            title=f"DeCo-Diff {kind}: {cfg.run.name}",
            dataset=data.manifest.dataset,
            provenance=provenance,
            params=flatten_config(cfg.to_dict()),
            run_id=run_id,
            uncertainty=uncertainty,
            qualitative=qualitative,
            method=cfg.method,
        )
        if run_id is not None:
            tracking_step = True
            extra = {"eval_images_per_second": result.images_per_second, "eval_seconds": result.seconds}
            extra.update({f"baseline_seconds/{k}": v for k, v in result.baseline_seconds.items()})
            log_results(
                cfg,
                run_id,
                result.records,
                extra,
                params=init_params(train_info),
                baseline_records=result.baseline_records,
            )
            files = [
                run_dir / n
                for n in (
                    "config.yaml",
                    "provenance.json",
                    "report.md",
                    "report.html",
                    "tables.tex",
                    "metrics.csv",
                    "image_table.csv",
                    "pixel_table.csv",
                    "defect_table.csv",
                    "baselines.csv",
                )
            ]
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
    return _summary(
        run_dir,
        run_id,
        report,
        result.records,
        started,
        baselines=result.baseline_records,
        run_dir=str(run_dir.resolve()),
    )


def finish_scores(
    cfg: Config, out: Path, data: PreparedData, maps: Path, result: ScoreResult, *, started: float
) -> RunResult:
    """The end of a `score` run: another method's maps, so no model or VAE to describe, and the
    MLflow run is logged in one call after the report."""
    prov = write_run_files(
        out, cfg, {"maps": str(maps.resolve()), "data": {"source": data.source, "checksum": data.manifest.checksum}}
    )
    provenance = {
        "maps": str(maps),
        "data": f"{data.source} (data checksum {data.manifest.checksum[:12]})",
        "AUPRO": _aupro_line(cfg),
        "code version": prov["code_version"],
    }
    report = write_report(
        out, result.records, result.samples, title=f"Scores of {maps.name}", provenance=provenance, notes=result.notes
    )
    run_id = None
    if cfg.tracking.enabled:
        run_id = log_run(
            cfg,
            result.records,
            run_name=f"score-{maps.stem}",
            artifacts=[report, out / "metrics.csv"],
            tags={
                "kind": "score",
                "code_version": code_version(),
                "data_checksum": data.manifest.checksum,
                "maps": str(maps)[:250],
            },
        )
    return _summary(out, run_id, report, result.records, started)


def _aupro_line(cfg: Config) -> str:
    return f"protocol {cfg.metrics.aupro_protocol}, FPR limit {cfg.metrics.fpr_limit}"


def _summary(
    folder: Path, run_id: str | None, report: Path, records: list[dict[str, Any]], started: float, **extra: Any
) -> RunResult:
    """summary.json (what `--json` prints) and the result a caller gets."""
    summary = {
        "run_id": run_id,
        "report": str(report.resolve()),
        "metrics": records,
        **extra,
        "seconds": round(time.time() - started, 1),
    }
    write_summary(folder, summary)
    return RunResult(folder.resolve(), report.resolve(), run_id, records, summary)


def baselines_line(result: EvalResult) -> str:
    """What the baselines were and what they cost, for the report's header."""
    if not result.baseline_seconds:
        return "none (infer.baselines=[])"
    names = [n for n in BASELINES if n in result.baseline_seconds]
    cost = sum(result.baseline_seconds.values())
    return (
        f"{', '.join(names)}, in this run on the same test images: {cost:.1f}s for them (bank building, maps, "
        f"metrics); the whole evaluation {result.seconds:.1f}s (switch off: infer.baselines=[])"
    )


def write_run_report(
    run_dir: Path,
    result: EvalResult,
    *,
    title: str,
    dataset: str,
    provenance: dict[str, str],
    params: dict[str, str],
    run_id: str | None,
    uncertainty: Uncertainty | None,
    qualitative: dict[str, Any] | None,
    method: str = "deco-diff",
) -> Path:
    """report_data/ first, then the report made from it as read back, so that a report rebuilt
    later from the folder or from MLflow is the same file."""
    folder = run_dir / FOLDER
    meta = RunData(
        name=run_dir.name,
        title=title,
        dataset=dataset,
        records=result.records,
        run_id=run_id,
        provenance=[(k, str(v)) for k, v in provenance.items()],
    )
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


def training_recipe(train_info: dict[str, Any], cfg: Config) -> str | None:
    """The recipe the model was trained with, where it differs from this run's (a checkpoint evaluated,
    or a cached model reused, under another config): a number must say which recipe made its model."""
    trained = train_info.get("config")
    if not isinstance(trained, dict) or "recipe" not in trained:
        return None

    def made(name: str, resolved: dict[str, Any]) -> str:  # inference and metrics are this run's own
        items = [d for d in departures(name, resolved) if not d["key"].startswith(("infer.", "metrics."))]
        return departures_text(name, items)

    text = made(trained["recipe"], trained)
    return None if text == made(cfg.recipe, cfg.to_dict()) else text
