"""The tiny demo bench as a Ray job: a real Ray head on loopback (dashboard = Job Submission
API) receives it through `decodiff submit ray`, runs it to completion, and its status and logs
come back through `decodiff jobs`. A sweep on that cluster brings its allocator policy to the
trial's worker."""

import json
from pathlib import Path

import pytest

from decodiff.harness.allocator import DEFAULT_LINE, KEEP_LINE

pytestmark = pytest.mark.slow


def test_bench_as_a_ray_job(ray_head, shared_work, decodiff):
    work, env = shared_work
    env = {**env, "HOME": ray_head.env["HOME"]}
    p = decodiff(
        "submit", "ray", "bench", "tiny", "--address", ray_head.address, "--cpus", "1", "--json", cwd=work, env=env
    )
    assert p.returncode == 0, p.stderr
    sub = json.loads(p.stdout)
    job_id = sub["id"]
    assert sub["submitted"] and job_id.startswith("decodiff-bench-tiny-")
    assert (
        sub["runtime_env"]["working_dir"].endswith("upload") and sub["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"
    )
    # the job index remembers the address: no --address from here on
    w = decodiff("jobs", "wait", job_id, "--timeout", "400", "--json", cwd=work, env=env, timeout=420)
    st = json.loads(w.stdout)
    logs = decodiff("jobs", "logs", job_id, cwd=work, env=env)
    assert w.returncode == 0 and st["state"] == "SUCCEEDED", (st, logs.stdout[-4000:])
    assert st["exit_code"] == 0 and st["address"] == ray_head.address
    assert logs.returncode == 0 and "[decodiff] report:" in logs.stdout
    # the entrypoint printed the results contract (--json) as the log's last line
    summary = json.loads(logs.stdout.strip().splitlines()[-1])
    assert Path(summary["report"]).is_file() and Path(summary["report"]).is_relative_to(work / "runs")
    assert {r["category"] for r in summary["metrics"]} >= {"grass", "brick", "coins", "coffee", "mean"}
    followed = decodiff("jobs", "logs", job_id, "--follow", cwd=work, env=env)  # ends with the job
    assert followed.returncode == 0 and followed.stdout == logs.stdout
    status = decodiff("jobs", "status", job_id, cwd=work, env=env)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    # stopping a finished job is harmless; an unknown id is a clear error
    stop = decodiff("jobs", "stop", job_id, cwd=work, env=env)
    assert stop.returncode == 0 and "already finished" in stop.stdout
    bad = decodiff("jobs", "status", "decodiff-nope", "--address", ray_head.address, cwd=work, env=env)
    assert bad.returncode == 2 and "decodiff-nope" in bad.stderr


def test_a_sweep_on_a_ray_cluster_brings_its_allocator_policy_to_the_trials(ray_head, shared_work, decodiff):
    """The head started without DECODIFF_ALLOCATOR or glibc's variables; a sweep run with
    DECODIFF_ALLOCATOR=kept forwards them, so the trial's worker (a process the head started) runs
    under them from its first allocation; a sweep without it leaves the worker at glibc's defaults."""
    work, env = shared_work
    grid = work / "one-trial.yaml"
    grid.write_text(
        "name: one-trial\nrecipe: custom\ndescription: one tiny trial\nconfig: tiny\n"
        "grid:\n  train.max_steps: [10]\nresources: {cpus: 1}\n"
    )
    env = {**env, "HOME": ray_head.env["HOME"]}
    seen = {}
    for policy in ("kept", None):
        run_env = {**env, "DECODIFF_ALLOCATOR": policy} if policy else env
        out = work / "sweeps" / f"one-trial-{policy or 'glibc'}"
        p = decodiff(
            "sweep",
            str(grid),
            "--address",
            ray_head.gcs,
            "--out",
            str(out),
            "--json",
            cwd=work,
            env=run_env,
            timeout=400,
        )
        assert p.returncode == 0, p.stderr[-3000:]
        trials = json.loads(p.stdout)["trials"]
        assert [t["status"] for t in trials] == ["finished"], trials
        seen[policy] = trials[0]["allocator"]
    assert seen == {"kept": KEEP_LINE, None: DEFAULT_LINE}
