"""A real MLflow server on loopback (SQLite store, artifacts proxied to a folder), for the tests and
benchmarks that check the HTTP path of `tracking.uri` (a cluster's tracking server, locally). One
worker and no job execution: ~0.5 GB, up in seconds to a few minutes on a loaded 2-core machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """`mlflow server` in its own process group under `folder` (server.db, artifacts/, server.log)."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = self.folder / "server.log"
        env = dict(os.environ if env is None else env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'server.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            cwd=self.folder,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_up(self, timeout: float = 240.0) -> None:
        """Return once /health answers; RuntimeError (with the log's tail) if the server exits or times out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server not up after {timeout:.0f}s: {self.log.read_text()[-2000:]}")

    def stop(self, grace: float = 0.0) -> None:
        """End the server's process group (its workers too) and reap it: SIGTERM and up to `grace`
        seconds to go, then SIGKILL (grace 0: SIGKILL at once, a server that vanishes)."""
        if self.proc.poll() is None and grace > 0:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):  # gone already, or slow to go
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self._log_file.close()
