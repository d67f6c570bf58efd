"""The fault-injection catalogue (benchmarks/fault_injection.py) in one go: every case passes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_injection.py"


@pytest.mark.slow
def test_every_fault_ends_in_a_clear_error_or_a_correct_result(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--work", str(tmp_path / "work"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert p.stdout.strip(), p.stderr[-3000:]  # the script itself crashed: say why, not a JSONDecodeError
    table = json.loads(p.stdout)
    failed = [f"{r['case']}: expected {r['expected']}; got {r['got']}" for r in table["rows"] if not r["pass"]]
    assert not failed and p.returncode == 0, "\n".join(failed) or p.stderr[-3000:]
    assert table["total"] >= 24
