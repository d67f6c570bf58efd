"""Writing a data set into WebDataset tar shards with a manifest.

Shards hold one split and one category each (so a category can be streamed alone) and are
bounded in size and count. The run is planned before anything is written: the samples of
each (split, category) are cut into *units* of at most `max_count` samples and about
`max_bytes` (estimated from the files' sizes, or from the target size when resizing); a unit
becomes one tar (and, should the estimate fall short, a continuation `<name>_1.tar`).
Units are independent, so they are written in parallel by `workers` processes, and the
tars are byte-identical whatever the number of workers (fixed member order, mtime 0).

Every tar is written under a temporary name and renamed when complete; a finished unit then
leaves a record in `<out>/.shard-run/`. A killed run leaves at most temporary files and
finished units: run it again with the same arguments and it writes only the missing units.
Each unit's record carries a fingerprint of the settings and of the unit's samples (keys,
labels, files with their sizes and mtimes), so a unit whose input changed is written again
and the others are kept. The manifest is written last and `.shard-run/` removed: a shard set
without manifest.json is unfinished.

Bad samples (corrupt images, masks of the wrong size, ...) stop the run with an error that
names the file, or, with `skip_bad`, are left out with a warning and listed in the manifest.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from decodiff.datasets.files import sha256_file, write_json_atomic
from decodiff.datasets.imageio import DataError, encode_png, read_rgb
from decodiff.datasets.locks import FileLock
from decodiff.datasets.manifest import FORMAT, MANIFEST, Manifest, ShardInfo, verify_shards
from decodiff.datasets.records import Sample
from decodiff.datasets.registry import read_dataset
from decodiff.datasets.shard_record import member_key

Progress = Callable[[int, int | None], None]  # (samples done, total)
Log = Callable[[str], None]
STATE = ".shard-run"  # unfinished-run state: a lock and one record per finished unit
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def _stderr(msg: str) -> None:
    print(f"[decodiff] {msg}", file=sys.stderr, flush=True)


# ---- one sample -> one WebDataset record ----------------------------------------------------


def _resize_crop(img: Image.Image, resize: int | None, crop: int | None, resample: int) -> Image.Image:
    if resize:
        img = img.resize((resize, resize), resample)  # aspect ratio not kept (published protocol)
    if crop:
        w, h = img.size
        if crop > min(w, h):
            raise DataError(f"crop {crop} is larger than the image ({w}x{h})")
        left, top = (w - crop) // 2, (h - crop) // 2
        img = img.crop((left, top, left + crop, top + crop))
    return img


def encode_sample(
    sample: Sample, resize: int | None = None, crop: int | None = None
) -> tuple[dict[str, Any], tuple[int, int]]:
    """The WebDataset record of a sample; original bytes pass through when nothing is resized.

    The image is decoded either way, so a corrupt or truncated file fails here, naming it.
    """
    meta = sample.meta()
    rec: dict[str, Any] = {"__key__": member_key(sample.key)}
    src = Path(sample.source)
    if not resize and not crop and sample.load_image is None and src.suffix.lower() in (".png", ".jpg", ".jpeg"):
        try:
            data = src.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{src}: file not found") from None
        arr = read_rgb(data, name=str(src))
        rec[f"image.{'png' if src.suffix.lower() == '.png' else 'jpg'}"] = data
        size = arr.shape[:2]
    else:
        arr = sample.image()
        img = _resize_crop(Image.fromarray(arr), resize, crop, Image.BILINEAR)
        rec["image.png"] = encode_png(np.asarray(img))
        size = (img.size[1], img.size[0])
    mask = sample.mask()
    if mask is not None:
        if mask.shape != tuple(arr.shape[:2]):
            raise DataError(
                f"{sample.mask_source or sample.key}: mask size {mask.shape[1]}x{mask.shape[0]} differs from "
                f"its image {arr.shape[1]}x{arr.shape[0]} ({sample.source})"
            )
        m = Image.fromarray(mask.astype(np.uint8) * 255)
        # masks follow the images' interpolation; readers threshold at > 0 (published protocol)
        m = _resize_crop(m, resize, crop, Image.BILINEAR)
        rec["mask.png"] = encode_png(np.asarray(m))
    meta["size"] = [int(size[0]), int(size[1])]
    rec["meta.json"] = json.dumps(meta).encode()
    return rec, (int(size[0]), int(size[1]))


def record_bytes(rec: dict[str, Any]) -> int:
    return sum(len(v) for k, v in rec.items() if not k.startswith("__"))


# ---- tar files ------------------------------------------------------------------------------


class TarShard:
    """One tar written under a temporary name; `close` renames it and returns its ShardInfo.

    Members are `<key>.<ext>` in record order with mtime 0 and fixed owner and mode, so the
    same records always give the same bytes (and the same sha256).
    """

    def __init__(self, path: Path, split: str, category: str):
        self.path, self.split, self.category = Path(path), split, category
        self.tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._file = open(self.tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        self.count = 0
        self.bytes = 0

    def size_with(self, rec: dict[str, Any]) -> int:
        """The file's size if `rec` were the last record: headers, 512-byte padding, end blocks."""
        members = sum(512 + -(-len(v) // 512) * 512 for k, v in rec.items() if not k.startswith("__"))
        return self._file.tell() + members + tarfile.RECORDSIZE

    def write(self, rec: dict[str, Any]) -> None:
        key = rec["__key__"]
        for name, data in rec.items():
            if name.startswith("__"):
                continue
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
            self.bytes += len(data)
        self.count += 1

    def close(self) -> ShardInfo:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        return ShardInfo(
            name=self.path.name,
            split=self.split,
            category=self.category,
            count=self.count,
            bytes=self.path.stat().st_size,
            sha256=sha256_file(self.path),
        )

    def abort(self) -> None:
        try:
            self._tar.close()
            self._file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class _GroupWriter:
    """Writes one (split, category) group into size-bounded shards."""

    def __init__(self, out: Path, split: str, category: str, max_bytes: int, max_count: int):
        self.out, self.split, self.category = out, split, category
        self.max_bytes, self.max_count = max_bytes, max_count
        self.index = 0
        self.done: list[ShardInfo] = []
        self._tar: TarShard | None = None

    def write(self, rec: dict[str, Any]) -> None:
        size = record_bytes(rec)
        if self._tar is not None and (self._tar.count >= self.max_count or self._tar.bytes + size > self.max_bytes):
            self.close()
        if self._tar is None:
            name = f"{self.split}-{_safe(self.category)}-{self.index:05d}.tar"
            self._tar = TarShard(self.out / name, self.split, self.category)
        self._tar.write(rec)

    def close(self) -> None:
        if self._tar is None:
            return
        self.done.append(self._tar.close())
        self.index += 1
        self._tar = None


def _new_counts() -> dict[str, Any]:
    return {"normal": 0, "anomalous": 0, "defects": {}, "no_mask": 0}


def _count(
    counts: dict[str, dict[str, dict[str, Any]]], split: str, category: str, label: int, defect: str, has_mask: bool
) -> None:
    c = counts.setdefault(split, {}).setdefault(category, _new_counts())
    c["anomalous" if label else "normal"] += 1
    c["defects"][defect] = c["defects"].get(defect, 0) + 1
    if not has_mask:
        c["no_mask"] += 1


class ShardSetWriter:
    """Accumulates records into per-(split, category) shards; `finish` writes the manifest last."""

    def __init__(self, out: Path, *, max_bytes: int = 256 << 20, max_count: int = 2000):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_count = max_bytes, max_count
        self.writers: dict[tuple[str, str], _GroupWriter] = {}
        self.counts: dict[str, dict[str, dict[str, Any]]] = {}
        self.sizes: dict[str, int] = {}
        self.categories: list[str] = []
        self.has_masks = True
        self.n = 0

    def add(
        self,
        rec: dict[str, Any],
        *,
        split: str,
        category: str,
        label: int,
        defect: str,
        has_mask: bool,
        size: tuple[int, int] | None = None,
    ) -> None:
        if category not in self.categories:
            self.categories.append(category)
        group = (split, category)
        if group not in self.writers:
            self.writers[group] = _GroupWriter(self.out, split, category, self.max_bytes, self.max_count)
        self.writers[group].write(rec)
        if size is not None:
            k = f"{size[0]}x{size[1]}"
            self.sizes[k] = self.sizes.get(k, 0) + 1
        _count(self.counts, split, category, label, defect, has_mask)
        self.has_masks = self.has_masks and has_mask
        self.n += 1

    def finish(self, dataset: str, args: dict[str, Any] | None = None) -> Manifest:
        for w in self.writers.values():
            w.close()
        manifest = Manifest(
            dataset=dataset,
            categories=self.categories,
            shards=[s for w in self.writers.values() for s in w.done],
            counts=self.counts,
            image_size=_single_size(self.sizes),
            args={**(args or {}), "max_bytes": self.max_bytes, "max_count": self.max_count, "created": _now()},
            has_masks=self.has_masks,
            image_sizes=self.sizes,
        )
        manifest.save(self.out)
        return manifest


def _single_size(sizes: dict[str, int]) -> list[int] | None:
    if len(sizes) != 1:
        return None
    h, w = next(iter(sizes)).split("x")
    return [int(h), int(w)]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- planning -------------------------------------------------------------------------------


@dataclass
class Unit:
    """Consecutive samples of one (split, category) that become one tar."""

    index: int
    split: str
    category: str
    part: int
    samples: list[Sample]

    @property
    def stem(self) -> str:
        return f"{self.split}-{_safe(self.category)}-{self.part:05d}"

    def shard_name(self, continuation: int = 0) -> str:
        return f"{self.stem}.tar" if continuation == 0 else f"{self.stem}_{continuation}.tar"


def _file_id(path: str | None) -> tuple[int, int]:
    """(size, mtime_ns) of a file, (-1, -1) where it cannot be read (the writer will say why)."""
    if not path:
        return (-1, -1)
    try:
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns)
    except OSError:
        return (-1, -1)


def _estimate(sample: Sample, ids: dict[str, tuple[int, int]], resize: int | None, crop: int | None) -> int:
    """Bytes the sample will take in a tar: pass-through sizes, or the raw size of a resized image."""
    side = crop or resize
    if side:
        image = side * side * 3
        mask = side * side // 4 if sample.mask_source or sample.load_mask else 0
    else:
        image = max(ids[sample.source][0], 0) if sample.load_image is None else 0
        mask = 2 * max(ids[sample.mask_source][0], 0) if sample.mask_source else 0
    return image + mask + 4096  # three tar headers with padding, meta.json


def plan_units(
    samples: Sequence[Sample],
    *,
    max_bytes: int,
    max_count: int,
    resize: int | None = None,
    crop: int | None = None,
    ids: dict[str, tuple[int, int]] | None = None,
) -> list[Unit]:
    """Units in (split, category) groups, splits in train/val/test order, categories in reader order."""
    if max_count < 1 or max_bytes < 1:
        raise DataError(f"shard bounds must be positive (max_count={max_count}, max_bytes={max_bytes})")
    ids = ids if ids is not None else _ids(samples)
    groups: dict[tuple[str, str], list[Sample]] = {}
    cats: dict[str, int] = {}
    for s in samples:
        cats.setdefault(s.category, len(cats))
        groups.setdefault((s.split, s.category), []).append(s)
    owners: dict[str, str] = {}
    for cat in cats:
        other = owners.setdefault(_safe(cat), cat)
        if other != cat:
            raise DataError(f"categories {other!r} and {cat!r} map to the same shard name {_safe(cat)!r}")
    units: list[Unit] = []
    for split, cat in sorted(groups, key=lambda g: (SPLIT_ORDER.get(g[0], 9), g[0], cats[g[1]])):
        part, chunk, size = 0, [], tarfile.RECORDSIZE
        for s in groups[(split, cat)]:
            est = _estimate(s, ids, resize, crop)
            if chunk and (len(chunk) >= max_count or size + est > max_bytes):
                units.append(Unit(len(units), split, cat, part, chunk))
                part, chunk, size = part + 1, [], tarfile.RECORDSIZE
            chunk.append(s)
            size += est
        units.append(Unit(len(units), split, cat, part, chunk))
    return units


def _ids(samples: Sequence[Sample]) -> dict[str, tuple[int, int]]:
    ids: dict[str, tuple[int, int]] = {}
    for s in samples:
        for p in (s.source, s.mask_source):
            if p and p not in ids:
                ids[p] = _file_id(p)
    return ids


def unit_fingerprint(unit: Unit, ids: dict[str, tuple[int, int]], settings: dict[str, Any]) -> str:
    """What a unit's tars depend on: the settings, its name and each sample's key, labels and files."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(f"\n#{unit.stem}".encode())
    for s in unit.samples:
        h.update(
            json.dumps(
                [
                    s.key,
                    s.split,
                    s.category,
                    s.label,
                    s.defect,
                    s.source,
                    ids.get(s.source),
                    s.mask_source,
                    ids.get(s.mask_source or ""),
                    s.extra,
                ],
                default=str,
            ).encode()
        )
    return h.hexdigest()


# ---- writing units (in this process or in worker processes) ---------------------------------


@dataclass(frozen=True)
class _Job:
    out: str
    resize: int | None
    crop: int | None
    max_bytes: int
    skip_bad: bool


_counter: Any = None  # per-sample progress counter shared with worker processes


def die_with_parent(parent: int) -> None:
    """Have the kernel send SIGKILL to this process when its parent dies (Linux), so that a killed
    run leaves no orphaned workers behind; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(counter: Any, parent: int) -> None:
    global _counter
    _counter = counter
    die_with_parent(parent)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _tick() -> None:
    if _counter is not None:
        with _counter.get_lock():
            _counter.value += 1


def _unit_record(out: Path, index: int) -> Path:
    return out / STATE / f"unit-{index:06d}.json"


def write_unit(unit: Unit, job: _Job, fingerprint: str = "") -> dict[str, Any]:
    """Write one unit's tar(s), then its record; returns the record."""
    out = Path(job.out)
    shards: list[ShardInfo] = []
    counts: dict[str, dict[str, dict[str, Any]]] = {}
    sizes: dict[str, int] = {}
    skipped: list[dict[str, str]] = []
    tar: TarShard | None = None
    try:
        for s in unit.samples:
            try:
                rec, size = encode_sample(s, job.resize, job.crop)
            except DataError as exc:
                if not job.skip_bad:
                    raise
                _stderr(f"warning: skipped {exc}")
                skipped.append({"key": s.key, "source": s.source, "reason": str(exc)})
                _tick()
                continue
            if tar is not None and tar.size_with(rec) > job.max_bytes:
                shards.append(tar.close())
                tar = None
            if tar is None:
                tar = TarShard(out / unit.shard_name(len(shards)), unit.split, unit.category)
            tar.write(rec)
            k = f"{size[0]}x{size[1]}"
            sizes[k] = sizes.get(k, 0) + 1
            _count(counts, unit.split, unit.category, s.label, s.defect, s.has_mask)
            _tick()
        if tar is not None:
            shards.append(tar.close())
            tar = None
    finally:
        if tar is not None:
            tar.abort()
    record = {
        "fingerprint": fingerprint,
        "unit": unit.index,
        "shards": [asdict(s) for s in shards],
        "counts": counts,
        "sizes": sizes,
        "skipped": skipped,
    }
    write_json_atomic(_unit_record(out, unit.index), record)
    return record


def _finished(out: Path, unit: Unit, fingerprint: str) -> dict[str, Any] | None:
    """The unit's record if it was written from the same input and its tars are all there at their sizes."""
    try:
        rec = json.loads(_unit_record(out, unit.index).read_text())
    except (OSError, ValueError):
        return None
    if rec.get("fingerprint") != fingerprint:
        return None
    for s in rec["shards"]:
        p = out / s["name"]
        if not p.is_file() or p.stat().st_size != s["bytes"]:
            return None
    return rec


def _lock(out: Path, log: Log) -> FileLock:
    """An exclusive lock on <out>/.shard-run/lock: two runs never write into one folder."""
    return FileLock(out / STATE / "lock", what=f"{out}: `decodiff data shard`", wait=False, log=log).acquire()


def _clean_stale(out: Path, units: Sequence[Unit], fingerprints: Sequence[str], log: Log) -> None:
    """Remove temporary tars of killed runs, and records (with their tars) that no longer fit the plan."""
    for tmp in out.glob("*.tar.tmp-*"):
        tmp.unlink(missing_ok=True)
    names = {u.index: u.stem for u in units}
    stale = 0
    for path in (out / STATE).glob("unit-*.json"):
        try:
            rec = json.loads(path.read_text())
            index, fp, shards = int(rec["unit"]), rec["fingerprint"], rec["shards"]
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if index in names and fp == fingerprints[index]:
            continue
        stale += 1
        for s in shards:
            (out / s["name"]).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    if stale:
        log(f"{out}: {stale} units of an unfinished run were made from other input or arguments; writing them again")


def write_shards(
    samples: Iterable[Sample],
    out: Path,
    *,
    dataset: str,
    max_bytes: int = 256 << 20,
    max_count: int = 2000,
    resize: int | None = None,
    crop: int | None = None,
    args: dict[str, Any] | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    skip_bad: bool = False,
    skipped: list[dict[str, str]] | None = None,
    log: Log | None = None,
) -> Manifest:
    """Shard `samples` into `out` (resuming an unfinished run there) and write manifest.json last.

    `skipped` holds samples the reader already left out (--skip-bad): it is read after the
    samples have been listed and goes into the manifest with those the writer skips.
    """
    log = log or _stderr
    out = Path(out)
    samples = list(samples)
    if not samples:
        raise DataError(f"no samples to shard into {out} (empty data set or category selection)")
    ids = _ids(samples)
    units = plan_units(samples, max_bytes=max_bytes, max_count=max_count, resize=resize, crop=crop, ids=ids)
    settings = {
        "dataset": dataset,
        "resize": resize,
        "crop": crop,
        "max_bytes": max_bytes,
        "max_count": max_count,
        "skip_bad": skip_bad,
        "format": FORMAT,
    }
    fingerprints = [unit_fingerprint(u, ids, settings) for u in units]
    fingerprint = hashlib.sha256("".join(fingerprints).encode()).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).is_file():
        return _complete(out, fingerprint, log)
    lock = _lock(out, log)
    try:
        if (out / MANIFEST).is_file():  # another run finished it (and deleted its lock file) since the look above
            shutil.rmtree(out / STATE, ignore_errors=True)
            return _complete(out, fingerprint, log)
        _clean_stale(out, units, fingerprints, log)
        records: dict[int, dict[str, Any]] = {}
        for u in units:
            rec = _finished(out, u, fingerprints[u.index])
            if rec is not None:
                records[u.index] = rec
        todo = [u for u in units if u.index not in records]
        total = len(samples)
        done_before = sum(len(u.samples) for u in units if u.index in records)
        if records:
            log(f"{out}: resuming: {len(records)} of {len(units)} units already written")
        if progress:
            progress(done_before, total)
        job = _Job(str(out), resize, crop, max_bytes, skip_bad)
        for rec in _run_units(
            todo, fingerprints, job, workers, log, lambda n: progress and progress(done_before + n, total)
        ):
            records[rec["unit"]] = rec
        manifest = _merge(
            dataset,
            samples,
            [records[u.index] for u in units],
            skipped or [],
            {**(args or {}), **settings, "fingerprint": fingerprint, "workers": workers, "created": _now()},
        )
        manifest.save(out)
        shutil.rmtree(out / STATE, ignore_errors=True)
    finally:
        lock.release()
    return manifest


def _complete(out: Path, fingerprint: str, log: Log) -> Manifest:
    """The finished shard set in `out`, if made from these samples and settings."""
    existing = Manifest.load(out)
    if existing.args.get("fingerprint") == fingerprint:
        log(f"{out}: already complete ({len(existing.shards)} shards); nothing to do")
        return existing
    raise DataError(
        f"{out}: already holds a finished shard set made from other data or arguments "
        "(choose another --out, or delete it)"
    )


def _picklable(units: Sequence[Unit]) -> bool:
    return all(s.load_image is None and s.load_mask is None for u in units for s in u.samples)


def _run_units(
    todo: list[Unit], fingerprints: Sequence[str], job: _Job, workers: int, log: Log, progress: Callable[[int], Any]
) -> Iterable[dict[str, Any]]:
    if workers <= 1 or len(todo) <= 1 or not _picklable(todo):
        if workers > 1 and len(todo) > 1:
            log("samples made in memory cannot go to worker processes; sharding in this process")
        done = 0
        for u in todo:
            yield write_unit(u, job, fingerprints[u.index])
            done += len(u.samples)
            progress(done)
        return
    # fork (as PyTorch's DataLoader does on Linux): workers start at once and the caller's script
    # is not re-run in them; the workers use PIL and numpy only, never the parent's torch threads.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    counter = ctx.Value("q", 0)
    pool = ProcessPoolExecutor(
        min(workers, len(todo)), mp_context=ctx, initializer=_init_worker, initargs=(counter, os.getpid())
    )
    pending: set[Future] = set()
    try:
        # biggest units first, so that the last ones to finish are small
        pending = {
            pool.submit(write_unit, u, job, fingerprints[u.index]) for u in sorted(todo, key=lambda u: -len(u.samples))
        }
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            progress(counter.value)
            for f in finished:
                yield f.result()
        progress(counter.value)
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _merge(
    dataset: str,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    reader_skipped: list[dict[str, str]],
    args: dict[str, Any],
) -> Manifest:
    counts: dict[str, dict[str, dict[str, Any]]] = {}
    sizes: dict[str, int] = {}
    shards: list[ShardInfo] = []
    skipped = list(reader_skipped)
    for rec in records:
        shards += [ShardInfo(**s) for s in rec["shards"]]
        for k, v in rec["sizes"].items():
            sizes[k] = sizes.get(k, 0) + v
        skipped += rec["skipped"]
        for split, cats in rec["counts"].items():
            for cat, c in cats.items():
                t = counts.setdefault(split, {}).setdefault(cat, _new_counts())
                for f in ("normal", "anomalous", "no_mask"):
                    t[f] += c[f]
                for d, n in c["defects"].items():
                    t["defects"][d] = t["defects"].get(d, 0) + n
    categories = [c for c in dict.fromkeys(s.category for s in samples) if any(c in cats for cats in counts.values())]
    return Manifest(
        dataset=dataset,
        categories=categories,
        shards=shards,
        counts=counts,
        image_size=_single_size(sizes),
        args=args,
        skipped=skipped,
        has_masks=not any(c["no_mask"] for cats in counts.values() for c in cats.values()),
        image_sizes=sizes,
    )


# ---- the whole command ----------------------------------------------------------------------


def shard_dataset(
    dataset: str,
    root: Path | str,
    out: Path | str,
    *,
    categories: Sequence[str] | None = None,
    options: dict[str, Any] | None = None,
    masks_optional: bool = False,
    skip_bad: bool = False,
    workers: int = 1,
    resize: int | None = None,
    crop: int | None = None,
    max_bytes: int = 256 << 20,
    max_count: int = 2000,
    verify: bool = False,
    progress: Progress | None = None,
    log: Log | None = None,
) -> Manifest:
    """Read data set `dataset` at `root` with its registered reader and shard it into `out`."""
    log = log or _stderr
    if Path(out).resolve() == Path(root).resolve() or Path(root).resolve() in Path(out).resolve().parents:
        raise DataError(
            f"{out}: the shard folder is inside the data set folder {root} (--out, or run.cache_dir); "
            "shards go to a folder of their own"
        )
    skipped: list[dict[str, str]] = []

    def on_bad(path: str, reason: str) -> None:
        log(f"warning: skipped {path}: {reason}")
        try:  # the key the sample would have had: its path under the root, without the extension
            key = Path(path).resolve().relative_to(Path(root).resolve()).with_suffix("").as_posix()
        except ValueError:
            key = Path(path).stem
        skipped.append({"key": key, "source": path, "reason": reason})

    opts = {k: v for k, v in (options or {}).items() if v is not None}
    samples = read_dataset(
        dataset, root, categories, on_bad=on_bad if skip_bad else None, masks_optional=masks_optional, **opts
    )
    args = {
        "root": str(root),
        "categories": list(categories) if categories else None,
        "options": opts,
        "masks_optional": masks_optional,
    }
    manifest = write_shards(
        samples,
        Path(out),
        dataset=dataset,
        max_bytes=max_bytes,
        max_count=max_count,
        resize=resize,
        crop=crop,
        args=args,
        progress=progress,
        workers=workers,
        skip_bad=skip_bad,
        skipped=skipped,
        log=log,
    )
    if verify:
        problems = verify_shards(Path(out), manifest)
        if problems:
            raise DataError(f"{out}: verification failed: " + "; ".join(problems))
        log(f"{out}: verified {len(manifest.shards)} shards (sizes and sha256)")
    return manifest
