"""Fault injection: the failure catalogue of issue 13, each case run as real `decodiff` commands
(subprocesses) on a tiny generated demo set, then a table: case, expected, got, pass.

What it does, in order: one tiny training (demo set, shards, small VAE, 2 steps) in a work folder,
then per case a copy of what it damages (shards, checkpoint, a native folder) and the command a
user would run on it. Cases that need processes to meet (kill -9 of a sharding run, two runs at
once, SIGTERM, an MLflow server that goes away) start and stop them for real. Every error case
must end with exit code != 0, one line on stderr naming the file or key (no traceback), and no
result presented as complete (no summary.json in a run folder, no manifest.json in a shard folder).

    python benchmarks/fault_injection.py [--work DIR] [--only NAME ...] [--json]

Exit code 0 when every case passes, 1 otherwise (CI runs it: tests/test_fault_injection.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from decodiff.harness.mlflow_server import LocalServer

BIN = Path(sys.executable).parent
DECODIFF = str(BIN / "decodiff")
BASE = """extends: tiny
run: {{name: fi, out_dir: {work}/runs, cache_dir: {work}/cache}}
data:
  categories: [grass]
  demo: {{categories: [grass], n_train: 4, n_test_good: 2, n_test_per_defect: 1}}
vae: {{steps: 2, batch_size: 4}}
train: {{max_steps: 2, batch_size: 4, warmup: 1, log_every: 1}}
metrics: {{bootstrap: 0}}
"""


@dataclass
class Outcome:
    ok: bool
    got: str


@dataclass
class Case:
    name: str
    expected: str
    run: Callable[[Lab], Outcome]


class Lab:
    """The work folder, the base config and the tiny trained model every case starts from."""

    def __init__(self, work: Path):
        self.work = work
        self.config = work / "base.yaml"
        self.config.write_text(BASE.format(work=work))
        self.env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            DECODIFF_LOCK_TIMEOUT="600",
            OMP_NUM_THREADS="1",
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            PYTHONUNBUFFERED="1",
        )
        self.env.pop("DECODIFF_DEBUG", None)
        self._checkpoint: Path | None = None

    def cmd(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [DECODIFF, *args], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, *args: str, log: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [DECODIFF, *args],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            start_new_session=True,
        )

    @property
    def checkpoint(self) -> Path:
        """The tiny model (trained once; its cache also holds the demo set, shards and VAE)."""
        if self._checkpoint is None:
            p = self.cmd("train", "--config", str(self.config), "--json")
            if p.returncode:
                raise RuntimeError(f"the base training failed:\n{p.stderr[-3000:]}")
            self._checkpoint = Path(json.loads(p.stdout)["checkpoint"])
        return self._checkpoint

    @property
    def shards(self) -> Path:
        _ = self.checkpoint
        (found,) = (self.work / "cache" / "shards").glob("demo-*[!k]")  # not the .lock file
        return found

    @property
    def demo_root(self) -> Path:
        _ = self.checkpoint
        (found,) = [p for p in (self.work / "cache").glob("demo-*") if p.is_dir()]
        return found

    def copy(self, src: Path, name: str) -> Path:
        dst = self.work / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        return dst


# ---- checks -----------------------------------------------------------------------------------
def one_line_error(p: subprocess.CompletedProcess | tuple[int, str], code: int | None = None, *needles: str) -> Outcome:
    """A clear error: exit code (non-zero, or `code`), a `decodiff: error:` line holding every needle,
    no traceback."""
    rc, err = (p.returncode, p.stderr) if isinstance(p, subprocess.CompletedProcess) else p
    lines = [line for line in err.splitlines() if line.startswith("decodiff: ")]
    last = lines[-1] if lines else (err.strip().splitlines() or ["(no output)"])[-1]
    ok = (
        (rc == code if code is not None else rc != 0)
        and "Traceback" not in err
        and bool(lines)
        and all(n in last for n in needles)
    )
    return Outcome(ok, f"exit {rc}: {last[:150]}")


def run_folders(lab: Lab, kind: str) -> list[Path]:
    return sorted((lab.work / "runs").glob(f"fi-{kind}-*"))


def no_complete_run(lab: Lab, before: list[Path], kind: str) -> bool:
    """No run folder made since `before` holds summary.json (a half-made run is never presented as done)."""
    return not any((d / "summary.json").is_file() for d in run_folders(lab, kind) if d not in before)


# ---- 1. truncated shards ----------------------------------------------------------------------
def _test_tar(folder: Path) -> Path:
    return sorted(folder.glob("test-*.tar"))[0]


def _member_offsets(tar: Path) -> list[tuple[str, int]]:
    with tarfile.open(tar) as t:
        return [(m.name, m.offset) for m in t.getmembers()]


def cut_at_sample_boundary(tar: Path) -> None:
    """Keep the whole samples before the last one: a valid, shorter tar."""
    members = _member_offsets(tar)
    last_key = members[-1][0].split(".", 1)[0]
    first_of_last = next(off for name, off in members if name.split(".", 1)[0] == last_key)
    with open(tar, "r+b") as f:
        f.truncate(first_of_last)


def cut_inside_sample(tar: Path, mid_member: bool) -> None:
    """Cut the last sample after its first member (a record without meta.json) or inside a member."""
    members = _member_offsets(tar)
    last_key = members[-1][0].split(".", 1)[0]
    own = [off for name, off in members if name.split(".", 1)[0] == last_key]
    with open(tar, "r+b") as f:
        f.truncate(own[1] - 300 if mid_member else own[1])


def truncated(lab: Lab, how: str, via_pipe: bool) -> Outcome:
    shards = lab.copy(lab.shards, f"shards-{how}-{'pipe' if via_pipe else 'dir'}")
    tar = _test_tar(shards)
    if how == "boundary":
        cut_at_sample_boundary(tar)
    else:
        cut_inside_sample(tar, mid_member=how == "mid-member")
    location = f"pipe:cat {shards}/{{name}}" if via_pipe else str(shards)
    before = run_folders(lab, "evaluate")
    p = lab.cmd("evaluate", "--checkpoint", str(lab.checkpoint), "--config", str(lab.config), f"data.shards={location}")
    needle = {
        "boundary": "the shard manifest says" if via_pipe else "the manifest says",
        "between-members": "no meta.json" if via_pipe else "the manifest says",
        "mid-member": "truncated tar" if via_pipe else "the manifest says",
    }[how]
    out = one_line_error(p, 1, tar.name, needle)
    return Outcome(out.ok and no_complete_run(lab, before, "evaluate"), out.got)


# ---- 2. a final model or VAE with a flipped byte -------------------------------------------------------
def flipped_model(lab: Lab) -> Outcome:
    ckpt = lab.copy(lab.checkpoint, "ckpt-flipped")
    path = ckpt / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    p = lab.cmd("evaluate", "--checkpoint", str(ckpt), "--config", str(lab.config))
    return one_line_error(p, 1, str(path), "sha256")


def flipped_vae(lab: Lab) -> Outcome:
    info = json.loads((lab.checkpoint / "info.json").read_text())
    vae = lab.copy(Path(info["vae_location"]), "vae-flipped")
    (weights,) = vae.glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    p = lab.cmd("evaluate", "--checkpoint", str(lab.checkpoint), "--config", str(lab.config), f"vae.pretrained={vae}")
    return one_line_error(p, 1, str(weights), "sha256")


# ---- 3. kill -9 of a sharding run with workers ------------------------------------------------------
def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _slow_folder(lab: Lab) -> Path:
    """An MVTec-AD-layout folder whose sharding (noise images, resized) takes seconds: time to kill it."""
    import numpy as np
    from PIL import Image

    root = lab.work / "slow-set"
    if (root / "done").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("test", 8)):
        folder = root / "noise" / split / "good"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (384, 384, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    (root / "done").write_text("")
    return root


def killed_shard_workers(lab: Lab) -> Outcome:
    root = _slow_folder(lab)
    out = lab.work / "shards-killed"
    shutil.rmtree(out, ignore_errors=True)
    args = (
        "data",
        "shard",
        "--dataset",
        "mvtec",
        "--root",
        str(root),
        "--out",
        str(out),
        "--workers",
        "2",
        "--max-count",
        "4",
        "--resize",
        "256",
    )
    proc = lab.start(*args, log=lab.work / "shard-killed.log")
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers = [k for k in _children(proc.pid) if _alive(k)]
        if len(workers) >= 2 and list(out.glob("*.tar.tmp-*")) and list((out / ".shard-run").glob("unit-*.json")):
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        return Outcome(False, f"the shard run ended (exit {proc.returncode}) before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    end = time.monotonic() + 10
    while time.monotonic() < end and any(_alive(w) for w in workers):
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:  # do not leave them to the machine
        os.kill(w, signal.SIGKILL)
    p = lab.cmd(*args)
    ok = (
        len(workers) >= 2
        and not left
        and p.returncode == 0
        and "taking over the lock" in p.stderr
        and "resuming" in p.stderr
        and (out / "manifest.json").is_file()
    )
    return Outcome(
        ok,
        f"{len(workers)} workers, {len(left)} alive after the kill; rerun exit {p.returncode}"
        f"{', took over the lock' if 'taking over the lock' in p.stderr else ''}"
        f"{', resumed' if 'resuming' in p.stderr else ''}",
    )


# ---- 4. runs at once --------------------------------------------------------------------------------
def two_benches_cold_cache(lab: Lab) -> Outcome:
    folder = lab.work / "together"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    cfg = folder / "cfg.yaml"
    cfg.write_text(BASE.format(work=folder))
    procs = [lab.start("bench", "--config", str(cfg), "--json", log=folder / f"bench-{i}.log") for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    codes = [p.returncode for p in procs]
    logs = [(folder / f"bench-{i}.log").read_text() for i in range(2)]
    reports = [json.loads(o)["report"] if c == 0 else None for o, c in zip(outs, codes)]
    waited = sum("waiting for" in log for log in logs)
    trained = sum("train: UNet" in log for log in logs)
    ok = (
        codes == [0, 0]
        and len({*reports}) == 2
        and all(r and Path(r).is_file() for r in reports)
        and trained == 1
        and waited >= 1
        and not any("Traceback" in log for log in logs)
    )
    return Outcome(
        ok, f"exits {codes}, {len({*reports} - {None})} reports, {trained} training(s), {waited} run(s) waited"
    )


def two_trainings_one_out(lab: Lab) -> Outcome:
    _ = lab.checkpoint  # warm cache: both go straight for the training folder
    out = lab.work / "train-together"
    shutil.rmtree(out, ignore_errors=True)
    first = lab.start(
        "train",
        "--config",
        str(lab.config),
        "--out",
        str(out),
        "train.max_steps=100000",
        log=lab.work / "train-first.log",
    )
    deadline = time.monotonic() + 120
    lock = out / ".train.lock"
    while time.monotonic() < deadline and first.poll() is None and not (lock.is_file() and lock.stat().st_size):
        time.sleep(0.1)
    second = lab.cmd("train", "--config", str(lab.config), "--out", str(out), "train.max_steps=100000")
    running = first.poll() is None
    if running:
        os.kill(first.pid, signal.SIGTERM)  # done with it: it checkpoints and stops
    first.communicate(timeout=900)
    out1 = Outcome(running and first.returncode == 75, f"the first ran on (stopped: exit {first.returncode})")
    out2 = one_line_error(second, 1, str(out), "another run is writing there")
    return Outcome(out1.ok and out2.ok, f"{out1.got}; second {out2.got}")


# ---- 5. pre-flight ------------------------------------------------------------------------------------
def bad_tracking_store(lab: Lab) -> Outcome:
    bad = lab.work / "bad.db"
    bad.write_text("this is not a database\n")
    before = run_folders(lab, "bench")
    t0 = time.monotonic()
    p = lab.cmd("bench", "--config", str(lab.config), f"tracking.uri=sqlite:///{bad}")
    secs = time.monotonic() - t0
    out = one_line_error(p, 2, str(bad), "not an SQLite database")
    fresh = [d for d in run_folders(lab, "bench") if d not in before]
    return Outcome(out.ok and not fresh, f"{out.got} ({secs:.0f}s, {len(fresh)} run folders)")


def train_out_is_file(lab: Lab) -> Outcome:
    target = lab.work / "a-file"
    target.write_text("x")
    return one_line_error(
        lab.cmd("train", "--config", str(lab.config), "--out", str(target)),
        2,
        str(target),
        "expected a training folder",
    )


# ---- 6. VisA split CSV -----------------------------------------------------------------------------------
def _visa_root(lab: Lab, name: str) -> Path:
    import numpy as np
    from PIL import Image

    root = lab.work / name
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    rows = ["object,split,label,image,mask"]
    for kind, n in (("Normal", 4), ("Anomaly", 2)):
        folder = root / "candle" / "Data" / "Images" / kind
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.JPG")
            if kind == "Normal":
                split = "train" if i < 3 else "test"
                rows.append(f"candle,{split},normal,candle/Data/Images/Normal/{i:03d}.JPG,")
            else:
                masks = root / "candle" / "Data" / "Masks" / "Anomaly"
                masks.mkdir(parents=True, exist_ok=True)
                m = np.zeros((16, 16), np.uint8)
                m[4:8, 4:8] = 255
                Image.fromarray(m).save(masks / f"{i:03d}.png")
                rows.append(
                    f"candle,test,anomaly,candle/Data/Images/Anomaly/{i:03d}.JPG,candle/Data/Masks/Anomaly/{i:03d}.png"
                )
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def visa_csv(lab: Lab, fault: str) -> Outcome:
    root = _visa_root(lab, f"visa-{fault}")
    csv = root / "split_csv" / "1cls.csv"
    text = csv.read_text()
    if fault == "extra-field":
        csv.write_text(text.replace("Normal/001.JPG,", "Normal/001.JPG,,surplus", 1))
    elif fault == "non-utf8":
        csv.write_bytes(text.replace("candle,train,normal", "candle,train,normal", 1).encode() + b"candle\xff,test\n")
    elif fault == "bom":
        csv.write_bytes(b"\xef\xbb\xbf" + text.encode())
    elif fault == "dotdot":
        csv.write_text(text.replace("candle/Data/Images/Normal/002.JPG", "candle/../../outside/002.JPG", 1))
    out = lab.work / f"visa-{fault}-shards"
    shutil.rmtree(out, ignore_errors=True)
    p = lab.cmd("data", "shard", "--dataset", "visa", "--root", str(root), "--out", str(out))
    if fault == "bom":
        ok = p.returncode == 0 and (out / "manifest.json").is_file()
        return Outcome(ok, f"exit {p.returncode}, {'a manifest' if ok else p.stderr.strip()[-150:]}")
    needle = {"extra-field": "fields, expected 5", "non-utf8": "not UTF-8", "dotdot": "leaves the data set folder"}[
        fault
    ]
    out_ = one_line_error(p, 1, str(csv), needle)
    return Outcome(out_.ok and not (out / "manifest.json").exists(), out_.got)


# ---- 7. SIGTERM ---------------------------------------------------------------------------------------------
def sigterm_training(lab: Lab) -> Outcome:
    _ = lab.checkpoint
    out = lab.work / "train-sigterm"
    shutil.rmtree(out, ignore_errors=True)
    log = lab.work / "train-sigterm.log"
    proc = lab.start("train", "--config", str(lab.config), "--out", str(out), "train.max_steps=100000", log=log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and "train: 1/" not in log.read_text():
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=300)
    err = log.read_text()
    line = next((x for x in err.splitlines() if x.startswith("decodiff: stopped")), "")
    saved = (out / "train_state" / "latest.json").is_file()
    ok = proc.returncode == 75 and "at step" in line and saved and "Traceback" not in err
    return Outcome(ok, f"exit {proc.returncode}: {line[:110] or err.strip()[-150:]}")


# ---- 8. smaller items ------------------------------------------------------------------------------------
def empty_category(lab: Lab) -> Outcome:
    root = lab.copy(lab.demo_root, "demo-empty-cat")
    (root / "brick" / "train" / "good").mkdir(parents=True)
    (root / "brick" / "test" / "good").mkdir(parents=True)
    p = lab.cmd("data", "shard", "--dataset", "mvtec", "--root", str(root), "--out", str(lab.work / "empty-cat-shards"))
    return one_line_error(p, 1, "no images in category 'brick'")


def skip_bad_key(lab: Lab) -> Outcome:
    root = lab.copy(lab.demo_root, "demo-no-mask")
    mask = sorted((root / "grass" / "ground_truth").glob("*/*.png"))[0]
    mask.unlink()
    out = lab.work / "no-mask-shards"
    shutil.rmtree(out, ignore_errors=True)
    p = lab.cmd("data", "shard", "--dataset", "mvtec", "--root", str(root), "--out", str(out), "--skip-bad")
    skipped = json.loads((out / "manifest.json").read_text())["skipped"] if p.returncode == 0 else []
    keys = [s["key"] for s in skipped]
    want = f"grass/test/{mask.parent.name}/{mask.stem.removesuffix('_mask')}"
    return Outcome(p.returncode == 0 and keys == [want], f"exit {p.returncode}, skipped keys {keys}")


def realiad_null_class(lab: Lab) -> Outcome:
    import numpy as np
    from PIL import Image

    root = lab.work / "realiad-null"
    shutil.rmtree(root, ignore_errors=True)
    img = root / "realiad_256" / "toy" / "OK" / "S0001" / "toy_0001_OK_C1_20230101.jpg"
    img.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    (root / "realiad_jsons").mkdir(parents=True)
    doc = {
        "meta": {"normal_class": "OK"},
        "train": [{"category": "toy", "anomaly_class": None, "image_path": "OK/S0001/" + img.name, "mask_path": None}],
        "test": [],
    }
    json_path = root / "realiad_jsons" / "toy.json"
    json_path.write_text(json.dumps(doc))
    p = lab.cmd(
        "data",
        "shard",
        "--dataset",
        "realiad",
        "--root",
        str(root),
        "--out",
        str(lab.work / "realiad-null-out"),
        "--resolution",
        "256",
    )
    return one_line_error(p, 1, str(json_path), "train[0]", "anomaly_class")


def shard_out_is_root(lab: Lab) -> Outcome:
    root = lab.copy(lab.demo_root, "demo-out-root")
    before = sorted(p.name for p in root.iterdir())
    p = lab.cmd("data", "shard", "--dataset", "mvtec", "--root", str(root), "--out", str(root))
    out = one_line_error(p, 1, str(root), "inside the data set folder")
    return Outcome(out.ok and sorted(q.name for q in root.iterdir()) == before, out.got)


def duplicate_yaml_key(lab: Lab) -> Outcome:
    cfg = lab.work / "dup.yaml"
    cfg.write_text("extends: tiny\ntrain:\n  lr: 0.001\n  max_steps: 3\n  lr: 0.1\n")
    return one_line_error(lab.cmd("bench", "--config", str(cfg)), 2, str(cfg), "duplicate key 'lr'")


def extends_missing(lab: Lab) -> Outcome:
    cfg = lab.work / "ext.yaml"
    cfg.write_text("extends: nosuch\n")
    return one_line_error(lab.cmd("bench", "--config", str(cfg)), 2, str(cfg), "extends: nosuch")


def resumed_progress(lab: Lab) -> Outcome:
    """A training stopped by SIGTERM and resumed: its progress counts from the step it saved."""
    out = lab.work / "train-sigterm"
    latest = out / "train_state" / "latest.json"
    if not latest.is_file():
        return Outcome(False, "no stopped training to resume (the SIGTERM case failed)")
    step = json.loads(latest.read_text())["step"]
    # a resume keeps the stopped run's config (100000 steps): resume it, and stop it again at its first step
    log = lab.work / "train-resume.log"
    proc = lab.start(
        "train", "--config", str(lab.config), "--out", str(out), "--resume", "train.max_steps=100000", log=log
    )
    deadline = time.monotonic() + 180
    bar = re.compile(r"\[decodiff\] train: (\d+)/(\d+) step")
    while time.monotonic() < deadline and proc.poll() is None and not bar.search(log.read_text()):
        time.sleep(0.1)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=300)
    first = bar.search(log.read_text())
    ok = proc.returncode == 75 and first is not None and int(first.group(1)) == step + 1
    return Outcome(
        ok,
        f"saved at step {step}; the resumed run's first progress line: "
        f"{first.group(0).replace('[decodiff] ', '') if first else '(none)'}",
    )


# ---- 9. an MLflow server that goes away mid-run -------------------------------------------------------------
def mlflow_server_gone(lab: Lab) -> Outcome:
    _ = lab.checkpoint
    folder = lab.work / "mlflow-server"
    shutil.rmtree(folder, ignore_errors=True)
    server = LocalServer(folder, lab.env)
    try:
        try:
            server.wait_up()
        except RuntimeError as e:
            return Outcome(False, f"the MLflow server did not start: {str(e)[-200:]}")
        uri = server.uri
        before = run_folders(lab, "evaluate")
        log = lab.work / "evaluate-mlflow.log"
        proc = lab.start(
            "evaluate", "--checkpoint", str(lab.checkpoint), "--config", str(lab.config), f"tracking.uri={uri}", log=log
        )
        end = time.monotonic() + 300
        # the server goes away once the run is past its pre-flight check (the first VAE line comes after it):
        # the whole evaluation lies between the kill and the run's first call to MLflow, not a fraction of a second
        while time.monotonic() < end and proc.poll() is None and "VAE:" not in log.read_text():
            time.sleep(0.1)
        server.stop()  # SIGKILL: the server vanishes
        proc.communicate(timeout=600)
        out = one_line_error((proc.returncode, log.read_text()), 1, uri, "the MLflow run is incomplete")
        return Outcome(out.ok and no_complete_run(lab, before, "evaluate"), out.got)
    finally:
        server.stop()


CASES = [
    Case(
        "1a test tar cut at a sample boundary",
        "exit 1, names the tar (size vs manifest)",
        lambda lab: truncated(lab, "boundary", False),
    ),
    Case(
        "1b test tar cut inside a sample",
        "exit 1, names the tar (size vs manifest)",
        lambda lab: truncated(lab, "mid-member", False),
    ),
    Case(
        "1c cut at a sample boundary, read through pipe:",
        "exit 1, names the tar (count vs manifest)",
        lambda lab: truncated(lab, "boundary", True),
    ),
    Case(
        "1d cut between a sample's members, pipe:",
        "exit 1, names the tar (no meta.json)",
        lambda lab: truncated(lab, "between-members", True),
    ),
    Case(
        "1e cut inside a member, pipe:",
        "exit 1, names the tar (truncated tar)",
        lambda lab: truncated(lab, "mid-member", True),
    ),
    Case("2a final model with a flipped byte", "exit 1, names model.safetensors (sha256)", flipped_model),
    Case("2b cached VAE with a flipped byte", "exit 1, names the weights file (sha256)", flipped_vae),
    Case("3 kill -9 of data shard --workers 2", "workers gone, lock taken over, rerun resumes", killed_shard_workers),
    Case(
        "4a two bench at once, one folder, cold cache",
        "both exit 0, one trains, the other waits",
        two_benches_cold_cache,
    ),
    Case("4b two train --out DIR at once", "the second refused: exit 1, names DIR", two_trainings_one_out),
    Case("5a tracking store not a database", "exit 2 before any work, names the file", bad_tracking_store),
    Case("5b train --out FILE", "exit 2 before any work, names the file", train_out_is_file),
    Case(
        "6a VisA CSV row with an extra field",
        "exit 1, names the file and line",
        lambda lab: visa_csv(lab, "extra-field"),
    ),
    Case("6b VisA CSV not UTF-8", "exit 1, names the file", lambda lab: visa_csv(lab, "non-utf8")),
    Case("6c VisA CSV with a UTF-8 BOM", "exit 0, shards written", lambda lab: visa_csv(lab, "bom")),
    Case("6d VisA CSV path with ../", "exit 1, names the file and line", lambda lab: visa_csv(lab, "dotdot")),
    Case("7 SIGTERM during training", "exit 75, 'stopped ... at step N', state saved", sigterm_training),
    Case("8a empty category", "exit 1, names the category", empty_category),
    Case("8b --skip-bad sample without a mask", "skipped with its key", skip_bad_key),
    Case("8c Real-IAD anomaly_class null", "exit 1, names the file and entry", realiad_null_class),
    Case("8d data shard --out equal to --root", "exit 1, nothing written", shard_out_is_root),
    Case("8e duplicate YAML key", "exit 2, names the file and key", duplicate_yaml_key),
    Case("8f extends: nosuch", "exit 2, names the file that says it", extends_missing),
    Case("8g progress after a resume", "counts on from the saved step", resumed_progress),
    Case("9 MLflow server gone mid-run", "exit 1, one line, no run presented as complete", mlflow_server_gone),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--only", nargs="*", default=None, help="case name prefixes to run (e.g. 1a 6)")
    ap.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="decodiff-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    lab = Lab(work.resolve())
    rows = []
    started = time.monotonic()
    for case in CASES:
        if args.only and not any(case.name.startswith(p) for p in args.only):
            continue
        t0 = time.monotonic()
        try:
            res = case.run(lab)
        except Exception as exc:  # the harness itself failed: the case fails, the table goes on
            res = Outcome(False, f"{type(exc).__name__}: {str(exc)[-200:]}")
        rows.append(
            {
                "case": case.name,
                "expected": case.expected,
                "got": res.got,
                "pass": res.ok,
                "seconds": round(time.monotonic() - t0, 1),
            }
        )
        print(f"[fault-injection] {'PASS' if res.ok else 'FAIL'} {case.name}: {res.got}", file=sys.stderr, flush=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(r["pass"] for r in rows)
    if args.json:
        print(
            json.dumps(
                {"rows": rows, "passed": passed, "total": len(rows), "seconds": round(time.monotonic() - started, 1)}
            )
        )
    else:
        print("| case | expected | got | pass |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} | {r['expected']} | {r['got'].replace('|', '/')} | {'yes' if r['pass'] else 'NO'} |")
        print(f"\n{passed} of {len(rows)} cases pass ({time.monotonic() - started:.0f} s)")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
