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
    assert lines == ["decodiff: error: unknown config key 'train.lrr' (allowed under train: " + lines[0].split("train: ", 1)[1]]
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
    for cmd in (["--help"], ["bench", "--help"], ["data", "shard", "--help"], ["train", "--help"],
                ["evaluate", "--help"], ["report", "--help"], ["model", "info", "--help"]):
        p = run(cmd, tmp_path)
        assert p.returncode == 0 and "usage: decodiff" in p.stdout
