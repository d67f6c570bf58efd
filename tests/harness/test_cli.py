"""Bad input through the real `decodiff` console script: exit codes, one-line errors, nothing written."""

import os
import subprocess
import sys
from pathlib import Path

DECODIFF = str(Path(sys.executable).with_name("decodiff"))


def run(args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([DECODIFF, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def test_unknown_key_exits_2_and_writes_nothing(tmp_path):
    p = run(["bench", "--config", "tiny", "train.lrr=1"], tmp_path)
    assert p.returncode == 2
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines == [
        "decodiff: error: unknown config key 'train.lrr' (allowed under train: " + lines[0].split("train: ", 1)[1]
    ]
    assert list(tmp_path.iterdir()) == []


def test_bad_value_exits_2(tmp_path):
    p = run(["bench", "--config", "tiny", "infer.reverse_steps=0"], tmp_path)
    assert p.returncode == 2 and "infer.reverse_steps" in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_data_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-mvtec"
    p = run(["bench", "--config", "tiny", "data.dataset=mvtec", f"data.root={missing}"], tmp_path)
    assert p.returncode == 1
    assert str(missing) in p.stderr and "not found" in p.stderr


def test_help_for_every_command(tmp_path):
    for cmd in (
        ["--help"],
        ["bench", "--help"],
        ["data", "shard", "--help"],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["report", "--help"],
        ["model", "info", "--help"],
    ):
        p = run(cmd, tmp_path)
        assert p.returncode == 0 and "usage: decodiff" in p.stdout


def _one_error(p) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("decodiff: error: "), p.stderr[-2000:]
    return lines[0]


def test_config_files_that_cannot_work_are_refused_before_anything_is_written(tmp_path):
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "afile").write_text("not a folder")
    cases = {
        ("--config", "loop.yaml"): "goes round in a circle",
        ("--config", "empty.yaml"): "empty.yaml: the file is empty",
        ("--config", "tiny", "data.resize=32", "data.crop=64"): "data.crop 64 is larger than data.resize 32",
        ("--config", "tiny", "run.out_dir=afile"): "'run.out_dir': afile is a file",
        (
            "--config",
            "tiny",
            "tracking.uri=http://127.0.0.1:9",
        ): "tracking.uri=http://127.0.0.1:9: no MLflow server answers",
        ("--config", "tiny", "tracking.uri=file:///tmp/mlruns"): "refuses its plain file store",
    }
    for args, expected in cases.items():
        p = run(["bench", *args], tmp_path)
        assert p.returncode == 2 and expected in _one_error(p), (args, p.stderr[-2000:])
    assert sorted(f.name for f in tmp_path.iterdir()) == ["afile", "empty.yaml", "loop.yaml"]


def test_an_unforeseen_bad_value_is_still_one_line(tmp_path):
    p = run(["data", "demo", "--out", str(tmp_path / "d"), "--size", "7"], tmp_path)
    assert p.returncode == 1 and "demo image size must be at least 32" in _one_error(p)
    assert not (tmp_path / "d").exists()


def test_vae_train_never_replaces_a_folder_that_is_not_a_vae(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("keep")
    p = run(["vae", "train", "--config", "tiny", "--out", str(keep)], tmp_path)
    assert p.returncode == 2 and "is not a VAE folder" in _one_error(p)
    assert (keep / "notes.txt").read_text() == "keep"


def test_preflight_refuses_a_tracking_store_that_is_not_a_database_and_train_out_a_file(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("not a database\n")
    p = run(["bench", "--config", "tiny", f"tracking.uri=sqlite:///{bad}"], tmp_path)
    assert p.returncode == 2 and f"{bad} is not an SQLite database" in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bad.db"]  # no cache, no run folder
    p = run(["train", "--config", "tiny", "--out", str(bad)], tmp_path)
    assert p.returncode == 2 and f"--out {bad}: is a file, expected a training folder" in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bad.db"]
    # a training that fails before it writes anything leaves no --out folder (not even its lock file)
    new, missing = tmp_path / "new-out", tmp_path / "no-such-weights"
    p = run(
        ["train", "--config", "tiny", "--out", str(new), f"model.init_from={missing}", "tracking.enabled=false"],
        tmp_path,
    )
    assert p.returncode == 1 and str(missing) in p.stderr.strip().splitlines()[-1]
    assert not new.exists()


def test_an_error_from_a_loader_worker_is_its_own_line():
    from decodiff.datasets.imageio import DataError
    from decodiff.harness.cli import _original

    wrapped = DataError(
        "Caught DataError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\ndecodiff.datasets.imageio.DataError: /s/t.tar: 2 samples, the '
        "shard manifest says 4\n"
    )
    assert _original(wrapped) == "/s/t.tar: 2 samples, the shard manifest says 4"
    assert _original(DataError("plain")) == "plain"
