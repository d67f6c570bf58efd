"""Ray Jobs: submit a decodiff command to a Ray cluster through the Job Submission API (the
dashboard's HTTP server, port 8265 by default) with a runtime environment, and query, follow or
stop it by submission id.

The address is checked with one short HTTP request before the client is built, so an
unreachable or wrong address fails in seconds instead of waiting on TCP time-outs. Needs
`ray[default]` on the submitting side and a head started with the dashboard.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from decodiff.jobs.errors import JobError

PROBE_TIMEOUT = 5.0  # seconds for the reachability check
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def address_from_env() -> str | None:
    """Ray's own convention: RAY_API_SERVER_ADDRESS, else an http(s) RAY_ADDRESS."""
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        v = os.environ.get(var, "")
        if v.startswith(("http://", "https://")):
            return v
    return None


def normalise_address(address: str) -> str:
    a = address.strip().rstrip("/")
    if a.startswith("ray://"):
        raise JobError(
            f"--address {address}: that is a Ray Client address; the Job Submission API is the "
            "dashboard's HTTP address, e.g. http://HEAD:8265"
        )
    if not a.startswith(("http://", "https://")):
        a = "http://" + a
    return a


def check_reachable(address: str, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """GET /api/version; raises JobError naming the address when nothing answers like Ray Jobs."""
    url = f"{address}/api/version"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read(65536)
    except urllib.error.HTTPError as exc:
        raise JobError(
            f"--address {address}: HTTP {exc.code} from {url}; is this a Ray dashboard "
            "(started with the dashboard, ray[default])?"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        raise JobError(
            f"--address {address}: Ray Jobs API not reachable ({why}); start the head with its "
            "dashboard (`ray start --head`, ray[default]) or check host and port (default 8265)"
        ) from None
    try:
        info = json.loads(body)
    except ValueError:
        raise JobError(f"--address {address}: {url} did not answer like a Ray dashboard") from None
    if not isinstance(info, dict) or "ray_version" not in info:
        raise JobError(f"--address {address}: {url} did not answer like a Ray dashboard")
    return info


def _client(address: str):
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise JobError(f"the Ray Jobs client is not installed ({exc}); install ray[default]") from None
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, RuntimeError from the version handshake
        raise JobError(f"--address {address}: {str(exc).splitlines()[0]}") from None


@dataclass
class RaySubmission:
    entrypoint: str
    submission_id: str
    runtime_env: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None


def submit(address: str, sub: RaySubmission) -> str:
    address = normalise_address(address)
    check_reachable(address)
    client = _client(address)
    try:
        return client.submit_job(
            entrypoint=sub.entrypoint,
            submission_id=sub.submission_id,
            runtime_env=sub.runtime_env or None,
            metadata=sub.metadata or None,
            entrypoint_num_cpus=sub.num_cpus,
            entrypoint_num_gpus=sub.num_gpus,
            entrypoint_memory=sub.memory,
        )
    except Exception as exc:
        raise JobError(f"Ray job submission to {address} failed: {str(exc).splitlines()[0]}") from None


@dataclass
class RayJobState:
    id: str
    state: str
    message: str = ""
    exit_code: int | None = None
    start_time: float | None = None
    end_time: float | None = None
    entrypoint: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "exit_code": self.exit_code,
            "message": self.message,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "entrypoint": self.entrypoint,
        }


def _call(address: str, what: str, fn):
    address = normalise_address(address)
    check_reachable(address)
    client = _client(address)
    try:
        return fn(client)
    except RuntimeError as exc:
        raise JobError(f"{what}: {str(exc).splitlines()[0]}") from None


def status(address: str, job_id: str) -> RayJobState:
    info = _call(address, f"job {job_id}", lambda c: c.get_job_info(job_id))
    return RayJobState(
        job_id,
        str(getattr(info.status, "value", info.status)),
        info.message or "",
        getattr(info, "driver_exit_code", None),
        info.start_time / 1000 if info.start_time else None,
        info.end_time / 1000 if info.end_time else None,
        info.entrypoint or "",
    )


def logs(address: str, job_id: str) -> str:
    return _call(address, f"job {job_id}", lambda c: c.get_job_logs(job_id))


def follow_logs(address: str, job_id: str, poll: float = 2.0) -> Iterator[str]:
    """New log text until the job ends (polling, so it needs no websocket)."""
    seen = 0
    while True:
        st = status(address, job_id)
        text = logs(address, job_id)
        if len(text) > seen:
            yield text[seen:]
            seen = len(text)
        if st.final:
            return
        time.sleep(poll)


def stop(address: str, job_id: str) -> bool:
    return bool(_call(address, f"job {job_id}", lambda c: c.stop_job(job_id)))


def wait(address: str, job_id: str, timeout: float | None = None, poll: float = 1.0) -> RayJobState:
    start = time.monotonic()
    while True:
        st = status(address, job_id)
        if st.final or (timeout is not None and time.monotonic() - start > timeout):
            return st
        time.sleep(poll)
