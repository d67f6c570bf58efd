"""One real tiny benchmark run, logged over HTTP to a real MLflow server on loopback, shared by the
report tests of this folder (the run checks that the server answers before it starts). The server
(SQLite store, artifacts proxied to a folder) is killed at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from decodiff.harness.mlflow_server import LocalServer

BIN = Path(sys.executable).parent
EXPERIMENT = "report-tests"


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


@pytest.fixture(scope="session")
def tracked_bench(tmp_path_factory) -> TrackedBench:
    root = tmp_path_factory.mktemp("report-e2e")
    env = dict(os.environ, HF_HUB_OFFLINE="1", MLFLOW_HTTP_REQUEST_MAX_RETRIES="8")
    server = LocalServer(root / "mlflow-server", env)
    bench = None
    try:
        server.wait_up()  # bench checks the server before it starts working
        bench_log = root / "bench.log"
        bench = subprocess.Popen(
            [
                str(BIN / "decodiff"),
                "bench",
                "--config",
                "tiny",
                f"tracking.uri={server.uri}",
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
        yield TrackedBench(server.uri, Path(summary["run_dir"]), summary, root)
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
            bench.wait()
        server.stop(grace=20)
