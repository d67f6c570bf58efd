"""MLflow tracking: one run per benchmark with params, per-category metrics under stable names
(`<dataset>/<category>/<level>_<metric>`), undefined metrics as `reason/<name>` tags, tags for
code version and data checksums, and the config, tables, figures and report data as artifacts;
sweeps nest their trials under a parent run. A local SQLite store by default; any URI (a
server) by config.

Reading back (`read_run`, `experiment_runs`, `download_report_data`) gives plain data, from which
`decodiff report` rebuilds the report a run wrote: the long table from the metrics and reason
tags, everything else from the `report_data/` artifacts.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decodiff.datasets.locks import FileLock
from decodiff.harness.config import Config, ConfigError

# MLflow is imported inside the functions that talk to the store (0.8 s, 1,700 modules): runs with
# tracking.enabled=false, and every command's start-up, go without it.

REASON_TAG = "reason/"
LEVELS = ("image", "pixel")
METRICS = ("auroc", "auprc", "f1max", "aupro")


class TrackingError(Exception):
    """A run or experiment that cannot be read from the tracking store (one-line message)."""


def tracking_uri(cfg: Config) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    db = Path(cfg.run.out_dir).resolve() / "mlflow.db"
    return f"sqlite:///{db}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URI (None for other URIs and in-memory stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri[len("sqlite:///") :]
    return Path(rest) if rest and rest != ":memory:" else None


def check_tracking(cfg: Config) -> None:
    """Fail before any work when the tracking store cannot take the run: a server that does not
    answer, MLflow's plain file store (MLflow 3 refuses it), a SQLite file in a folder that
    cannot be written."""
    if not cfg.tracking.enabled:
        return
    uri = tracking_uri(cfg)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        # urllib.request pulls http, ssl and email (6 ms): every command imports this module (cli's errors)
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as r:
                r.read(64)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"tracking.uri={uri}: no MLflow server answers there ({reason}); start one, "
                f"or set tracking.enabled=false"
            ) from None
    elif scheme in ("", "file"):
        raise ConfigError(
            f"tracking.uri={uri}: MLflow 3 refuses its plain file store by default; use "
            f"sqlite:///PATH.db or a server URL"
        )
    elif (db := _sqlite_path(uri)) is not None:
        parent = db.resolve().parent
        while not parent.exists() and parent != parent.parent:  # the nearest folder that exists
            parent = parent.parent
        if not (parent.is_dir() and os.access(parent, os.W_OK)):
            raise ConfigError(
                f"tracking.uri={uri}: cannot write the database there ({parent} is not a writable folder)"
            )
        if db.exists():
            problem = _sqlite_problem(db)
            if problem:
                raise ConfigError(f"tracking.uri={uri}: {db} {problem}")


def _sqlite_problem(db: Path) -> str | None:
    """Why an existing file cannot be the run's SQLite store (None when it can)."""
    if not db.is_file():
        return "is not a file (expected an SQLite database)"
    if not os.access(db, os.R_OK | os.W_OK):
        return "cannot be read and written"
    with open(db, "rb") as f:
        head = f.read(16)
    if head and head != b"SQLite format 3\0":
        return "is not an SQLite database (choose another tracking.uri, or move the file away)"
    return None


def _store_lock(uri: str):
    """Runs that create a new SQLite store at once would race through MLflow's schema set-up: one at a time."""
    db = _sqlite_path(uri)
    if db is None:
        return nullcontext()
    db = db.resolve()
    return FileLock(db.with_name(f".{db.name}.lock"), what=f"MLflow store {db}")


def metric_name(rec: dict[str, Any]) -> str:
    return f"{rec['dataset']}/{rec['category']}/{rec['level']}_{rec['metric']}"


def parse_metric_name(name: str) -> tuple[str, str, str, str] | None:
    """(dataset, category, level, metric) of a stable metric name; None for other metrics."""
    parts = name.split("/")
    if len(parts) != 3 or "_" not in parts[2]:
        return None
    level, metric = parts[2].split("_", 1)
    if level not in LEVELS or metric not in METRICS:
        return None
    return parts[0], parts[1], level, metric


def flatten_config(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow params ("infer.gamma_p": "0.4")."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


_flatten = flatten_config  # older name


def _quiet() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # with a server URI, MLflow prints "View run ... at" on stdout, which must stay one JSON object
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # a server that goes away mid-run: fail within about a minute, not after MLflow's long back-off
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _client(uri: str):
    _quiet()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# ---- writing -------------------------------------------------------------------------------------
def start_run(cfg: Config, *, run_name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
    """Create the run (and the experiment if needed); returns its id. The run stays RUNNING
    until `end_run`, so a report written meanwhile can name it."""
    uri = tracking_uri(cfg)
    with _store_lock(uri):
        client = _client(uri)
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
        return client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id


def tracking_failed(cfg: Config, run_id: str | None, exc: BaseException, run_dir: Path | None = None) -> TrackingError:
    """The one-line error for a tracking store that failed while a run was logged (a server gone
    mid-run): the MLflow run is marked FAILED where the store still answers, and the run folder is
    named as what holds the results (it has no summary.json, so nothing presents it as finished)."""
    uri = tracking_uri(cfg)
    if run_id is not None:
        try:
            _client(uri).set_terminated(run_id, "FAILED")
        except Exception:  # the store is gone: the run stays as the server last saw it
            pass
    where = f"; the report and tables are in {run_dir}" if run_dir is not None else ""
    return TrackingError(
        f"MLflow at {uri} failed while logging run {run_id or '(not created)'}: {_first_line(exc)}"
        f"{where}; the MLflow run is incomplete (FAILED)"
    )


def log_results(
    cfg: Config,
    run_id: str,
    records: list[dict[str, Any]],
    extra_metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    baseline_records: list[dict[str, Any]] = (),
) -> None:
    """The flattened config (and `params`, e.g. the model's initialisation) as params, each
    defined record as a metric under its stable name, each undefined one as a `reason/<name>` tag;
    baselines' records (with "method") under `<method>/<stable name>`, which the reading side does
    not take for the run's own metrics."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(tracking_uri(cfg))
    items = list({**flatten_config(cfg.to_dict()), **(params or {})}.items())
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
    now = int(time.time() * 1000)
    records = list(records) + [{**r, "prefix": f"{r['method']}/"} for r in baseline_records]
    metrics = [
        Metric(r.get("prefix", "") + metric_name(r), float(r["value"]), now, 0)
        for r in records
        if r.get("value") is not None
    ]
    metrics += [Metric(k, float(v), now, 0) for k, v in (extra_metrics or {}).items()]
    tags = [
        RunTag(REASON_TAG + r.get("prefix", "") + metric_name(r), str(r.get("reason") or "not available")[:4000])
        for r in records
        if r.get("value") is None
    ]
    for i in range(0, max(len(metrics), len(tags)), 500):
        client.log_batch(run_id, metrics=metrics[i : i + 500], tags=tags[i : i + 500])


def log_artifacts(cfg: Config, run_id: str, files: list[Path] = (), folders: dict[str, Path] | None = None) -> None:
    """Files at the artifact root; each folder under its artifact path (e.g. figures/)."""
    client = _client(tracking_uri(cfg))
    for path in files:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path))
    for artifact_path, folder in (folders or {}).items():
        if Path(folder).is_dir() and any(Path(folder).iterdir()):
            client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)


def end_run(cfg: Config, run_id: str, status: str = "FINISHED") -> None:
    _client(tracking_uri(cfg)).set_terminated(run_id, status)


def log_run(
    cfg: Config,
    records: list[dict[str, Any]],
    *,
    run_name: str,
    tags: dict[str, str],
    artifacts: list[Path],
    extra_metrics: dict[str, float] | None = None,
    parent_run_id: str | None = None,
    artifact_folders: dict[str, Path] | None = None,
) -> str:
    """Log one finished run in one call; returns its MLflow run id. `artifact_folders` (artifact
    path -> folder), e.g. a run folder's figures/, tables/ and report_data/, from which
    `decodiff report` rebuilds the run's report from the server alone."""
    rid = start_run(cfg, run_name=run_name, tags=tags, parent_run_id=parent_run_id)
    try:
        log_results(cfg, rid, records, extra_metrics)
        log_artifacts(cfg, rid, list(artifacts), artifact_folders)
        end_run(cfg, rid, "FINISHED")
    except Exception:
        end_run(cfg, rid, "FAILED")
        raise
    return rid


# ---- reading -------------------------------------------------------------------------------------
@dataclass
class TrackedRun:
    run_id: str
    name: str
    experiment: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    parent_run_id: str | None

    def records(self) -> list[dict[str, Any]]:
        """The long table as logged: metrics under stable names, undefined ones from reason tags."""
        out = []
        for name, value in self.metrics.items():
            parsed = parse_metric_name(name)
            if parsed:
                ds, cat, level, metric = parsed
                out.append({"dataset": ds, "category": cat, "level": level, "metric": metric, "value": float(value)})
        for tag, reason in self.tags.items():
            if tag.startswith(REASON_TAG):
                parsed = parse_metric_name(tag[len(REASON_TAG) :])
                if parsed:
                    ds, cat, level, metric = parsed
                    out.append(
                        {
                            "dataset": ds,
                            "category": cat,
                            "level": level,
                            "metric": metric,
                            "value": None,
                            "reason": reason,
                        }
                    )
        return out


def _tracked(client, run) -> TrackedRun:
    exp = client.get_experiment(run.info.experiment_id)
    tags = dict(run.data.tags)
    return TrackedRun(
        run.info.run_id,
        run.info.run_name or tags.get("mlflow.runName", run.info.run_id),
        exp.name if exp else run.info.experiment_id,
        run.info.status,
        dict(run.data.params),
        tags,
        dict(run.data.metrics),
        tags.get("mlflow.parentRunId"),
    )


def _reader(uri: str):
    """A client for reading; a SQLite store that does not exist is an error (not a new empty one)."""
    path = _sqlite_path(uri)
    if path is not None:
        if not path.is_file():
            raise TrackingError(f"no MLflow store at {uri} ({path} does not exist; give --tracking-uri)")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries are reported once, as a TrackingError
    return _client(uri)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def read_run(uri: str, run_id: str) -> TrackedRun:
    """One run by id; TrackingError naming the id and the store when it does not exist."""
    from mlflow.exceptions import MlflowException

    client = _reader(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise TrackingError(f"MLflow run {run_id!r} not found at {uri} ({_first_line(exc)})") from None
        raise TrackingError(f"cannot read MLflow run {run_id!r} from {uri}: {_first_line(exc)}") from None
    except Exception as exc:  # connection refused, timeouts: one line, not a traceback
        raise TrackingError(f"cannot read MLflow run {run_id!r} from {uri}: {_first_line(exc)}") from None
    return _tracked(client, run)


def experiment_runs(uri: str, experiment: str, *, finished_only: bool = False) -> list[TrackedRun]:
    """Every run of an experiment (parents and nested runs), oldest first."""
    client = _reader(uri)
    try:
        exp = client.get_experiment_by_name(experiment)
    except Exception as exc:
        raise TrackingError(f"cannot read MLflow experiment {experiment!r} from {uri}: {_first_line(exc)}") from None
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise TrackingError(
            f"MLflow experiment {experiment!r} not found at {uri} (experiments there: {', '.join(names) or 'none'})"
        )
    runs, token = [], None
    while True:
        page = client.search_runs(
            [exp.experiment_id], max_results=1000, page_token=token, order_by=["attributes.start_time ASC"]
        )
        runs += [_tracked(client, r) for r in page]
        token = page.token
        if not token:
            break
    if finished_only:
        runs = [r for r in runs if r.status == "FINISHED"]
    return runs


def download_report_data(uri: str, run_id: str, dest: Path) -> Path | None:
    """The run's `report_data/` artifacts into dest; None when the run logged none."""
    client = _client(uri)
    names = {a.path for a in client.list_artifacts(run_id)}
    if "report_data" not in names:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, "report_data", str(dest)))
