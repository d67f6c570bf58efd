"""One real tiny benchmark run, logged over HTTP to a real MLflow server on loopback, shared by the
report tests of this folder (the run checks that the server answers before it starts). The server
(SQLite store, artifacts proxied to a folder) is killed at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
EXPERIMENT = "report-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TrackedBench:
    uri: str  # http://127.0.0.1:PORT
    run_dir: Path
    summary: dict
    root: Path  # the session folder (cwd of the run)
    experiment: str = EXPERIMENT

    @property
    def run_id(self) -> str:
        return self.summary["run_id"]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server not up after {timeout}s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def tracked_bench(tmp_path_factory) -> TrackedBench:
    root = tmp_path_factory.mktemp("report-e2e")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server_log = root / "mlflow-server.log"
    env = dict(
        os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", HF_HUB_OFFLINE="1", MLFLOW_HTTP_REQUEST_MAX_RETRIES="8"
    )
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=server_log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    bench = None
    try:
        _wait_for_server(uri, server, server_log)  # bench checks the server before it starts working
        bench_log = root / "bench.log"
        bench = subprocess.Popen(
            [
                str(BIN / "decodiff"),
                "bench",
                "--config",
                "tiny",
                f"tracking.uri={uri}",
                f"tracking.experiment={EXPERIMENT}",
                "metrics.bootstrap=300",
                "--json",
            ],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=bench_log.open("w"),
            text=True,
            env=env,
        )
        out, _ = bench.communicate(timeout=900)
        assert bench.returncode == 0, bench_log.read_text()[-4000:]
        summary = json.loads(out)
        yield TrackedBench(uri, Path(summary["run_dir"]), summary, root)
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
            bench.wait()
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
