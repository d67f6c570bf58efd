"""The tiny demo bench through a real single-node SLURM on this machine: one job, a job array of
two, and a time-limit warning that checkpoints, requeues and resumes a training - all through
`decodiff submit slurm` and `decodiff jobs`."""

import json
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _env(local_slurm, shared_work):
    work, env = shared_work
    return work, {**env, "SLURM_CONF": str(local_slurm.conf)}


def _wait_log(path_glob, text: str, timeout: float, folder: Path) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        logs = "".join(p.read_text(errors="replace") for p in folder.glob(path_glob))
        if text in logs:
            return logs
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in the logs after {timeout:.0f} s:\n{logs[-3000:]}")


def test_bench_job_then_an_array_of_two(local_slurm, shared_work, decodiff):
    work, env = _env(local_slurm, shared_work)
    p = decodiff("submit", "slurm", "bench", "tiny", "--time", "20", "--json", cwd=work, env=env)
    assert p.returncode == 0, p.stderr
    sub = json.loads(p.stdout)
    job_id, job_dir = sub["id"], Path(sub["job_dir"])
    assert sub["submitted"] and job_id.isdigit() and sub["warnings"] == []
    w = decodiff("jobs", "wait", job_id, "--timeout", "400", "--json", cwd=work, env=env, timeout=420)
    status = json.loads(w.stdout)
    assert w.returncode == 0, (w.stdout, decodiff("jobs", "logs", job_id, cwd=work, env=env).stdout[-3000:])
    assert [(t["id"], t["state"], t["exit_code"]) for t in status["tasks"]] == [(job_id, "COMPLETED", 0)]
    logs = decodiff("jobs", "logs", job_id, cwd=work, env=env)
    assert logs.returncode == 0
    assert f"task {job_id} on" in logs.stdout and "finished with exit code 0" in logs.stdout
    report = next(line for line in logs.stdout.splitlines() if line.startswith("[decodiff] report:")).split(": ", 1)[1]
    assert Path(report).is_file() and "| **mean** |" in Path(report).read_text()
    assert (job_dir / "status" / f"{job_id}.exit").read_text().strip() == "0"

    # an array of two (evaluation settings: both reuse the model the first job trained)
    p = decodiff("submit", "slurm", "bench", "tiny", "--array", "infer.reverse_steps=2,3", "--json", cwd=work, env=env)
    assert p.returncode == 0, p.stderr
    arr = json.loads(p.stdout)
    assert arr["tasks"] == 2
    w = decodiff("jobs", "wait", arr["id"], "--timeout", "400", "--json", cwd=work, env=env, timeout=420)
    assert w.returncode == 0, decodiff("jobs", "logs", arr["id"], cwd=work, env=env).stdout[-4000:]
    tasks = json.loads(w.stdout)["tasks"]
    assert sorted((t["id"], t["state"]) for t in tasks) == [
        (f"{arr['id']}_0", "COMPLETED"),
        (f"{arr['id']}_1", "COMPLETED"),
    ]
    logs = decodiff("jobs", "logs", arr["id"], cwd=work, env=env).stdout
    assert f"==> slurm-{arr['id']}_0.out <==" in logs and f"==> slurm-{arr['id']}_1.out <==" in logs
    assert logs.count("train: reusing") == 2 and logs.count("finished with exit code 0") == 2
    followed = decodiff("jobs", "logs", arr["id"], "--follow", cwd=work, env=env).stdout  # ends with the job
    assert followed.count("==> slurm-") == 2 and followed.count("finished with exit code 0") == 2
    one = decodiff("jobs", "logs", f"{arr['id']}_1", cwd=work, env=env).stdout
    assert "==>" not in one and "tiny:infer.reverse_steps=3" in one
    listed = decodiff("jobs", "list", "--json", cwd=work, env=env)
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]][:2] == [arr["id"], job_id]


def test_time_limit_warning_checkpoints_requeues_and_resumes(local_slurm, shared_work, decodiff):
    """Two training processes through the rendered launcher (srun -> accelerate launch -> torchrun,
    gloo on CPU), warned before the time limit: both ranks checkpoint, the job requeues itself
    and the training resumes from the checkpoint."""
    work, env = _env(local_slurm, shared_work)
    # a training long enough to be interrupted
    p = decodiff(
        "submit",
        "slurm",
        "train",
        "tiny",
        "train.max_steps=100000",
        "train.checkpoint_every=100000",
        "--processes-per-node",
        "2",
        "--cpus-per-task",
        "2",
        "--json",
        cwd=work,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    sub = json.loads(p.stdout)
    job_id, job_dir = sub["id"], Path(sub["job_dir"])
    logs = _wait_log("slurm-*.out", "train: UNet tiny", 240, job_dir)
    assert "over 2 process(es)" in logs and "2 processes, main" in logs
    time.sleep(2)  # a few steps in
    # what `#SBATCH --signal=B:USR1@120` does before the time limit
    local_slurm.run("scancel", "--signal=USR1", "--batch", job_id)
    logs = _wait_log("slurm-*.out", "requeueing job", 120, job_dir)
    # under accelerate launch the launcher exits 1 after its workers exit 75; the warning decides
    assert "time-limit warning" in logs and (job_dir / "status" / f"{job_id}.requeued").is_file()
    # SLURM holds a requeued job for about two minutes; once the first run has left the node
    # (an earlier start has its revoked credential refused), let it start now
    end = time.monotonic() + 90
    while time.monotonic() < end:
        state = local_slurm.run("scontrol", "show", "job", job_id).stdout
        node = local_slurm.run("sinfo", "-h", "-o", "%T").stdout.strip()
        if "JobState=PENDING" in state and node == "idle":
            time.sleep(1)
            local_slurm.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
            break
        time.sleep(0.5)
    logs = _wait_log("slurm-*.out", "resumed at step", 240, job_dir)
    assert "restart 1" in logs
    st = json.loads(decodiff("jobs", "status", job_id, "--json", cwd=work, env=env).stdout)["tasks"][0]
    assert st["state"] == "RUNNING"
    stop = decodiff("jobs", "stop", job_id, cwd=work, env=env)
    assert stop.returncode == 0, stop.stderr
    w = decodiff("jobs", "wait", job_id, "--timeout", "60", "--json", cwd=work, env=env)
    assert json.loads(w.stdout)["tasks"][0]["state"] == "CANCELLED" and w.returncode == 1
