"""`decodiff score` through the console script (and `score_run`, the call behind it): another
method's maps, matched by key."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decodiff.harness.errors import UsageError
from decodiff.harness.score_run import score_run

DECODIFF = str(Path(sys.executable).with_name("decodiff"))


def _layout(root: Path) -> dict[str, np.ndarray]:
    """A small MVTec-AD layout; returns the true masks by key."""
    rng = np.random.default_rng(0)
    masks = {}
    for cat in ("a", "b"):
        for split, defect, n in (("train", "good", 2), ("test", "good", 2), ("test", "dent", 2)):
            for i in range(n):
                p = root / cat / split / defect / f"{i:03d}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p)
                key = f"{cat}/{split}/{defect}/{i:03d}"
                m = np.zeros((16, 16), bool)
                if defect != "good":
                    m[2 + i : 8, 3:9] = True
                    q = root / cat / "ground_truth" / defect / f"{i:03d}_mask.png"
                    q.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(m.astype(np.uint8) * 255).save(q)
                if split == "test":
                    masks[key] = m
    return masks


def _run(args, cwd):
    return subprocess.run(
        [DECODIFF, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )


def test_perfect_maps_score_one_and_missing_keys_are_named(tmp_path):
    truth = _layout(tmp_path / "data")
    keys = sorted(truth)
    np.savez(tmp_path / "maps.npz", keys=np.array(keys), maps=np.stack([truth[k].astype(np.float32) for k in keys]))
    p = _run(
        [
            "score",
            "--maps",
            str(tmp_path / "maps.npz"),
            "--truth",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
            "--json",
            "tracking.enabled=false",
            f"run.cache_dir={tmp_path / 'cache'}",
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout)
    mean = {(r["level"], r["metric"]): r["value"] for r in res["metrics"] if r["category"] == "mean"}
    assert mean[("pixel", "auroc")] == 1.0 and mean[("image", "auroc")] == 1.0
    assert abs(mean[("pixel", "aupro")] - 1.0) < 1e-12  # an integral up to FPR 0.3, divided by 0.3: float rounding
    assert Path(res["report"]).is_file()

    np.savez(
        tmp_path / "partial.npz",
        keys=np.array(keys[1:]),
        maps=np.stack([truth[k].astype(np.float32) for k in keys[1:]]),
    )
    p = _run(
        [
            "score",
            "--maps",
            str(tmp_path / "partial.npz"),
            "--truth",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out2"),
            "tracking.enabled=false",
            f"run.cache_dir={tmp_path / 'cache'}",
        ],
        tmp_path,
    )
    assert p.returncode == 1 and keys[0] in p.stderr and "no anomaly map" in p.stderr


def test_score_run_from_python_scores_into_the_folder_and_refuses_a_foreign_one(tmp_path):
    """The library call behind the command: plain arguments, a result with the report and summary."""
    truth = _layout(tmp_path / "data")
    keys = sorted(truth)
    maps = np.stack([truth[k].astype(np.float32) for k in keys])
    np.savez(tmp_path / "maps.npz", keys=np.array(keys), maps=maps)
    ov = ["tracking.enabled=false", f"run.cache_dir={tmp_path / 'cache'}"]
    res = score_run(tmp_path / "maps.npz", tmp_path / "data", tmp_path / "out", overrides=ov)
    mean = {(r["level"], r["metric"]): r["value"] for r in res.records if r["category"] == "mean"}
    assert mean[("pixel", "auroc")] == 1.0 and res.run_id is None
    assert res.report.is_file() and res.run_dir == (tmp_path / "out").resolve()
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == res.summary
    assert list(res.summary) == ["run_id", "report", "metrics", "seconds"]
    # an earlier score result may be overwritten; another folder with files may not
    score_run(tmp_path / "maps.npz", tmp_path / "data", tmp_path / "out", overrides=ov)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="holds something else than an earlier `decodiff score` result"):
        score_run(tmp_path / "maps.npz", tmp_path / "data", tmp_path / "mine", overrides=ov)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
