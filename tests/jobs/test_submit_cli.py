"""`decodiff submit|plan|jobs` through the CLI entry point: dry runs write a job folder with the
script and resolved configs; missing options, bad configs and unreachable Ray addresses fail in
seconds with one line and submit nothing."""

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from decodiff.harness.cli import main


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DECODIFF_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def _json(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out)


def _nothing_written(root: Path) -> None:
    assert not (root / "runs" / "jobs").exists() or not any((root / "runs" / "jobs").iterdir())
    assert not (root / "state" / "jobs.jsonl").exists()


def test_slurm_dry_run_writes_script_and_resolved_config(here, capsys):
    rc = main(
        [
            "submit",
            "slurm",
            "train",
            "tiny",
            "train.batch_size=64",
            "--nodes",
            "4",
            "--gpus-per-node",
            "8",
            "--time",
            "1:00:00",
            "--partition",
            "gpu",
            "--gpu",
            "h100",
            "--dry-run",
            "--json",
        ]
    )
    assert rc == 0
    out = _json(capsys)
    script = Path(out["script"])
    assert out["submitted"] is False and script.is_file() and Path(out["job_dir"]).parent == here / "runs" / "jobs"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "#SBATCH --nodes=4" in text and "#SBATCH --gpus-per-node=8" in text and "NUM_PROCESSES=32" in text
    assert f"#SBATCH --chdir={here}" in text
    cfg = yaml.safe_load((script.parent / "config.yaml").read_text())
    assert cfg["train"]["batch_size"] == 64 and cfg["run"]["out_dir"] == str(here / "runs")
    assert cfg["run"]["cache_dir"] == str(here / ".cache" / "decodiff")  # absolute: jobs run elsewhere
    plan = out["plan"][0]
    assert plan["nodes"] == 4 and plan["device"]["name"] == "h100" and plan["estimate"] is True
    assert out["warnings"] == []
    assert not (here / "state" / "jobs.jsonl").exists()  # a dry run is not a job


def test_per_category_and_array_make_a_job_array(here, capsys):
    rc = main(
        [
            "submit",
            "slurm",
            "bench",
            "tiny",
            "--per-category",
            "--array",
            "infer.reverse_steps=2,3",
            "--dry-run",
            "--json",
        ]
    )
    assert rc == 0
    out = _json(capsys)
    job = Path(out["job_dir"])
    assert out["tasks"] == 8  # 4 demo categories x 2 step counts
    assert "#SBATCH --array=0-7" in Path(out["script"]).read_text()
    seen = set()
    for i in range(8):
        cfg = yaml.safe_load((job / f"config-{i}.yaml").read_text())
        seen.add((tuple(cfg["data"]["categories"]), cfg["infer"]["reverse_steps"]))
    assert seen == {((c,), s) for c in ("grass", "brick", "coins", "coffee") for s in (2, 3)}
    assert main(["submit", "slurm", "bench", "tiny", "--per-category", "grass,bottle", "--dry-run"]) == 2
    assert "bottle not in tiny's data set" in capsys.readouterr().err


def test_time_limit_shorter_than_plan_warns(here, capsys):
    # the published MVTec-AD protocol (UNet-L, 800 epochs) on one A100 in 10 minutes
    rc = main(
        [
            "submit",
            "slurm",
            "train",
            "tiny",
            "data.dataset=mvtec",
            "data.root=/nowhere",
            "model.size=L",
            "train.max_steps=null",
            "train.epochs=800",
            "train.batch_size=128",
            "data.resize=288",
            "data.crop=256",
            "--gpus-per-node",
            "1",
            "--gpu",
            "a100",
            "--time",
            "10",
            "--dry-run",
            "--json",
        ]
    )
    assert rc == 0
    out = _json(capsys)
    assert len(out["warnings"]) == 1 and "--time 10" in out["warnings"][0] and "shorter than" in out["warnings"][0]


def test_too_many_processes_for_the_batch(here, capsys):
    rc = main(["submit", "slurm", "train", "tiny", "--nodes", "4", "--gpus-per-node", "8", "--dry-run"])
    assert rc == 2
    assert "train.batch_size 8" in capsys.readouterr().err
    _nothing_written(here)


def test_missing_config_is_a_usage_error(here, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["submit", "slurm", "bench"])
    assert exc.value.code == 2
    assert main(["submit", "slurm", "bench", "train.lr=1e-3", "--dry-run"]) == 2
    assert "give a config" in capsys.readouterr().err
    _nothing_written(here)


def test_bad_config_key_fails_before_anything_is_written(here, capsys):
    assert main(["submit", "slurm", "bench", "tiny", "train.nope=1", "--dry-run"]) == 2
    assert "unknown config key 'train.nope'" in capsys.readouterr().err
    _nothing_written(here)


def test_no_sbatch_on_path(here, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(here))
    assert main(["submit", "slurm", "bench", "tiny"]) == 2
    assert "sbatch not found" in capsys.readouterr().err
    _nothing_written(here)


def test_ray_without_address(here, capsys):
    start = time.monotonic()
    assert main(["submit", "ray", "bench", "tiny"]) == 2
    assert "--address is required" in capsys.readouterr().err and time.monotonic() - start < 5
    _nothing_written(here)


def test_unreachable_ray_address_fails_fast(here, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    start = time.monotonic()
    assert main(["submit", "ray", "bench", "tiny", "--address", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "not reachable" in err and time.monotonic() - start < 10
    # a Ray Client address is not the Jobs API
    assert main(["submit", "ray", "bench", "tiny", "--address", "ray://127.0.0.1:10001"]) == 2
    assert "Job Submission API" in capsys.readouterr().err
    _nothing_written(here)


def test_ray_dry_run_runtime_env(here, capsys):
    rc = main(["submit", "ray", "bench", "tiny", "--env", "FOO=1", "--pip", "einops", "--dry-run", "--json"])
    assert rc == 0
    out = _json(capsys)
    env = out["runtime_env"]
    assert env["working_dir"].endswith("/upload") and env["env_vars"]["FOO"] == "1" and env["pip"] == ["einops"]
    assert out["entrypoint"] == "decodiff bench --config config.yaml --json"
    assert (Path(env["working_dir"]) / "config.yaml").is_file()


def test_plan_command(here, capsys, tmp_path):
    assert main(["plan", "paper-main", "--gpu", "h100", "--gpus-per-node", "8", "--json"]) == 0
    out = _json(capsys)
    assert {r["dataset"] for r in out["runs"]} == {"mvtec", "visa", "mpdd", "realiad"} and out["concurrent"] == 8
    assert out["estimate"] is True and out["gpu_hours"] > 0
    assert main(["plan", "tiny", "--gpus-per-node", "0", "--time", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("plan: tiny on 1 node(s) x CPU only") and "node-hours" in text and "WARNING" in text
    speed = tmp_path / "speed.json"
    speed.write_text(
        json.dumps(
            {
                "device": "NVIDIA H100 80GB HBM3",
                "entries": [
                    {"model": "L", "latent_size": 32, "mixed_precision": "no", "train_samples_per_second": 400}
                ],
            }
        )
    )
    assert (
        main(
            [
                "plan",
                "tiny",
                "data.dataset=mvtec",
                "data.root=/x",
                "model.size=L",
                "data.resize=288",
                "data.crop=256",
                "train.max_steps=1000",
                "train.batch_size=128",
                "--throughput",
                str(speed),
                "--json",
            ]
        )
        == 0
    )
    out = _json(capsys)
    train = next(p for p in out["runs"][0]["phases"] if p["name"] == "train")
    assert train["seconds"] == pytest.approx(1000 * 128 / 400, rel=1e-3) and out["estimate"] is False
    assert main(["plan", "tiny", "--gpu", "tpu"]) == 2


def test_jobs_status_of_unknown_ray_job_needs_an_address(here, capsys):
    assert main(["jobs", "status", "raysubmit_abc"]) == 2
    assert "--address" in capsys.readouterr().err
    assert main(["jobs", "list", "--json"]) == 0
    assert _json(capsys)["jobs"] == []


def test_slurm_status_from_the_job_folder_when_slurm_has_forgotten(here, capsys, monkeypatch):
    """Finished jobs leave SLURM after MinJobAge (and there is no sacct): the status files the
    job script wrote answer then."""
    monkeypatch.setenv("PATH", str(here))  # no scontrol to ask: as on a machine where SLURM forgot the job
    job = here / "job"
    (job / "status").mkdir(parents=True)
    (job / "status" / "4242_0.exit").write_text("0\n")
    (job / "status" / "4242_1.exit").write_text("3\n")
    (job / "status" / "4242_2.requeued").write_text("75\n")
    assert main(["jobs", "status", "4242", "--job-dir", str(job), "--json"]) == 0
    tasks = [(t["id"], t["state"], t["exit_code"]) for t in _json(capsys)["tasks"]]
    assert tasks == [("4242_0", "COMPLETED", 0), ("4242_1", "FAILED", 3), ("4242_2", "REQUEUED", None)]
    assert main(["jobs", "status", "4242_1", "--job-dir", str(job), "--json"]) == 0
    assert [t["id"] for t in _json(capsys)["tasks"]] == ["4242_1"]
    assert main(["jobs", "wait", "4242", "--job-dir", str(job), "--timeout", "0"]) == 3  # one task still to run
    capsys.readouterr()
    assert main(["jobs", "status", "4243"]) == 2  # neither SLURM nor a folder knows it
    assert "SLURM does not know it" in capsys.readouterr().err


def test_plan_reads_a_config_file_with_top_level_method_or_recipe_as_a_config(here, capsys, tmp_path):
    """Every top-level config key tells a config from a sweep file (the keys of the config model, so
    `method:` and `recipe:` too): such a file is planned as one run, not refused as a bad sweep."""
    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump({"extends": "tiny", "method": "deco-diff", "recipe": "custom"}))
    assert main(["plan", str(own), "--gpus-per-node", "0", "--json"]) == 0
    out = _json(capsys)
    assert len(out["runs"]) == 1 and "train" in {p["name"] for p in out["runs"][0]["phases"]}
