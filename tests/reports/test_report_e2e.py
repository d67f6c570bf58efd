"""`decodiff report` on a real tiny run logged over HTTP to a real MLflow server (conftest.py): the
report rebuilt from the server alone equals the one the run wrote; comparisons with the paper;
clear messages and marked gaps for missing runs, runs without pixel metrics and unknown
experiments; the HTML report rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from decodiff.harness.cli import main
from decodiff.harness.tracking import read_run
from decodiff.reports.rundata import normalise_records

# one real tiny benchmark (about a minute on an idle machine) is shared by every test here
pytestmark = pytest.mark.slow

REPORT_FILES = ("report.md", "report.html", "tables.tex")


def _files(folder: Path) -> dict[str, bytes]:
    out = {name: (folder / name).read_bytes() for name in REPORT_FILES}
    for sub in ("tables", "figures"):
        for p in sorted((folder / sub).iterdir()):
            out[f"{sub}/{p.name}"] = p.read_bytes()
    return out


def test_run_writes_report_tables_figures_and_logs_them(tracked_bench):
    run_dir = tracked_bench.run_dir
    files = _files(run_dir)
    assert {
        "tables/summary.csv",
        "tables/image_categories.csv",
        "tables/pixel_categories.tex",
        "figures/roc_pr_image.png",
        "figures/roc_pr_pixel.png",
        "figures/correction_trajectory.png",
    } <= set(files)
    cats = {"brick", "coffee", "coins", "grass"}
    assert {f"figures/qualitative_{c}.png" for c in cats} <= set(files)
    md = files["report.md"].decode()
    assert "MLflow run" in md and tracked_bench.run_id in md
    # every mean value of the run carries a 95% bootstrap interval around it; the baselines' rows (none) follow
    summary = pd.read_csv(run_dir / "tables" / "summary.csv")
    assert summary["Method / run"].tolist()[1:] == ["vae-recon (baseline)", "latent-nn (baseline)"]
    assert summary.iloc[1:]["Image AUROC low"].isna().all()
    summary = summary.iloc[:1]
    for col in ("Image AUROC", "Pixel AUPRO"):
        assert (summary[f"{col} low"] <= summary[col] + 1e-9).all() and (
            summary[col] <= summary[f"{col} high"] + 1e-9
        ).all()
    # the server holds the run: stable metric names, reason tags, artifacts
    tracked = read_run(tracked_bench.uri, tracked_bench.run_id)
    assert tracked.status == "FINISHED" and tracked.experiment == tracked_bench.experiment
    assert "demo/mean/pixel_aupro" in tracked.metrics and tracked.params["run.name"] == "tiny"
    # the recipe: an MLflow param (the config's top-level key) and tags, and a line of the report's header
    assert tracked.params["recipe"] == "custom" and tracked.tags["recipe"] == "custom"
    assert tracked.tags["recipe_departures"] == "none" and "custom (no recipe: the config's own values)" in md
    assert normalise_records(tracked.records()) == normalise_records(tracked_bench.summary["metrics"])
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=tracked_bench.uri)
    logged = {a.path for a in client.list_artifacts(tracked_bench.run_id)}
    assert {"report.md", "report.html", "figures", "tables", "report_data", "config.yaml"} <= logged
    figs = {Path(a.path).name for a in client.list_artifacts(tracked_bench.run_id, "figures")}
    assert "correction_trajectory.png" in figs


def test_report_from_the_server_alone_equals_the_run_time_report(tracked_bench, tmp_path):
    hidden = tracked_bench.run_dir.with_name(tracked_bench.run_dir.name + ".hidden")
    tracked_bench.run_dir.rename(hidden)  # nothing of the run folder can be read meanwhile
    try:
        rc = main(
            [
                "report",
                "--run",
                tracked_bench.run_id,
                "--tracking-uri",
                tracked_bench.uri,
                "--out",
                str(tmp_path / "from-server"),
            ]
        )
    finally:
        hidden.rename(tracked_bench.run_dir)
    assert rc == 0
    assert _files(tmp_path / "from-server") == _files(tracked_bench.run_dir)
    # and from the run folder
    assert main(["report", "--run", str(tracked_bench.run_dir), "--out", str(tmp_path / "from-dir")]) == 0
    assert _files(tmp_path / "from-dir") == _files(tracked_bench.run_dir)


def test_compare_published_marks_copied_numbers_and_best(tracked_bench, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(
        [
            "report",
            "--experiment",
            tracked_bench.experiment,
            "--tracking-uri",
            tracked_bench.uri,
            "--published-dataset",
            "mvtec",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in result["runs"]] == [tracked_bench.run_id]
    summary = pd.read_csv(out / "tables" / "summary_demo.csv")
    assert summary["source"].tolist() == ["measured"] + ["published"] * 9
    assert summary.iloc[1:]["Method / run"].str.endswith("†").all()
    mambaad = summary[summary["Method / run"].str.startswith("MambaAD")].iloc[0]
    assert mambaad["Image AUROC"] == pytest.approx(98.6) and mambaad["Pixel AUPRO"] == pytest.approx(93.1)
    md = (out / "report.md").read_text()
    # DeCo-Diff's published pixel AUPRC is the best of the column, GLAD's the second
    assert "**74.9**" in md and "<ins>60.8</ins>" in md
    assert "copied from the paper" in md and "different data" in md
    # the run's recipe and AUPRO protocol differ from those behind the DeCo-Diff column: said so
    assert "used recipe 'custom', while the published DeCo-Diff column comes from recipe 'paper'" in md
    assert "scored AUPRO with protocol 'mvtec', while the published DeCo-Diff AUPRO comes from 'deco-diff-code'" in md
    # appendix Table 4 layout: categories down, runs and methods across, cells "a / b / c / d"
    pixel = (out / "tables" / "pixel_categories_demo.tex").read_text()
    assert "\\textbf{" in pixel and "\\underline{" in pixel and "UniAD" in pixel
    assert "uniad-mvtec-pixel-average" in md  # the paper's own inconsistency is named
    html = (out / "report.html").read_text()
    assert "<b>74.9</b>" in html


def test_missing_runs_are_gaps_with_reasons(tracked_bench, tmp_path, capsys):
    out = tmp_path / "gaps"
    ghost = "0" * 32
    rc = main(
        [
            "report",
            "--run",
            tracked_bench.run_id,
            "--run",
            ghost,
            "--run",
            str(tmp_path / "no-such-run"),
            "--tracking-uri",
            tracked_bench.uri,
            "--out",
            str(out),
        ]
    )
    assert rc == 0  # what exists is reported
    err = capsys.readouterr().err
    assert f"MLflow run '{ghost}' not found at {tracked_bench.uri}" in err
    assert "no-such-run: neither a run folder nor an MLflow run id" in err
    md = (out / "report.md").read_text()
    assert f"{ghost} (missing)" in md and "not found" in md
    summary = pd.read_csv(out / "tables" / "summary_demo.csv")
    assert summary["source"].tolist().count("measured") == 1
    gaps = summary[summary["source"] == "missing"]
    assert len(gaps) == 2 and gaps[["Image AUROC", "Pixel AUPRO"]].isna().all().all()


def test_unknown_experiment_says_so_and_still_shows_the_paper(tracked_bench, tmp_path, capsys):
    out = tmp_path / "unknown"
    rc = main(
        [
            "report",
            "--experiment",
            "no-such-experiment",
            "--tracking-uri",
            tracked_bench.uri,
            "--compare-published",
            "--published-dataset",
            "visa",
            "--out",
            str(out),
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "MLflow experiment 'no-such-experiment' not found" in err and tracked_bench.experiment in err
    md = (out / "report.md").read_text()
    assert "experiment no-such-experiment (missing)" in md
    summary = pd.read_csv(out / "tables" / "summary_unknown.csv")
    assert summary["source"].tolist() == ["missing"] + ["published"] * 9


def test_run_without_pixel_metrics_shows_gaps(tracked_bench, tmp_path):
    copy = tmp_path / "no-pixels"
    shutil.copytree(tracked_bench.run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    for r in summary["metrics"]:
        if r["level"] == "pixel":
            r["value"], r["reason"] = None, "the test images have no ground-truth masks"
    (copy / "summary.json").write_text(json.dumps(summary))
    config = (copy / "config.yaml").read_text()  # another setting, so the two runs are not averaged as seeds
    (copy / "config.yaml").write_text(config.replace("image_score: max", "image_score: topk_mean"))
    out = tmp_path / "report"
    assert main(["report", "--run", str(copy), "--run", str(tracked_bench.run_dir), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "no pixel metrics (the test images have no ground-truth masks)" in md
    table = pd.read_csv(out / "tables" / "summary_demo.csv")
    assert table["Pixel AUPRO"].isna().sum() == 1 and table["Image AUROC"].notna().all()
    # the single-run report of it: image tables filled, pixel cells marked
    assert main(["report", "--run", str(copy), "--out", str(tmp_path / "single")]) == 0
    pixel = (tmp_path / "single" / "report.md").read_text().split("## Pixel level")[1].split("##")[0]
    assert "| brick | — | — | — | — |" in pixel


def test_sweep_report_plots_swept_keys_and_matches_paper_rows(tracked_bench, tmp_path):
    """A sweep folder as `decodiff sweep` leaves it (sweep.json, results.json), its finished
    trials pointing at the real run, one trial failed."""
    folder = tmp_path / "sweep"
    folder.mkdir()
    trials = [
        ("t0", {"infer.strategy": "zt-1", "infer.reverse_steps": 5, "run.seed": 0}, "finished"),
        ("t1", {"infer.strategy": "zt-1", "infer.reverse_steps": 5, "run.seed": 1}, "finished"),
        ("t2", {"infer.strategy": "z0", "infer.reverse_steps": 2, "run.seed": 0}, "finished"),
        ("t3", {"infer.strategy": "z0", "infer.reverse_steps": 10, "run.seed": 0}, "failed"),
    ]
    (folder / "sweep.json").write_text(
        json.dumps({"name": "steps", "trials": [{"trial": t, "dataset": "demo", "overrides": o} for t, o, _ in trials]})
    )
    (folder / "results.json").write_text(
        json.dumps(
            {
                "sweep": str(folder),
                "trials": [
                    {
                        "trial": t,
                        "overrides": o,
                        "status": s,
                        "run_dir": str(tracked_bench.run_dir) if s == "finished" else None,
                        "error": "CUDA out of memory" if s == "failed" else None,
                    }
                    for t, o, s in trials
                ],
            }
        )
    )
    out = tmp_path / "report"
    assert main(["report", "--sweep", str(folder), "--compare-published", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "infer.strategy=zt-1, infer.reverse_steps=5 (2 seeds)" in md
    assert "(missing)" in md and "CUDA out of memory" in md
    assert (out / "figures" / "sweep_demo_infer-reverse_steps.png").is_file()
    assert (out / "figures" / "sweep_demo_infer-strategy.png").is_file()
    ablations = pd.read_csv(out / "tables" / "ablations_demo.csv")
    paper = ablations[ablations["source"] == "published"]
    assert "paper Table 3: zt-1, 5 steps†" in paper["Trial / paper row"].tolist()
    assert paper["Pixel AUPRO"].max() == pytest.approx(94.9)
    # two seeds of one setting: mean ± std (the same run twice: std 0)
    assert "± 0.0" in md


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); the HTML render test needs it")
    return path


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_html_report_renders_in_headless_chromium(tracked_bench, tmp_path, chromium):
    html = (tracked_bench.run_dir / "report.html").read_text()
    # self-contained: every image inline, no external resource
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    n_images = html.count("<img ")
    assert n_images >= 7
    probe = tmp_path / "probe.html"
    probe.write_text(
        html.replace(
            "</body>",
            """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-loaded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
});
</script></body>""",
        )
    )
    dom = _chromium(chromium, tmp_path / "profile1", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-images="(\d+)" data-loaded="(\d+)"', dom.stdout)
    assert m, dom.stdout[:500]
    assert int(m.group(1)) == n_images and int(m.group(2)) == n_images
    shot = tmp_path / "shot.png"
    res = _chromium(
        chromium,
        tmp_path / "profile2",
        "--window-size=1280,4000",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        (tracked_bench.run_dir / "report.html").as_uri(),
    )
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert img.shape[:2] == (4000, 1280)  # the baselines' tables push the figures down
    ink = (np.abs(img - 255).sum(axis=2) > 60).mean()  # share of pixels that are not (near) white
    colour = ((img.max(axis=2) - img.min(axis=2)) > 60).mean()  # saturated pixels: the figures' plots
    assert ink > 0.03 and colour > 0.002, (ink, colour)
