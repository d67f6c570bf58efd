"""Phase timings of a run (timings.json) and the fresh-clone benchmark's reading of them."""

import importlib.util
import json
import subprocess
import time
from pathlib import Path

from decodiff.harness.timings import Timings

ROOT = Path(__file__).resolve().parents[2]


def _run_phases():
    spec = importlib.util.spec_from_file_location("run_phases", ROOT / "benchmarks" / "run_phases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phases_add_split_and_write(tmp_path):
    t = Timings()
    with t.phase("data"):
        time.sleep(0.02)
    t.add("training", 10.0, 18.0)
    t.split("training", "cache", 2.5, 4.0)  # the latent cache, built inside the training call
    t.split("training", "cache", 0.0)  # nothing to move: no change
    t.rates["train_steps_per_second"] = 2.2
    assert t.phases["training"] == {"seconds": 7.5, "cpu_seconds": 14.0}
    assert t.phases["cache"] == {"seconds": 2.5, "cpu_seconds": 4.0}
    assert t.phases["data"]["seconds"] >= 0.02
    assert list(t.phases) == ["data", "training", "cache"]
    assert "training 7.5s" in t.line() and "train_steps_per_second 2.2" in t.line()
    written = json.loads(t.write(tmp_path).read_text())
    assert written["total_seconds"] == round(sum(p["seconds"] for p in t.phases.values()), 2)


def test_fresh_clone_bench_reads_a_run_folder(tmp_path):
    run = tmp_path / "demo-bench-1"
    run.mkdir()
    t = Timings()
    for name, wall in (("data", 1.0), ("vae", 0.5), ("training", 300.0), ("evaluation", 20.0), ("report", 5.0)):
        t.add(name, wall, wall * 1.5)
    t.split("training", "cache", 12.0, 20.0)
    t.rates.update({"train_steps_per_second": 3.1, "eval_images_per_second": 8.1})
    t.write(run)
    (tmp_path / "first.out").write_text(f"something else\n{run / 'report.md'}\n")
    rp = _run_phases()
    got = rp.phases_of_output(tmp_path / "first.out", wall=340.0, before={"set-up": 60.0})
    assert got["phases"] == {
        "set-up": 60.0,
        "data": 1.0,
        "vae": 0.5,
        "training": 288.0,
        "evaluation": 20.0,
        "report": 5.0,
        "cache": 12.0,
        "other": 13.5,
    }
    assert got["rates"]["train_steps_per_second"] == 3.1
    out = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "fresh_clone_bench.sh"), "--parse", str(run)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["phases"]["training"] == 288.0
    missing = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "fresh_clone_bench.sh"), "--parse", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "timings.json not found" in missing.stderr
