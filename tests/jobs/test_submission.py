"""The library calls behind `decodiff submit` and `decodiff plan`, from Python with plain
arguments: job arrays as a product, dry runs that write the job folder, plans as objects."""

import json
from pathlib import Path

import pytest
import yaml

from decodiff.harness.config import ConfigError
from decodiff.harness.errors import UsageError
from decodiff.harness.planning import is_sweep, parse_shards, plan
from decodiff.harness.submission import job_tasks, split_items, submit_ray, submit_slurm
from decodiff.jobs.sbatch import SlurmResources


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DECODIFF_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    return tmp_path


def test_job_tasks_are_configs_x_categories_x_values(here):
    tasks = job_tasks(
        ["tiny"],
        ["train.max_steps=3"],
        per_category="grass,brick",
        arrays=["infer.reverse_steps=1,2,3", "process.patch_sizes=[1,2,4]"],
    )
    assert len(tasks) == 2 * 3
    assert tasks[0].label == "tiny:grass:infer.reverse_steps=1:process.patch_sizes=[1,2,4]"
    assert {(tuple(t.cfg.data.categories), t.cfg.infer.reverse_steps) for t in tasks} == {
        ((c,), s) for c in ("grass", "brick") for s in (1, 2, 3)
    }
    assert all(t.cfg.train.max_steps == 3 for t in tasks)
    assert [t.label for t in job_tasks(["tiny"], per_category="")] == [
        f"tiny:{c}" for c in ("grass", "brick", "coins", "coffee")
    ]
    with pytest.raises(UsageError, match="expected KEY=V1,V2"):
        job_tasks(["tiny"], arrays=["infer.reverse_steps"])
    with pytest.raises(ConfigError, match="bottle not in tiny's data set"):
        job_tasks(["tiny"], per_category="bottle")
    assert split_items(["tiny", "a.b=1", "demo"]) == (["tiny", "demo"], ["a.b=1"])


def test_submit_slurm_dry_run_from_python(here):
    job = submit_slurm(
        "bench",
        ["tiny"],
        ["infer.reverse_steps=2"],
        resources=SlurmResources(time="30"),
        arrays=["train.max_steps=4,6"],
        dry_run=True,
    )
    assert not job.submitted and job.id is None and job.tasks == 2 and job.script.read_text() == job.text
    assert job.script.stat().st_mode & 0o111 and "#SBATCH --array=0-1" in job.text
    configs = [yaml.safe_load((job.job_dir / f"config-{i}.yaml").read_text()) for i in range(2)]
    assert [c["train"]["max_steps"] for c in configs] == [4, 6] and configs[0]["infer"]["reverse_steps"] == 2
    assert configs[0]["run"]["out_dir"] == str(here / "runs")  # absolute: the job runs elsewhere
    assert len(job.plans) == 2 and job.to_json()["plan"][0]["runs"][0]["train_steps"] == 4
    assert list(job.to_json()) == [
        "backend",
        "kind",
        "name",
        "job_dir",
        "script",
        "tasks",
        "submitted",
        "warnings",
        "plan",
    ]
    with pytest.raises(UsageError, match="give a config"):
        submit_slurm("bench", [], ["train.lr=1e-3"], dry_run=True)
    with pytest.raises(ConfigError, match="train.batch_size 8"):
        submit_slurm("train", ["tiny"], resources=SlurmResources(nodes=4, gpus_per_node=8), dry_run=True)
    assert len(list((here / "runs" / "jobs").iterdir())) == 1  # the refused ones wrote nothing


def test_submit_ray_dry_run_from_python(here):
    env_file = here / "renv.yaml"
    env_file.write_text("env_vars: {B: 2}\nconda: base\n")
    job = submit_ray(
        "train", ["tiny"], ["train.max_steps=3"], env=["A=1"], runtime_env=env_file, pip=["einops"], dry_run=True
    )
    assert job.entrypoint == "decodiff train --config config.yaml --json" and not job.submitted
    env = job.runtime_env
    assert env["env_vars"]["A"] == "1" and env["env_vars"]["B"] == "2" and env["conda"] == "base"
    assert json.loads(job.text) == {"entrypoint": job.entrypoint, "runtime_env": env}
    sub = json.loads((job.job_dir / "submission.json").read_text())
    assert sub["entrypoint"] == job.entrypoint
    assert yaml.safe_load((Path(env["working_dir"]) / "config.yaml").read_text())["train"]["max_steps"] == 3
    with pytest.raises(UsageError, match="--address is required"):
        submit_ray("bench", ["tiny"])
    with pytest.raises(UsageError, match="one config per job"):
        submit_ray("bench", ["tiny", "demo"], dry_run=True)


def test_plan_from_python_and_what_counts_as_a_sweep(here):
    p = plan("tiny", ["train.max_steps=7"], gpus_per_node=0, time="60")
    assert p.result.runs[0].workload.train_steps == 7 and p.time_limit_warning is None
    assert "shorter than" in plan("tiny", gpus_per_node=0, time="1").to_json()["time_limit_warning"]
    assert plan("tiny", gpu="h100").to_json()["device"]["name"] == "h100"
    sweep = plan("tiny-grid", gpus_per_node=2)
    assert sweep.result.title == "sweep tiny-grid" and len(sweep.result.runs) > 1
    assert is_sweep("tiny-grid") and not is_sweep("tiny")
    # a config file with top-level keys other than sections (recipe, method) is still a config
    (here / "cfg.yaml").write_text("extends: tiny\nrecipe: custom\nmethod: deco-diff\n")
    (here / "grid.yaml").write_text("config: tiny\ngrid: {infer.reverse_steps: [1, 2]}\n")
    assert not is_sweep("cfg.yaml") and is_sweep("grid.yaml")
    assert plan("cfg.yaml").result.runs[0].label == "tiny"
    with pytest.raises(UsageError, match="--shards is for sweeps"):
        plan("tiny", shards=["mvtec=/x"])
    with pytest.raises(UsageError, match="--gpu tpu: unknown GPU"):
        plan("tiny", gpu="tpu")
    assert parse_shards(["a=rel", "b=s3://bucket/x"]) == {"a": str(here / "rel"), "b": "s3://bucket/x"}
    with pytest.raises(UsageError, match="expected NAME=DIR"):
        parse_shards(["a"])
