"""`decodiff report` inputs that cannot be read fail fast with one line, and create nothing."""

from __future__ import annotations

import socket
import time

import pytest

from decodiff.harness.cli import main
from decodiff.harness.tracking import TrackingError, experiment_runs, read_run


def test_missing_sqlite_store_is_an_error_not_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    with pytest.raises(TrackingError, match="no MLflow store at"):
        read_run(uri, "0" * 32)
    with pytest.raises(TrackingError, match="no MLflow store at"):
        experiment_runs(uri, "x")
    assert not (tmp_path / "runs").exists()


def test_unreachable_server_fails_fast(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    start = time.time()
    rc = main(["report", "--run", "a" * 32, "--tracking-uri", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "r")])
    assert rc == 1 and time.time() - start < 60
    err = capsys.readouterr().err
    assert f"cannot read MLflow run '{'a' * 32}' from http://127.0.0.1:{port}" in err
    assert "nothing to report" in err and (tmp_path / "r" / "report.md").is_file()


def test_not_a_sweep_or_run_folder(tmp_path, capsys):
    assert main(["report", "--sweep", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "not a sweep folder (no sweep.json or results.json)" in capsys.readouterr().err
    assert main(["report", "--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "not a finished run folder (no summary.json)" in capsys.readouterr().err
