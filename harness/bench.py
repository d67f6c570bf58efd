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
from decodiff.harness.model_cache import trained_model
from decodiff.harness.evaluate import EvalResult, evaluate
from decodiff.harness.progress import log
from decodiff.harness.provenance import code_version
from decodiff.harness.runs import new_run_dir, write_run_files, write_summary
from decodiff.harness.tracking import log_run, tracking_uri
from decodiff.harness.vae_fit import get_vae
from decodiff.models.vae import FrozenVAE
from decodiff.reports.markdown import write_report


@dataclass
class BenchResult:
    run_dir: Path
    report: Path
    run_id: str | None
    records: list[dict[str, Any]]
    summary: dict[str, Any]


def bench(cfg: Config) -> BenchResult:
    t0 = time.time()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    data = prepare_data(cfg)
    run_dir = new_run_dir(cfg, "bench")
    log(f"run folder {run_dir}")
    vae = get_vae(cfg, data)
    model, classes, train_info, _ = trained_model(cfg, data, vae)
    result = evaluate(cfg, data, model, vae, classes, out=run_dir)
    return finish_run(cfg, run_dir, data, vae, train_info, result, kind="bench", started=t0)


def finish_run(cfg: Config, run_dir: Path, data: PreparedData, vae: FrozenVAE, train_info: dict[str, Any],
               result: EvalResult, *, kind: str, started: float) -> BenchResult:
    prov = write_run_files(run_dir, cfg, {
        "data": {"source": data.source, "shards": data.location, "checksum": data.manifest.checksum,
                 "shard_sha256": {s.name: s.sha256 for s in data.manifest.shards if s.category in data.categories}},
        "vae": vae.source,
        "model": train_info,
    })
    trained = "reused from cache" if train_info.get("reused") else "trained in this run"
    provenance = {
        "data": f"{data.source} ({len(data.categories)} categories; data checksum {data.manifest.checksum[:12]})",
        "model": f"UNet {cfg.model.size}, {train_info.get('steps')} steps, {trained} ({train_info.get('checkpoint')})",
        "VAE": vae.source,
        "inference": f"{cfg.infer.reverse_steps} reverse steps, strategy {cfg.infer.strategy}, {cfg.infer.combination} map, "
                     f"gamma_p={cfg.infer.gamma_p}, gamma_l={cfg.infer.gamma_l}, image score {cfg.infer.image_score}",
        "AUPRO": f"protocol {cfg.metrics.aupro_protocol}, FPR limit {cfg.metrics.fpr_limit}",
        "code version": prov["code_version"],
        "config": f"{run_dir / 'config.yaml'} (digest {prov['config_digest']})",
    }
    report = write_report(run_dir, result.records, result.samples, title=f"DeCo-Diff {kind}: {cfg.run.name}",
                          provenance=provenance)
    run_id = None
    if cfg.tracking.enabled:
        tags = {"code_version": code_version(), "data_checksum": data.manifest.checksum, "dataset": data.manifest.dataset,
                "kind": kind, "vae": vae.source[:250], "model_reused": str(train_info.get("reused"))}
        arts = [run_dir / n for n in ("config.yaml", "provenance.json", "report.md", "metrics.csv", "image_table.csv",
                                      "pixel_table.csv", "defect_table.csv")]
        extra = {"eval_images_per_second": result.images_per_second}
        run_id = log_run(cfg, result.records, run_name=run_dir.name, tags=tags, artifacts=arts, extra_metrics=extra)
        log(f"MLflow run {run_id} at {tracking_uri(cfg)}")
    summary = {"run_id": run_id, "report": str(report.resolve()), "metrics": result.records,
               "run_dir": str(run_dir.resolve()), "seconds": round(time.time() - started, 1)}
    write_summary(run_dir, summary)
    return BenchResult(run_dir, report, run_id, result.records, summary)
