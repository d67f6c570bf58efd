"""The own-data recipe end to end: `--config own` on a folder of real images (the demo set's photographs
and textures, re-laid as normal/anomalous folders without masks) with a short budget; the run keeps
its budget by its own timings and reports DeCo-Diff beside the baselines."""

import json
import shutil

import pytest

from decodiff.datasets.demo import generate_demo
from decodiff.harness.bench import bench
from decodiff.harness.config import build_config


def _folder_set(src, root):
    """<root>/<cat>/normal (train and test normals; the reader splits them) and anomalous/<defect>."""
    for cat in sorted(p for p in src.iterdir() if p.is_dir()):
        for d in (cat / "train" / "good", cat / "test" / "good"):
            shutil.copytree(d, root / cat.name / "normal", dirs_exist_ok=True, copy_function=shutil.copyfile)
        for defect in (cat / "test").iterdir():
            if defect.name != "good":
                shutil.copytree(defect, root / cat.name / "anomalous" / defect.name)


@pytest.mark.slow
def test_own_preset_on_a_folder_keeps_its_budget_and_reports_the_baselines(tmp_path):
    src = tmp_path / "mvtec"
    generate_demo(src, size=64, n_train=12, n_test_good=4, n_test_per_defect=1, categories=["brick", "coins"])
    _folder_set(src, tmp_path / "own")
    minutes = 2.0
    cfg = build_config(
        "own",
        [
            f"data.root={tmp_path / 'own'}",
            f"run.time_budget={minutes}",
            "data.resize=64",
            "model.size=tiny",
            "vae.small=f8-tiny",
            "vae.init_from=null",  # the shipped generic VAE is f8-small: a tiny VAE is trained from nothing
            "vae.steps=30",
            "vae.batch_size=8",
            "train.batch_size=8",
            "infer.batch_size=8",
            "process.patch_sizes=[1,2,4]",
            "process.patch_probs=[0.4,0.3,0.3]",
            f"run.cache_dir={tmp_path / 'cache'}",
            f"run.out_dir={tmp_path / 'runs'}",
            "tracking.enabled=false",
        ],
    )
    out = bench(cfg)
    plan = json.loads((out.run_dir / "timings.json").read_text())["budget"]
    assert plan["actual_seconds"] <= minutes * 60 and plan["steps"] >= 100
    methods = {r["method"] for r in out.summary["baselines"]}
    assert methods == {"vae-recon", "latent-nn"}
    assert {r["category"] for r in out.summary["metrics"]} >= {"brick", "coins"}
    report = (out.run_dir / "report.md").read_text()
    assert "vae-recon (baseline)" in report and "latent-nn (baseline)" in report
