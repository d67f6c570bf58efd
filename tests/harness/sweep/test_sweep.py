"""Sweeps end to end with a real local Ray (2 CPUs) through the `decodiff` console script:
a 2x2 grid, a killed trial retried, an evaluation-only sweep that trains once, and a sweep
stopped after its first finished trial that resumes without rerunning it."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

DECODIFF = str(Path(sys.executable).with_name("decodiff"))
FAST = ["vae.steps=5"]  # the VAE only has to exist; the sweeps pass the same value, so they reuse it
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The tiny preset's demo data and VAE, made once and shared by the sweeps (run.cache_dir)."""
    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data
    from decodiff.harness.training.vae_fit import get_vae

    folder = tmp_path_factory.mktemp("sweep-cache")
    cfg = build_config("tiny", [f"run.cache_dir={folder}", *FAST, "run.threads=1"])
    get_vae(cfg, prepare_data(cfg))
    return folder


def sweep(args, out, cache, **kw):
    cmd = [DECODIFF, "sweep", *args, *FAST, f"run.cache_dir={cache}", f"run.out_dir={out}", "--cpus", "2"]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=open(out.with_suffix(".log"), "a"), text=True, env=ENV, **kw
    )


def wait_for(pattern, proc, timeout=180):
    end = time.time() + timeout
    while time.time() < end:
        found = glob.glob(str(pattern))
        if found:
            return found
        assert proc.poll() is None, f"sweep exited with {proc.returncode} before {pattern} appeared"
        time.sleep(0.05)
    raise AssertionError(f"{pattern} did not appear")


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def mlflow_runs(out, parent):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("decodiff")
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    return client.get_run(parent), children


def test_grid_2x2_end_to_end_with_a_killed_trial_retried(tmp_path, cache):
    out = tmp_path / "runs"
    proc = sweep(["tiny-grid", "--json"], out, cache)
    folder = out / "sweeps" / "tiny-grid"
    # kill the worker of the first training the moment it starts: Ray Tune must retry it
    first = wait_for(folder / "trainings" / "*" / "attempts.jsonl", proc)[0]
    os.kill(lines(first)[0]["pid"], signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out.with_suffix(".log")).read_text()[-3000:]
    result = json.loads(stdout)  # stdout holds only the JSON object

    killed = Path(first).parent
    assert [a["attempt"] for a in lines(killed / "attempts.jsonl")] == [1, 2]
    assert json.loads((killed / "result.json").read_text())["attempt"] == 2

    rows = [
        r
        for r in result["metrics"]
        if r["split"] == "test" and r["level"] == "image" and r["metric"] == "auroc" and r["category"] == "mean"
    ]
    assert len(rows) == 4 and len({r["trial"] for r in rows}) == 4
    assert sorted((r["overrides"]["train.max_steps"], r["overrides"]["infer.reverse_steps"]) for r in rows) == [
        (10, 1),
        (10, 2),
        (20, 1),
        (20, 2),
    ]
    for metric in ("auroc", "auprc", "f1max", "aupro"):
        assert (
            len(
                [
                    r
                    for r in result["metrics"]
                    if r["level"] == "pixel" and r["metric"] == metric and r["category"] == "mean"
                ]
            )
            == 4
        )
    assert all(isinstance(r["value"], float) for r in rows)
    # two trainings for four trials: trials sharing train.max_steps share one checkpoint
    trials = result["trials"]
    assert all(t["status"] == "finished" and t["attempts"] == 1 for t in trials)
    ckpts = {t["overrides"]["train.max_steps"]: set() for t in trials}
    for t in trials:
        ckpts[t["overrides"]["train.max_steps"]].add(t["model_checkpoint"])
    assert all(len(v) == 1 for v in ckpts.values()) and len(set().union(*ckpts.values())) == 2
    # files: contract, combined long table, report; run folders inside the sweep folder
    assert json.loads((folder / "results.json").read_text())["metrics"] == result["metrics"]
    import pandas as pd

    table = pd.read_csv(folder / "metrics.csv")
    assert set(table["trial"]) == {t["trial"] for t in trials} and {"train.max_steps", "infer.reverse_steps"} <= set(
        table
    )
    report = (folder / "report.md").read_text()
    assert all(t["trial"] in report for t in trials) and "Selected on the test set" in report
    assert all(Path(t["run_dir"]).is_relative_to(folder) for t in trials)
    assert result["comparison"] == str(folder / "comparison" / "report.md")  # the report stage
    assert (folder / "comparison" / "report.html").is_file() and "tiny-grid" in Path(result["comparison"]).read_text()
    assert list((folder / "ray").glob("session_*/logs"))  # Ray's session files live in the sweep folder
    assert not glob.glob("/tmp/decodiff-ray-*") or all(
        not os.path.realpath(p).startswith(str(folder)) for p in glob.glob("/tmp/decodiff-ray-*")
    )
    # MLflow: one parent run, a child per trial
    parent, children = mlflow_runs(out, result["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kind"] == "sweep"
    assert sorted(c.data.tags["trial"] for c in children) == sorted(t["trial"] for t in trials)
    assert all("demo/mean/image_auroc" in c.data.metrics for c in children)


def test_evaluation_only_sweep_trains_once_and_resumes_after_a_stop(tmp_path, cache):
    spec = {
        "name": "gammas",
        "config": "tiny",
        "set": {"train.max_steps": 4},
        "grid": {"infer.gamma_p": [0.2, 0.4, 0.6]},
        "max_concurrent": 1,
        "retries": 1,
        "validation": {"holdout": 0.25, "defects": 1},
        "objective": {"metric": "pixel_aupro"},
    }
    (tmp_path / "gammas.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs"
    folder = out / "sweeps" / "gammas"
    proc = sweep([str(tmp_path / "gammas.yaml")], out, cache)
    first = Path(wait_for(folder / "trials" / "*" / "result.json", proc)[0])
    proc.send_signal(signal.SIGTERM)  # preemption: stop after the first finished trial
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    kept, kept_mtime = first.read_bytes(), first.stat().st_mtime_ns
    state = json.loads((folder / "sweep.json").read_text())
    assert state["runs"][-1]["status"] == "interrupted"

    proc = sweep([str(tmp_path / "gammas.yaml"), "--resume", "--json"], out, cache)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out.with_suffix(".log")).read_text()[-3000:]
    result = json.loads(stdout)
    assert first.read_bytes() == kept and first.stat().st_mtime_ns == kept_mtime
    assert len(lines(first.parent / "attempts.jsonl")) == 1  # not rerun
    assert [t["status"] for t in result["trials"]] == ["finished"] * 3

    # trained exactly once: one training item, one attempt, not a reuse; every trial reused it
    trainings = list((folder / "trainings").iterdir())
    assert len(trainings) == 1 and len(lines(trainings[0] / "attempts.jsonl")) == 1
    trained = json.loads((trainings[0] / "result.json").read_text())["train"]
    assert trained["reused"] is False
    infos = [
        json.loads((folder / "trials" / t["trial"] / "result.json").read_text())["train"] for t in result["trials"]
    ]
    assert all(i["reused"] is True and i["checkpoint"] == trained["checkpoint"] for i in infos)

    # validation beside test, selection on validation
    val = [
        r
        for r in result["metrics"]
        if r["split"] == "validation" and r["category"] == "mean" and r["level"] == "pixel" and r["metric"] == "aupro"
    ]
    assert len(val) == 3 and result["best"]["split"] == "validation"
    report = (folder / "report.md").read_text()
    assert "AUPRO val | AUPRO test" in report and "held out" in report

    # one parent run across both invocations, one child per trial (the first not logged twice)
    assert result["run_id"] == state["parent_run_id"]
    parent, children = mlflow_runs(out, result["run_id"])
    assert parent.info.status == "FINISHED" and len(children) == 3


def _processes_under(folder):
    """Live processes whose command line names `folder` (Ray's own processes name their session folder)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(folder) in text and state != "Z":
            found.append(int(cmdline.parent.name))
    return found


def test_a_sigkilled_driver_resumes_and_a_trial_failing_every_retry_ends_it_non_zero(tmp_path, cache):
    """The driver SIGKILLed after the first finished trial (Ray's processes die with it); --resume
    redoes no finished trial; a trial whose training fails on every retry ends the sweep with exit
    code 1, listed as failed (with its error) in the summary and the report."""
    spec = {
        "name": "killed",
        "config": "tiny",
        "set": {"train.max_steps": 2},
        "retries": 1,
        "max_concurrent": 1,
        "grid": {
            "infer.reverse_steps": [1, 2],
            "patches": [
                {"process.patch_sizes": [1, 2, 4], "process.patch_probs": [0.4, 0.3, 0.3]},
                {"process.patch_sizes": [3], "process.patch_probs": [1.0]},
            ],
        },  # 3 does not divide 8
        "exclude": [{"process.patch_sizes": [3], "infer.reverse_steps": 2}],
    }
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs"
    folder = out / "sweeps" / "killed"
    proc = sweep([str(tmp_path / "killed.yaml")], out, cache)
    first = Path(wait_for(folder / "trials" / "*" / "result.json", proc)[0])
    proc.kill()  # a lost driver: no handler runs, no state is written
    proc.wait()
    kept, kept_mtime = first.read_bytes(), first.stat().st_mtime_ns
    tried = {p.parent.name: len(lines(p)) for p in folder.glob("trials/*/attempts.jsonl")}  # before the kill
    end = time.time() + 30  # Ray's processes share the driver's fate
    while _processes_under(folder / "ray") and time.time() < end:
        time.sleep(0.5)
    assert not _processes_under(folder / "ray")

    proc = sweep([str(tmp_path / "killed.yaml"), "--resume", "--json"], out, cache)
    stdout, _ = proc.communicate(timeout=400)
    log = out.with_suffix(".log").read_text()
    assert proc.returncode == 1, log[-3000:]
    result = json.loads(stdout)
    assert first.read_bytes() == kept and first.stat().st_mtime_ns == kept_mtime
    assert len(lines(first.parent / "attempts.jsonl")) == 1  # not redone
    assert "1 of 3 trials already finished" in log
    assert "1 trial(s) failed" in log and "2 finished, 1 failed, 0 not run" in log
    failing = [t for t in result["trials"] if t["overrides"]["process.patch_sizes"] == [3]]
    assert [t["status"] for t in result["trials"] if t not in failing] == ["finished"] * 2
    (bad,) = failing
    assert bad["status"] == "failed" and "do not divide" in bad["error"]
    again = len(lines(folder / "trials" / bad["trial"] / "attempts.jsonl")) - tried.get(bad["trial"], 0)
    assert again == 2  # in the resumed sweep: the first try and its retry
    report = (folder / "report.md").read_text()
    assert bad["trial"] in report and "failed" in report
