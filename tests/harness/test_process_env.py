"""Every `decodiff` process makes torch's OpenMP runtime (libgomp) sleep idle threads, unless the user
chose otherwise; read back from the runtime itself (OMP_DISPLAY_ENV=verbose prints its settings as it
loads with torch: GOMP_SPINCOUNT 0 is the passive wait, 300000 libgomp's spinning default)."""

import os
import subprocess
import sys
from pathlib import Path

DECODIFF = str(Path(sys.executable).with_name("decodiff"))
SNIPPET = "from decodiff.harness.process_env import set_process_defaults; set_process_defaults(); import torch"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return {**env, "OMP_DISPLAY_ENV": "verbose", **extra}


def _spincount(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.strip().startswith("GOMP_SPINCOUNT")]
    return line.split("=", 1)[1].strip().strip("'")


def test_decodiff_command_runs_with_sleeping_threads(tmp_path):
    # a command that loads torch and then stops on its bad --out: the runtime has already said its settings
    p = subprocess.run(
        [DECODIFF, "vae", "train", "--config", "tiny", "--out", str(tmp_path / "missing" / "vae")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert _spincount(p.stderr) == "0"


def test_the_users_choice_wins():
    for extra, expected in (({"GOMP_SPINCOUNT": "300000"}, "300000"), ({"OMP_WAIT_POLICY": "ACTIVE"}, None)):
        p = subprocess.run(
            [sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=_env(**extra), timeout=120
        )
        assert p.returncode == 0, p.stderr
        if expected is None:  # ACTIVE: the runtime spins (a large count), and says so
            assert "OMP_WAIT_POLICY = 'ACTIVE'" in p.stderr
            assert int(_spincount(p.stderr)) > 300000
        else:
            assert _spincount(p.stderr) == expected


def test_without_decodiff_the_runtime_spins():
    """The check above can fail: torch alone keeps libgomp's spinning default."""
    p = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=_env(), timeout=120)
    assert _spincount(p.stderr) == "300000"
