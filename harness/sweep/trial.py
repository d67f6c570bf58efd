"""What runs inside a sweep's Ray workers: preparing data and VAE, training a group's model once,
and evaluating one trial. Each is `bench`'s own pieces (prepare_data, get_vae, trained_model,
evaluate, finish_run) in a folder of its own:

    <folder>/attempts.jsonl   one line per attempt (pid, host, time): retries are visible
    <folder>/attempt-N.log    that attempt's log (the driver's terminal stays readable)
    <folder>/error-N.txt      the traceback of a failed attempt
    <folder>/result.json      written once, atomically, when the work is done; never replaced

A folder with result.json is finished: a retry or a resumed sweep reports it without redoing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from decodiff.datasets.locks import FileLock
from decodiff.harness.allocator import allocator_line
from decodiff.harness.config import Config, to_yaml
from decodiff.harness.process_env import CHOICE_VARIABLE
from decodiff.harness.runs import new_run_dir

# The work's own imports (torch, data, training, evaluation, bench; about 0.3 s and 500 modules beyond
# what the sweep driver already holds, matplotlib among them) stay inside the functions the Ray workers
# run: the driver and `decodiff sweep --dry-run` import this module for its result files alone.

RESULT = "result.json"


# ---- folder bookkeeping ---------------------------------------------------------------------------
def read_result(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(folder) / RESULT).read_text())
    except (OSError, ValueError):
        return None


def write_result_once(folder: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Publish result.json unless one exists (then that one stands and is returned)."""
    folder = Path(folder)
    tmp = folder / f".{RESULT}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    try:
        os.link(tmp, folder / RESULT)  # atomic, and fails instead of overwriting
    except FileExistsError:
        result = read_result(folder) or result
    finally:
        tmp.unlink(missing_ok=True)
    return result


def start_attempt(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "attempts.jsonl"
    n = 1 + (len(path.read_text().splitlines()) if path.is_file() else 0)
    line = {
        "attempt": n,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
    return n


def attempts(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


@contextlib.contextmanager
def _logged(folder: Path, attempt: int) -> Iterator[Path]:
    path = folder / f"attempt-{attempt}.log"
    with open(path, "a", buffering=1) as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
        yield path


@contextlib.contextmanager
def training_lock(cache_dir: str, key: str) -> Iterator[None]:
    """One training per key at a time on this file system (a second waiter then reuses the model)."""
    with FileLock(Path(cache_dir) / "models" / f"{key}.lock", what=f"training {key}"):
        yield


# ---- the work -------------------------------------------------------------------------------------
def _config(payload: dict[str, Any]):
    cfg = Config.model_validate(payload["config"])
    if cfg.run.threads is None:
        import torch

        torch.set_num_threads(max(1, int(payload.get("cpus", 1))))
    return cfg


def _data(cfg, validation: dict[str, Any] | None):
    """(test data, training data, validation data or None) for a config."""
    from decodiff.harness.data import prepare_data
    from decodiff.harness.evaluation.validation import ValidationSettings, validation_split

    data = prepare_data(cfg)
    if not validation:
        return data, data, None
    train, val = validation_split(cfg, data, ValidationSettings(**validation))
    return data, train, val


def _training_config(cfg, train_data, data):
    """The config that trains on `train_data` (the held-out split's shards when validating)."""
    if train_data is data:
        return cfg
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"shards": train_data.location})})


def prepare(payload: dict[str, Any]) -> dict[str, Any]:
    """Data (demo generated or shards checked), validation split and VAE: made once, before trials."""
    from decodiff.harness.training.vae_fit import get_vae

    cfg = _config(payload)
    data, train, val = _data(cfg, payload.get("validation"))
    vae = get_vae(cfg, train)
    return {
        "data": data.location,
        "checksum": data.manifest.checksum,
        "train_data": train.location,
        "validation_data": val.location if val else None,
        "vae": vae.source,
    }


def _trained(cfg, data, train, payload: dict[str, Any]):
    """The group's model: trained here (in-process or by `accelerate launch`) or reused."""
    from decodiff.harness.training.model_cache import trained_model, training_key
    from decodiff.harness.training.vae_fit import get_vae

    tcfg = _training_config(cfg, train, data)
    vae = get_vae(tcfg, train)
    key = training_key(tcfg, train, vae)
    with training_lock(cfg.run.cache_dir, key):
        processes = int(payload.get("processes", 1))
        ckpt = Path(cfg.run.cache_dir) / "models" / key / "checkpoint" / "model.safetensors"
        launched = processes > 1 and cfg.method != "vae-recon" and not (cfg.train.reuse and ckpt.is_file())
        if launched:
            launch_training(tcfg, Path(payload["folder"]), processes, use_gpu=float(payload.get("gpus", 0)) > 0)
        model, classes, info, reused = trained_model(tcfg, train, vae)
    return model, classes, {**info, "training_key": key, "reused": reused and not launched, "processes": processes}, vae


def train_group(payload: dict[str, Any]) -> dict[str, Any]:
    cfg = _config(payload)
    data, train, _ = _data(cfg, payload.get("validation"))
    _, _, info, _ = _trained(cfg, data, train, payload)
    return {"kind": "train", "id": payload["id"], "checkpoint": info["checkpoint"], "train": info}


def run_trial(payload: dict[str, Any]) -> dict[str, Any]:
    from decodiff.harness.evaluation.evaluate import evaluate
    from decodiff.harness.finishing import finish_run

    started = time.time()
    cfg = _config(payload)
    data, train, val = _data(cfg, payload.get("validation"))
    model, classes, info, vae = _trained(cfg, data, train, payload)
    run_dir = new_run_dir(cfg, "trial")
    result = evaluate(cfg, data, model, vae, classes, out=run_dir)
    val_records = None
    if val is not None:
        quiet = cfg.model_copy(update={"infer": cfg.infer.model_copy(update={"save_maps": False, "baselines": []})})
        val_records = evaluate(quiet, val, model, vae, classes, out=None).records
        from decodiff.reports.tables import long_table

        long_table(val_records).to_csv(run_dir / "validation_metrics.csv", index=False)
    untracked = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"enabled": False})})
    bench = finish_run(untracked, run_dir, data, vae, info, result, kind="sweep trial", started=started)
    return {
        "kind": "trial",
        "id": payload["id"],
        "dataset": payload.get("dataset"),
        "overrides": payload.get("overrides"),
        "run_dir": str(bench.run_dir.resolve()),
        "report": str(bench.report.resolve()),
        "records": result.records,
        "validation_records": val_records,
        "train": info,
        "seconds": round(time.time() - started, 1),
        "eval_images_per_second": result.images_per_second,
        # what the speed depended on in the process that ran it (a Ray worker: what the sweep forwarded)
        "allocator": allocator_line(),
        "threads": os.environ.get(CHOICE_VARIABLE),
        "validation": payload.get("validation"),
        "validation_data": val.source if val else None,
    }


# Exec the launcher with PR_SET_PDEATHSIG=SIGTERM: if the trial's worker dies (even by SIGKILL), the
# launcher gets SIGTERM and stops its ranks, which save a checkpoint first (harness/training/preemption.py).
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); os.execv(sys.argv[1], sys.argv[1:])"
)


def launch_training(cfg, folder: Path, processes: int, use_gpu: bool) -> None:
    """Train with `processes` DDP ranks through `accelerate launch` (one node, the GPUs Ray gave this
    trial via CUDA_VISIBLE_DEVICES); the ranks run `decodiff train` on the trial's config."""
    cfg_file = folder / "train-config.yaml"
    cfg_file.write_text(to_yaml(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        cfg.train.mixed_precision,
        "--dynamo_backend",
        "no",
        "--multi_gpu",
        "-m",
        "decodiff.harness.cli",
        "train",
        "--config",
        str(cfg_file),
    ]
    if sys.platform.startswith("linux"):
        cmd = [sys.executable, "-c", _DIE_WITH_PARENT, *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("DECODIFF_PREEMPTED_FILE", None)  # a stopped trial is the sweep's business, not a reason to requeue a job
    if not use_gpu:
        env["ACCELERATE_USE_CPU"] = "true"  # the same DDP over gloo (harness/training/distributed.py)
    print(f"[decodiff] sweep: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, env=env)
    if proc.returncode:
        raise RuntimeError(
            f"accelerate launch of {processes} training processes exited with code {proc.returncode} (log: {folder})"
        )


WORK = {"train": train_group, "trial": run_trial}


def _ensure_prepared(payload: dict[str, Any]) -> None:
    """The payload's data, validation split and VAE, made by whichever trial gets there first
    (the others wait on the lock, then find them made)."""
    folder = Path(payload["prepare"])
    with FileLock(folder / ".lock", what=f"sweep preparation {folder.name}"):
        if read_result(folder) is None:
            write_result_once(folder, {**prepare(payload), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


def execute(payload: dict[str, Any]) -> dict[str, Any]:
    """One attempt at a payload, with its log, error file and result.json."""
    folder = Path(payload["folder"])
    done = read_result(folder)
    if done is not None:
        return done
    attempt = start_attempt(folder)
    with _logged(folder, attempt):
        try:
            if payload.get("prepare"):
                _ensure_prepared(payload)
            result = WORK[payload["kind"]](payload)
        except BaseException:
            (folder / f"error-{attempt}.txt").write_text(traceback.format_exc())
            raise
    result = {**result, "attempt": attempt, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return write_result_once(folder, result)


def tune_entry(config: dict[str, Any], payloads: dict[str, dict[str, Any]] | None = None) -> None:
    """The Ray Tune trainable: runs the payload named by config["id"] and reports its objective."""
    from ray import tune  # Ray with Tune (0.5 s) only in the workers: the driver goes without it

    payload = payloads[config["id"]]
    result = execute(payload)
    metrics = {"seconds": float(result.get("seconds") or 0.0)}
    objective = payload.get("objective")
    if objective and result.get("kind") == "trial":
        value = objective_value(result, objective["metric"], objective["split"])
        if value is not None:
            metrics["objective"] = value
    tune.report(metrics)


def mean_value(records: list[dict[str, Any]] | None, name: str) -> float | None:
    """The mean-over-categories value of `<level>_<metric>` in a long table."""
    level, metric = name.split("_", 1)
    for r in records or []:
        if r.get("category") == "mean" and r.get("level") == level and r.get("metric") == metric:
            return r.get("value")
    return None


def objective_value(result: dict[str, Any], metric: str, split: str) -> float | None:
    return mean_value(result.get("validation_records" if split == "validation" else "records"), metric)
