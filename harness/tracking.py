"""MLflow tracking: one run per benchmark with params, per-category metrics under stable names
(`<dataset>/<category>/<level>_<metric>`), tags for code version and data checksums, and the
config and report as artifacts. A local SQLite store by default; any URI by config."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from decodiff.harness.config import Config


def tracking_uri(cfg: Config) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    db = Path(cfg.run.out_dir).resolve() / "mlflow.db"
    return f"sqlite:///{db}"


def metric_name(rec: dict[str, Any]) -> str:
    return f"{rec['dataset']}/{rec['category']}/{rec['level']}_{rec['metric']}"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


def _quiet() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log_run(
    cfg: Config,
    records: list[dict[str, Any]],
    *,
    run_name: str,
    tags: dict[str, str],
    artifacts: list[Path],
    extra_metrics: dict[str, float] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Log one finished run; returns its MLflow run id."""
    _quiet()
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        artifact_root = None
        if uri.startswith("sqlite:"):
            artifact_root = (Path(cfg.run.out_dir).resolve() / "mlartifacts").as_uri()
        exp_id = client.create_experiment(cfg.tracking.experiment, artifact_location=artifact_root)
    else:
        exp_id = exp.experiment_id
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
    rid = run.info.run_id
    try:
        params = _flatten(cfg.to_dict())
        items = list(params.items())
        from mlflow.entities import Metric, Param

        for i in range(0, len(items), 100):
            client.log_batch(rid, params=[Param(k, v) for k, v in items[i:i + 100]])
        import time

        now = int(time.time() * 1000)
        metrics = [Metric(metric_name(r), float(r["value"]), now, 0) for r in records if r.get("value") is not None]
        for k, v in (extra_metrics or {}).items():
            metrics.append(Metric(k, float(v), now, 0))
        for i in range(0, len(metrics), 500):
            client.log_batch(rid, metrics=metrics[i:i + 500])
        for path in artifacts:
            if path.is_file():
                client.log_artifact(rid, str(path))
        client.set_terminated(rid, "FINISHED")
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    del mlflow
    return rid
