"""The main job end to end through the real console script, on the tiny preset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DECODIFF = str(Path(sys.executable).with_name("decodiff"))


@pytest.mark.slow
def test_bench_tiny_end_to_end(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run(
        [DECODIFF, "bench", "--config", "tiny", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)  # stdout is exactly one JSON object
    assert set(out) >= {"run_id", "report", "metrics"}
    records = out["metrics"]
    cats = {r["category"] for r in records}
    assert {"grass", "brick", "coins", "coffee", "mean"} <= cats
    for r in records:
        assert r["level"] in ("image", "pixel") and r["metric"] in ("auroc", "auprc", "f1max", "aupro")
        assert (r["value"] is None and r.get("reason")) or 0.0 <= r["value"] <= 1.0
    assert {(r["level"], r["metric"]) for r in records if r["category"] == "mean"} == {
        ("image", "auroc"),
        ("image", "auprc"),
        ("image", "f1max"),
        ("pixel", "auroc"),
        ("pixel", "auprc"),
        ("pixel", "f1max"),
        ("pixel", "aupro"),
    }
    report = Path(out["report"])
    text = report.read_text()
    assert "| **mean** |" in text and "Image AUROC per defect type" in text and "| grass / scratch |" in text
    run_dir = report.parent
    for name in ("config.yaml", "provenance.json", "metrics.csv", "image_table.csv", "pixel_table.csv", "maps.npz"):
        assert (run_dir / name).is_file(), name
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert len(prov["data"]["checksum"]) == 64 and prov["code_version"]
    # the MLflow run holds the per-category metrics under stable names
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    run = client.get_run(out["run_id"])
    mean_auroc = next(
        r["value"] for r in records if r["category"] == "mean" and r["level"] == "pixel" and r["metric"] == "auroc"
    )
    assert run.data.metrics["demo/mean/pixel_auroc"] == pytest.approx(mean_auroc)
    assert run.data.tags["data_checksum"] == prov["data"]["checksum"]
    # the baselines, in the same run: JSON (with "method"), MLflow (method prefix), CSV, report
    base = out["baselines"]
    assert {r["method"] for r in base} == {"vae-recon", "latent-nn"}
    for method in ("vae-recon", "latent-nn"):
        assert {(r["category"], r["level"], r["metric"]) for r in base if r["method"] == method} == {
            (r["category"], r["level"], r["metric"]) for r in records
        }
        b = next(
            r
            for r in base
            if r["method"] == method and r["category"] == "mean" and r["level"] == "image" and r["metric"] == "auroc"
        )
        assert run.data.metrics[f"{method}/demo/mean/image_auroc"] == pytest.approx(b["value"])
    assert all("method" not in r for r in records)  # DeCo-Diff's own records keep their shape
    assert "| vae-recon (baseline) |" in text and "| latent-nn (baseline) |" in text
    csv = (run_dir / "baselines.csv").read_text().splitlines()
    assert csv[0].startswith("method,") and len(csv) == 1 + len(records) + len(base)
    assert run.data.metrics["baseline_seconds/latent-nn"] >= 0
    # a second run reuses the data, the VAE and the trained model
    p2 = subprocess.run(
        [DECODIFF, "bench", "--config", "tiny", "infer.baselines=[]"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert "train: reusing" in p2.stderr and "VAE: reusing" in p2.stderr
    assert Path(p2.stdout.strip()).is_file()
    assert "(baseline)" not in Path(p2.stdout.strip()).read_text()  # switched off
