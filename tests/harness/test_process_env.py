"""The OpenMP wait policy a `decodiff` command chooses as it starts, read back from torch's OpenMP
runtime itself (OMP_DISPLAY_ENV=verbose makes libgomp print its settings as it loads with torch:
GOMP_SPINCOUNT 0 is the passive wait, 300000 libgomp's spinning default)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from decodiff.harness import process_env
from decodiff.harness.cli import COMMANDS, RUNS_MODELS
from decodiff.harness.process_env import CHOICE_VARIABLE, choose_thread_wait, cpu_jiffies

DECODIFF = str(Path(sys.executable).with_name("decodiff"))
BUSY = "import time\nt = time.time()\nwhile time.time() - t < 60: pass"


def _env(**extra):
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", CHOICE_VARIABLE, "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "OMP_DISPLAY_ENV": "verbose", **extra}


def _spincount(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.strip().startswith("GOMP_SPINCOUNT")]
    return line.split("=", 1)[1].strip().strip("'")


def _loading_command(tmp_path, env):
    """A command that loads torch and then stops on its bad --out: the runtime has said its settings."""
    return subprocess.run(
        [DECODIFF, "vae", "train", "--config", "tiny", "--out", str(tmp_path / "missing" / "vae")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_a_command_on_busy_cores_makes_idle_threads_sleep(tmp_path):
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(os.cpu_count() or 1)]
    try:
        p = _loading_command(tmp_path, _env())
    finally:
        for b in busy:
            b.kill()
    assert p.returncode == 2, p.stderr
    assert _spincount(p.stderr) == "0"
    assert "threads: idle threads sleep (OMP_WAIT_POLICY=PASSIVE): other processes kept" in p.stderr


def test_only_commands_that_run_models_take_the_sample():
    assert set(RUNS_MODELS) <= set(COMMANDS) and not {"plan", "submit", "jobs", "report"} & set(RUNS_MODELS)


def test_several_processes_of_one_job_sleep_whatever_the_load(tmp_path):
    p = _loading_command(tmp_path, _env(LOCAL_WORLD_SIZE="2"))
    assert _spincount(p.stderr) == "0" and "2 processes of this job on this machine" in p.stderr


def test_the_users_choice_wins(tmp_path):
    p = _loading_command(tmp_path, _env(GOMP_SPINCOUNT="300000", LOCAL_WORLD_SIZE="2"))
    assert _spincount(p.stderr) == "300000" and "threads:" not in p.stderr
    p = _loading_command(tmp_path, _env(OMP_WAIT_POLICY="ACTIVE"))
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in p.stderr and int(_spincount(p.stderr)) > 300000


def test_without_decodiff_the_runtime_spins():
    """The checks above can fail: torch alone keeps libgomp's spinning default."""
    p = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=_env(), timeout=120)
    assert _spincount(p.stderr) == "300000"


@pytest.mark.parametrize(("others", "policy"), [(0.1, None), (0.5, "PASSIVE"), (1.7, "PASSIVE"), (None, "PASSIVE")])
def test_the_rule(monkeypatch, others, policy):
    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "LOCAL_WORLD_SIZE", CHOICE_VARIABLE):
        monkeypatch.delenv(k, raising=False)
    choice = choose_thread_wait(others=others, measure=False)
    assert os.environ.get("OMP_WAIT_POLICY") == policy
    assert os.environ[CHOICE_VARIABLE] == choice and ("spin" in choice) == (policy is None)


def test_proc_stat_is_read_as_busy_and_total_ticks():
    stat = "cpu  100 5 50 1000 20 3 2 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
    assert cpu_jiffies(stat) == (100 + 5 + 50 + 3 + 2 + 10, 1190)
    assert cpu_jiffies("intr 1 2 3\n") is None
    if Path("/proc/stat").is_file():  # this machine's: the busy ticks never exceed the total
        busy, total = cpu_jiffies()
        assert 0 <= busy <= total
        assert process_env.others_busy_cores(0.05) >= 0


def test_a_process_that_spun_makes_what_it_starts_sleep(monkeypatch):
    """A sweep chooses for itself at start (free cores: spin) and again for its trials once it knows
    that several run at once; the user's variables still win."""
    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "LOCAL_WORLD_SIZE", CHOICE_VARIABLE):
        monkeypatch.delenv(k, raising=False)
    choose_thread_wait(others=0.0, measure=False)
    assert "OMP_WAIT_POLICY" not in os.environ
    choice = process_env.sleep_for_company("2 trials at once")
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ[CHOICE_VARIABLE] == choice
    assert choice.endswith("2 trials at once")
    assert process_env.sleep_for_company("again") is None  # already sleeping: the first reason stays
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    choose_thread_wait(measure=False)
    assert process_env.sleep_for_company("2 trials at once") is None and "OMP_WAIT_POLICY" not in os.environ
