"""`decodiff data inspect` and `decodiff data shard` through the command line; what inspect finds wrong."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from decodiff.datasets.inspect import format_inspection, inspect_location
from decodiff.datasets.shards import shard_dataset
from decodiff.harness.cli import main

DECODIFF = str(Path(sys.executable).with_name("decodiff"))


def test_shard_and_inspect_through_the_command_line(visa_raw_root, tmp_path, capsys):
    (visa_raw_root / "pcb1" / "Data" / "Images" / "Normal" / "0001.JPG").write_bytes(b"\xff\xd8broken")
    out = tmp_path / "shards"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    args = [
        DECODIFF,
        "data",
        "shard",
        "--dataset",
        "visa",
        "--root",
        str(visa_raw_root),
        "--out",
        str(out),
        "--workers",
        "2",
        "--max-count",
        "3",
        "--skip-bad",
        "--verify",
        "--resize",
        "16",
    ]
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(out)  # stdout: the folder only; progress and warnings on stderr
    assert "skipped" in p.stderr and "0001.JPG" in p.stderr and "verified" in p.stderr
    assert main(["data", "inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "shards" and report["dataset"] == "visa" and report["ok"]
    assert report["totals"] == {
        "train": {"normal": 7, "anomalous": 0, "no_mask": 0},
        "test": {"normal": 4, "anomalous": 6, "no_mask": 0},
    }
    assert report["counts"]["test"]["candle"]["defects"] == {
        "good": 2,
        "chunk of wax missing": 2,
        "damaged corner,weird candle wick": 1,
    }
    assert report["image_sizes"] == {"16x16": 17} and report["shards"]["count"] == 8
    assert [s["source"].split("VisA/")[1] for s in report["skipped"]] == ["pcb1/Data/Images/Normal/0001.JPG"]
    # bad arguments: a one-line error, exit code 1, nothing written
    assert (
        main(
            [
                "data",
                "shard",
                "--dataset",
                "mvtec",
                "--root",
                str(visa_raw_root),
                "--out",
                str(tmp_path / "x"),
                "--resolution",
                "256",
            ]
        )
        == 1
    )
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "decodiff: error: --resolution: not an option of the mvtec reader (its options: none)"
    )
    assert not (tmp_path / "x").exists()


def test_inspect_a_native_folder_lists_what_is_wrong(mpdd_root, capsys):
    cat = mpdd_root / "tubes"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(cat / "ground_truth" / "scratches" / "000.png")
    (cat / "train" / "good" / "002.png").write_bytes(b"garbage")
    (mpdd_root / "bracket_black" / "ground_truth" / "scratches" / "001_mask.png").unlink()
    ins = inspect_location(mpdd_root)
    assert ins.kind == "native" and ins.dataset == "mpdd" and not ins.ok
    errors = {Path(p.where).relative_to(mpdd_root).as_posix(): p.what for p in ins.problems if p.severity == "error"}
    assert errors.keys() == {"tubes/ground_truth/scratches/000.png", "tubes/train/good/002.png"}
    assert errors["tubes/ground_truth/scratches/000.png"].startswith("mask size 12x10 differs from its image 24x24")
    # a missing mask is counted (the image is anomalous) and said once for its category, not as an error per image
    assert ins.counts["test"]["bracket_black"] == {
        "normal": 1,
        "anomalous": 2,
        "defects": {"good": 1, "scratches": 2},
        "no_mask": 1,
    }
    notes = [p for p in ins.problems if "masks missing" in p.what]
    assert [(p.severity, p.where) for p in notes] == [("warning", "bracket_black")]
    assert "1 of its 2 anomalous test images" in notes[0].what and "--masks-optional" in notes[0].what
    assert any("4 of the 6 official mpdd categories" in p.what for p in ins.problems)
    text = format_inspection(ins)
    assert "train  tubes" in text and "NOT OK: 2 errors" in text
    assert main(["data", "inspect", str(mpdd_root), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_inspect_a_shard_set_finds_missing_changed_and_stray_files(folder_root, tmp_path):
    out = tmp_path / "s"
    m = shard_dataset("folder", folder_root, out, max_count=4)
    clean = inspect_location(out, verify=True, deep=True)
    assert clean.ok and clean.totals()["test"]["anomalous"] == 4 and clean.categories == ["widgets"]
    assert not [p for p in clean.problems if p.severity == "error"]
    first, second, third = (out / s.name for s in m.shards[:3])
    first.unlink()
    data = bytearray(second.read_bytes())
    data[600] ^= 0xFF
    second.write_bytes(bytes(data))
    third.write_bytes(third.read_bytes()[:2048])
    (out / "train-old-00000.tar").write_bytes(b"")
    (out / "train-x-00001.tar.tmp-999").write_bytes(b"")
    quick = inspect_location(out)
    assert {Path(p.where).name for p in quick.problems if p.severity == "error"} == {first.name, third.name}
    full = inspect_location(out, verify=True)
    errors = {Path(p.where).name: p.what for p in full.problems if p.severity == "error"}
    assert errors[second.name].startswith("sha256 differs") and errors[first.name].startswith("missing")
    warnings = {Path(p.where).name for p in full.problems if p.severity == "warning"}
    assert {"train-old-00000.tar", "train-x-00001.tar.tmp-999"} <= warnings
    (out / "manifest.json").unlink()
    unfinished = inspect_location(out)
    assert not unfinished.ok and "unfinished or killed shard run" in unfinished.problems[0].what


def test_inspect_of_a_mask_less_folder_counts_anomalies_and_says_once_per_category(mpdd_root, capsys):
    """Every mask removed: no error per image, the anomalous images counted, one note per category."""
    for m in list(mpdd_root.rglob("ground_truth/*/*.png")):
        m.unlink()
    ins = inspect_location(mpdd_root)
    assert ins.ok, [p.what for p in ins.problems if p.severity == "error"]
    for cat, c in ins.counts["test"].items():
        assert c["anomalous"] == c["no_mask"] > 0, cat
    notes = [p for p in ins.problems if "masks missing" in p.what]
    assert sorted(p.where for p in notes) == sorted(ins.counts["test"])
    assert all("none of its" in p.what and "pixel metrics will be null" in p.what for p in notes)
    assert "no anomalous test images" not in format_inspection(ins)
