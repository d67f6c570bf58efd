"""Shard runs: parallel = serial byte for byte, resumable after a kill, bad samples, bounds, --verify."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from decodiff.datasets.imageio import DataError, read_mask, read_rgb
from decodiff.datasets.manifest import MANIFEST, Manifest, verify_shards
from decodiff.datasets.records import Sample
from decodiff.datasets.registry import read_dataset
from decodiff.datasets.shards import STATE, _Job, plan_units, shard_dataset, write_shards, write_unit
from decodiff.datasets.stream import ShardStream


def digests(manifest):
    return [(s.name, s.count, s.sha256) for s in manifest.shards]


def streamed(out, split, **kw):
    return {s["key"]: s for s in ShardStream.from_manifest(out, split, **kw)}


def test_parallel_run_is_byte_identical_and_round_trips(realiad_root, tmp_path):
    serial = shard_dataset("realiad", realiad_root, tmp_path / "w1", max_count=3)
    parallel = shard_dataset("realiad", realiad_root, tmp_path / "w2", max_count=3, workers=2)
    assert digests(serial) == digests(parallel) and serial.checksum == parallel.checksum
    assert {s.split for s in serial.shards} == {"train", "test"} and all(s.count <= 3 for s in serial.shards)
    assert serial.counts["test"]["toy"] == {"normal": 5, "anomalous": 2, "defects": {"good": 5, "HS": 2}, "no_mask": 0}
    assert serial.image_size == [16, 16] and serial.has_masks
    assert serial.args["root"] == str(realiad_root) and serial.args["max_count"] == 3
    assert not (tmp_path / "w2" / STATE).exists() and not list((tmp_path / "w2").glob("*.tmp*"))
    originals = {s.key: s for s in read_dataset("realiad", realiad_root)}
    for split in ("train", "test"):
        got = streamed(tmp_path / "w2", split)
        assert sorted(got) == sorted(k for k, s in originals.items() if s.split == split)
        for key, s in got.items():
            o = originals[key]
            assert np.array_equal(s["image"], o.image())  # JPEG bytes pass through unchanged
            assert s["meta"]["view"] == o.meta()["view"] and s["meta"]["category"] == o.category
            if o.label:
                assert np.array_equal(s["mask"], o.mask())


@pytest.mark.parametrize("layout", ["visa_raw_root", "mpdd_root", "folder_root", "visa_converted_root"])
def test_round_trip_of_each_layout(layout, request, tmp_path):
    root = request.getfixturevalue(layout)
    name = {"visa_raw_root": "visa", "mpdd_root": "mpdd", "folder_root": "folder", "visa_converted_root": "visa"}[
        layout
    ]
    m = shard_dataset(name, root, tmp_path / "s", resize=12)
    originals = {s.key: s for s in read_dataset(name, root)}
    got = {**streamed(tmp_path / "s", "train"), **streamed(tmp_path / "s", "test")}
    assert sorted(got) == sorted(originals) and m.image_size == [12, 12]
    for key, s in got.items():
        o = originals[key]
        assert (s["meta"]["label"], s["meta"]["defect"], s["meta"]["split"]) == (o.label, o.defect, o.split)
        assert s["image"].shape == (12, 12, 3)
        if o.label:
            assert s["mask"].shape == (12, 12) and s["mask"].any()


def _children(pid):
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_when_blocked(root, out, fifo, workers):
    """Shard in a child process whose last sample reads from a named pipe: the run blocks in the middle
    of its last unit, deterministically; then SIGKILL the child alone (not its process group): its
    worker processes must die with it. Returns the worker pids seen."""
    code = (
        "from decodiff.datasets.registry import read_dataset; from decodiff.datasets.shards import write_shards; "
        f"samples = list(read_dataset('mpdd', {str(root)!r})); samples[-1].source = {str(fifo)!r}; "
        f"write_shards(samples, {str(out)!r}, dataset='mpdd', max_count=3, workers={workers})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen = []
    try:
        deadline = time.monotonic() + 60
        # 6 units: train 3+1 per category, test 3 per category; the last never finishes
        while len(list((out / STATE).glob("unit-*.json"))) < 5 or not list(out.glob("*.tar.tmp-*")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the shard run did not reach the blocked unit"
            seen = sorted(set(seen) | set(_children(proc.pid)))
            time.sleep(0.05)
        seen = sorted(set(seen) | set(_children(proc.pid)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in seen if _alive(w)], "worker processes outlived the killed run"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone already: no worker outlived the run
            pass
        proc.wait()
    return seen


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_run_resumes_without_rewriting_finished_shards(mpdd_root, tmp_path, workers):
    out = tmp_path / "s"
    fifo = tmp_path / "blocking.png"
    os.mkfifo(fifo)
    seen = _kill_when_blocked(mpdd_root, out, fifo, workers)
    assert len(seen) >= (2 if workers == 2 else 0)
    assert not (out / "manifest.json").exists()
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.tar")}
    assert len(finished) == 5 and len(list(out.glob("*.tar.tmp-*"))) == 1  # the killed unit: a temporary file only
    logs = []
    m = shard_dataset("mpdd", mpdd_root, out, max_count=3, workers=workers, log=logs.append)
    assert any("resuming: 5 of 6 units" in line for line in logs)
    assert any("taking over the lock of" in line for line in logs)  # the killed run's, not refused
    for name, ident in finished.items():
        p = out / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == ident  # not rewritten
    assert not list(out.glob("*.tmp*")) and not (out / STATE).exists()
    fresh = shard_dataset("mpdd", mpdd_root, tmp_path / "fresh", max_count=3)
    assert digests(m) == digests(fresh)
    assert sum(s.count for s in m.shards) == 14


def test_rerun_is_a_no_op_and_other_arguments_are_refused(mpdd_root, tmp_path):
    out = tmp_path / "s"
    first = shard_dataset("mpdd", mpdd_root, out)
    logs = []
    again = shard_dataset("mpdd", mpdd_root, out, log=logs.append)
    assert again.checksum == first.checksum and "already complete" in logs[0]
    with pytest.raises(DataError, match="already holds a finished shard set made from other data or arguments"):
        shard_dataset("mpdd", mpdd_root, out, resize=16)


def test_bad_samples_stop_the_run_or_are_skipped_and_listed(mpdd_root, tmp_path):
    cat = mpdd_root / "bracket_black"
    (cat / "train" / "good" / "001.png").write_bytes(b"not a png at all")
    png = (cat / "train" / "good" / "002.png").read_bytes()
    (cat / "train" / "good" / "002.png").write_bytes(png[: len(png) // 2])  # truncated
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(cat / "ground_truth" / "scratches" / "000_mask.png")
    (mpdd_root / "tubes" / "ground_truth" / "scratches" / "001.png").unlink()  # anomalous image without a mask
    with pytest.raises(DataError, match=r"tubes/test/scratches/001.png: anomalous test image without a mask"):
        shard_dataset("mpdd", mpdd_root, tmp_path / "a")
    with pytest.raises(DataError, match=r"bracket_black/train/good/001.png: not a readable image"):
        shard_dataset("mpdd", mpdd_root, tmp_path / "b", categories=["bracket_black"])
    assert not (tmp_path / "b" / "manifest.json").exists() and not list((tmp_path / "b").glob("*.tar"))
    logs = []
    m = shard_dataset("mpdd", mpdd_root, tmp_path / "c", skip_bad=True, workers=2, log=logs.append)
    reasons = {s["source"].split("mpdd/")[-1]: s["reason"] for s in m.skipped}
    assert sorted(reasons) == [
        "bracket_black/test/scratches/000.png",
        "bracket_black/train/good/001.png",
        "bracket_black/train/good/002.png",
        "tubes/test/scratches/001.png",
    ]
    assert (
        "000_mask.png: mask size 10x10 differs from its image 24x24" in reasons["bracket_black/test/scratches/000.png"]
    )
    assert "not a readable image (image file is truncated)" in reasons["bracket_black/train/good/002.png"]
    assert "without a mask" in reasons["tubes/test/scratches/001.png"]
    assert len([x for x in logs if "skipped" in x]) == 1  # the reader's; workers warn on stderr
    assert m.counts["train"]["bracket_black"]["normal"] == 2 and m.counts["test"]["tubes"]["anomalous"] == 1
    assert sum(s.count for s in m.shards) == 14 - 4
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["skipped"] == m.skipped


def test_shards_stay_within_the_size_bound(tmp_path):
    rng = np.random.default_rng(0)
    samples = [
        Sample(
            key=f"c/train/good/{i}",
            dataset="x",
            category="c",
            split="train",
            label=0,
            defect="good",
            source=f"mem{i}",
            load_image=lambda a=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8): a,  # noqa: B008 (one image per sample)
        )
        for i in range(12)
    ]
    # the planner counts on in-memory images being small; the writer still keeps every tar under the bound
    (unit,) = plan_units(samples, max_bytes=1 << 20, max_count=100)
    out = tmp_path / "s"
    (out / STATE).mkdir(parents=True)
    rec = write_unit(unit, _Job(str(out), None, None, 14 << 10, False))
    names = [s["name"] for s in rec["shards"]]
    assert names[:3] == ["train-c-00000.tar", "train-c-00000_1.tar", "train-c-00000_2.tar"]
    assert all(s["bytes"] <= 14 << 10 for s in rec["shards"]) and sum(s["count"] for s in rec["shards"]) == 12
    m = write_shards(samples, tmp_path / "t", dataset="x", max_bytes=14 << 10)
    assert len(m.shards) >= 4 and all(s.bytes <= 14 << 10 for s in m.shards)
    keys = [s["key"] for s in ShardStream.from_manifest(tmp_path / "t", "train")]
    assert keys == [s.key for s in samples]


def test_verify_finds_a_changed_shard(mpdd_root, tmp_path):
    out = tmp_path / "s"
    m = shard_dataset("mpdd", mpdd_root, out, verify=True)
    assert verify_shards(out) == []
    path = out / m.shards[0].name
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF
    path.write_bytes(bytes(data))
    assert verify_shards(out) == [f"{path}: sha256 differs from the manifest's"]
    with pytest.raises(DataError, match="verification failed.*sha256 differs"):
        shard_dataset("mpdd", mpdd_root, out, verify=True)
    path.write_bytes(bytes(data[:-1024]))
    assert "bytes, the manifest says" in verify_shards(out)[0]
    assert Manifest.load(out).checksum == m.checksum
    img = read_rgb(next(iter((mpdd_root / "tubes" / "test" / "good").iterdir())))
    assert img.shape == (24, 24, 3) and read_mask(mpdd_root / "tubes" / "ground_truth" / "scratches" / "000.png").any()


def test_shards_inside_the_data_set_folder_are_refused_and_skipped_samples_keep_their_keys(mpdd_root, tmp_path):
    before = sorted(p.relative_to(mpdd_root) for p in mpdd_root.rglob("*"))
    for out in (mpdd_root, mpdd_root / "shards"):
        with pytest.raises(DataError, match=rf"{out}: the shard folder is inside the data set folder {mpdd_root}"):
            shard_dataset("mpdd", mpdd_root, out)
    assert sorted(p.relative_to(mpdd_root) for p in mpdd_root.rglob("*")) == before  # nothing written there
    (mpdd_root / "tubes" / "ground_truth" / "scratches" / "001.png").unlink()
    m = shard_dataset("mpdd", mpdd_root, tmp_path / "s", skip_bad=True, log=lambda _: None)
    assert [s["key"] for s in m.skipped] == ["tubes/test/scratches/001"]


def test_a_run_that_finds_the_set_finished_once_it_has_the_lock_writes_nothing(mpdd_root, tmp_path, monkeypatch):
    """Between this run's look for a manifest and its lock, another run finishes the set (and deletes its
    lock file with its state): this run then reuses the set instead of rewriting every shard."""
    import decodiff.datasets.shards as shards

    out = tmp_path / "s"
    other = (
        "from decodiff.datasets.registry import read_dataset; from decodiff.datasets.shards import write_shards; "
        f"write_shards(read_dataset('mpdd', {str(mpdd_root)!r}), {str(out)!r}, dataset='mpdd', max_count=3)"
    )
    lock, finished = shards._lock, {}

    def late_lock(where, log):  # the other run (a real process) finishes while this one gets to its lock
        subprocess.run([sys.executable, "-c", other], check=True)
        finished.update({p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()})
        return lock(where, log)

    monkeypatch.setattr(shards, "_lock", late_lock)
    logs = []
    m = write_shards(read_dataset("mpdd", mpdd_root), out, dataset="mpdd", max_count=3, log=logs.append)
    assert any("already complete" in line for line in logs) and MANIFEST in finished
    assert m.checksum == Manifest.load(out).checksum
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()} == finished  # no .shard-run
