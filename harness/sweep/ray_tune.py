"""Ray for sweeps: a local Ray whose files live in the sweep folder (or a cluster by address),
and one Ray Tune run per phase over an explicit list of work items.

The sweep expands its trials itself (deterministic ids for resume and --dry-run) and hands
Tune the list; Tune schedules them on the trial resources, retries failures
(FailureConfig.max_failures) and keeps its experiment state under <sweep>/tune/.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decodiff.harness.allocator import FORWARDED as ALLOCATOR_VARIABLES
from decodiff.harness.process_env import CHOICE_VARIABLE, THREAD_WAIT_VARIABLES
from decodiff.harness.progress import log

# Ray is imported inside the functions that use it (0.2 s, 670 modules): `decodiff sweep --dry-run`
# and the sweep report import the sweep modules without it.

# AF_UNIX socket paths are limited to 107 bytes; Ray puts its sockets at
# <temp>/session_<date>_<pid>/sockets/<name> (about 70 bytes below <temp>).
_MAX_TEMP_LEN = 36
# how a sweep starts its own local Ray: no dashboard, and Ray's logs kept to warnings, off the driver's output
_LOCAL_RAY = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True, "logging_level": "warning"}


@dataclass
class RaySession:
    address: str | None
    temp_dir: Path | None  # where Ray's session files are (inside the sweep folder when local)
    link: Path | None  # a short symlink Ray was given instead, when the folder's path is too long


@contextlib.contextmanager
def ray_session(
    sweep_dir: Path, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None
) -> Iterator[RaySession]:
    """Start (or connect to) Ray for a sweep; shut it down afterwards if this call started it."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C stops the sweep at once; --resume continues
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "0")
    if ray.is_initialized():  # a library user's own Ray
        yield RaySession(None, None, None)
        return
    forwarded = ("HF_HUB_OFFLINE", "OMP_NUM_THREADS", *THREAD_WAIT_VARIABLES, CHOICE_VARIABLE, *ALLOCATOR_VARIABLES)
    env_vars = {k: os.environ[k] for k in forwarded if k in os.environ}
    before = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    link = None
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env_vars} if env_vars else None)
        session = RaySession(address, None, None)
    else:
        temp = (sweep_dir / "ray").resolve()
        temp.mkdir(parents=True, exist_ok=True)
        given = temp
        if len(str(temp)) > _MAX_TEMP_LEN:
            tag = hashlib.sha256(str(temp).encode()).hexdigest()[:8]
            link = Path(tempfile.gettempdir()) / f"decodiff-ray-{tag}"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(temp, target_is_directory=True)
            given = link
        if (
            not any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"))
            and not (Path.home() / ".ray" / "auth_token").is_file()
        ):
            # Ray turns token auth on for a local cluster; a token in the environment keeps it
            # from writing one to ~/.ray/auth_token
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        # Ray announces the token auth it turns on for local clusters at WARNING level: not news here
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, _temp_dir=str(given), **_LOCAL_RAY)
        session = RaySession(None, temp, link)
    _restore_sigterm(before)
    try:
        yield session
    finally:
        ray.shutdown()
        if link is not None and link.is_symlink():
            link.unlink()


def _restore_sigterm(handler) -> None:
    """ray.init replaces the SIGTERM handler (and its core installs a crash handler that aborts);
    a handler the caller installed (the CLI's: stop like Ctrl-C, so --resume can continue) wins."""
    if callable(handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _progress_callback(labels: dict[str, str], phase: str, retries: int):
    total = len(labels)
    from ray import tune

    class SweepProgress(tune.Callback):
        """One stderr line per trial event (Tune's own tables are switched off)."""

        def __init__(self) -> None:
            self.started: dict[str, float] = {}
            self.done = 0

        def _name(self, trial) -> str:
            tid = trial.config.get("id", "?")
            return f"{tid} ({labels.get(tid, '')})" if labels.get(tid) else tid

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = time.time()
            log(f"{phase}: started {self._name(trial)}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            secs = time.time() - self.started.get(trial.trial_id, time.time())
            obj = (trial.last_result or {}).get("objective")
            extra = f", objective {obj:.4f}" if isinstance(obj, float) else ""
            self.done += 1
            log(f"{phase}: finished {self._name(trial)} in {secs:.0f}s{extra} [{self.done}/{total} done]")

        def on_trial_recover(self, iteration, trials, trial, **info):
            log(
                f"{phase}: {self._name(trial)} failed ({_first_line(trial)}); retrying "
                f"({trial.run_metadata.num_failures} of {retries} retries used)"
            )

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            log(
                f"{phase}: {self._name(trial)} failed after {retries} retries ({_first_line(trial)}) "
                f"[{self.done}/{total} done]"
            )

    return SweepProgress()


def _first_line(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        return lines[-1].split(". ")[0][:200] if lines else "error"
    except OSError:
        return "error"


def run_phase(
    phase: str,
    payloads: dict[str, dict[str, Any]],
    labels: dict[str, str],
    entry: Callable,
    storage: Path,
    resources: dict[str, float],
    retries: int,
    max_concurrent: int | None,
) -> dict[str, str | None]:
    """Run every payload as a Tune trial; returns id -> None (finished) or an error line."""
    from ray import tune

    if not payloads:
        return {}
    labels = {k: labels.get(k, "") for k in payloads}
    trainable = tune.with_resources(
        tune.with_parameters(entry, payloads=payloads), {k: v for k, v in resources.items() if v}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"id": tune.grid_search(list(payloads))},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{phase}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}",
            storage_path=str(storage.resolve()),
            failure_config=tune.FailureConfig(max_failures=retries),
            verbose=0,
            callbacks=[_progress_callback(labels, phase, retries)],
        ),
    )
    grid = tuner.fit()
    status: dict[str, str | None] = {}
    for result in grid:
        tid = (result.config or {}).get("id")
        if tid is None:
            continue
        status[tid] = None if result.error is None else (str(result.error).strip().splitlines() or ["error"])[-1][:300]
    return status
