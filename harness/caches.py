"""What a run cache (`run.cache_dir`) holds, and taking back its space: `decodiff cache list|prune`.

Everything a run builds in the cache is keyed by what made it (settings, data checksums, weights,
versions), so no entry is ever stale, only unused: entries pile up as settings, data and code change
(a model per training key, a latent cache per VAE and augmentation, a test set's references per VAE and
layout). A run that reuses an entry marks it used (`files.mark_used`: the folder's modification time),
so `prune --older-than 30d` removes what no run has built or read for 30 days. An entry goes only when
none of its build locks is held (a run building it is never disturbed), and it is first renamed to a
hidden name: a run that looks for it afterwards finds nothing and builds it again, never half of it.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from decodiff.datasets.files import read_json
from decodiff.datasets.locks import FileLock, LockBusy
from decodiff.datasets.shards import STATE
from decodiff.harness.errors import UsageError


class CacheError(UsageError):
    """A request the cache cannot answer (no such folder, unknown kind, bad age): one line, exit 2."""


@dataclass(frozen=True)
class Kind:
    name: str  # as `--kind` takes it
    folder: str  # under the cache folder ("" = the cache folder itself)
    pattern: str  # entry names (a glob)
    what: str  # what its entries are (`cache list --json` gives it)
    done: str  # a file (relative to the entry) that only a finished build has; "*.npz": any such file below
    inner_locks: tuple[str, ...] = ()  # lock files inside an entry that its builders hold
    beside_locks: tuple[str, ...] = ()  # lock files beside it ({name}: the entry's name)


# the builders' own locks (harness/data.lock_path, training/loop.TRAIN_LOCK, sweep/trial's training lock,
# evaluation/validation's, datasets/shards' run state); tests/harness/test_caches.py checks them against those
KINDS = (
    Kind(
        "models",
        "models",
        "*",
        "trained DeCo-Diff models (unfinished: a training's state to resume)",
        "checkpoint/model.safetensors",
        inner_locks=(".train.lock",),
        beside_locks=("{name}.lock",),
    ),
    Kind(
        "latents", "latents", "*", "latent caches of training images", "manifest.json", beside_locks=(".{name}.lock",)
    ),
    Kind("references", "references", "*", "test sets' z and Decoder(z) (infer.reference_cache)", "*.npz"),
    Kind(
        "vae",
        "vae",
        "*",
        "small VAEs trained or fine-tuned for a data set",
        "decodiff.json",
        beside_locks=(".{name}.lock",),
    ),
    Kind(
        "shards",
        "shards",
        "*",
        "WebDataset shards of data folders",
        "manifest.json",
        inner_locks=(f"{STATE}/lock",),
        beside_locks=(".{name}.lock",),
    ),
    Kind("validation", "validation", "*", "validation splits (sweeps)", "val/manifest.json", inner_locks=(".lock",)),
    Kind("demo", "", "demo-*", "the generated demo data set", "demo.json", beside_locks=(".{name}.lock",)),
)
KIND_NAMES = tuple(k.name for k in KINDS)
# a build's temporary folder (validation `<key>.tmp-<pid>`, latents `<key>.tmp`, demo `.tmp-<pid>` / `.old-<pid>`)
_TMP = re.compile(r"^(?P<base>.+?)\.(?:tmp|old)(?:-(?P<pid>\d+))?$")
_PRUNING = ".pruning-"  # an entry being removed: `.<name>.pruning-<pid>`


@dataclass
class Entry:
    kind: str
    name: str
    path: str
    bytes: int
    files: int
    used: float  # seconds since the epoch: last built or reused
    state: str  # "finished", "unfinished" (a build in progress or interrupted), "interrupted" (a leftover)
    note: str = ""

    def age_days(self, now: float | None = None) -> float:
        return max(0.0, ((time.time() if now is None else now) - self.used) / 86400)


def _walk(path: Path) -> tuple[int, int, float]:
    """(bytes, files, newest modification time) of a folder, itself included; links are not followed.
    Lock files do not count as use: taking a lock (a prune's dry run, too) writes its owner line."""
    size, files, newest = 0, 0, path.lstat().st_mtime
    for root, dirs, names in os.walk(path):
        for d in dirs:
            newest = max(newest, os.lstat(os.path.join(root, d)).st_mtime)
        for n in names:
            try:
                st = os.lstat(os.path.join(root, n))
            except OSError:  # removed while we looked
                continue
            lock = n == "lock" or n.endswith(".lock")
            size, files, newest = size + st.st_size, files + 1, newest if lock else max(newest, st.st_mtime)
    return size, files, newest


def _finished(kind: Kind, path: Path) -> bool:
    if kind.done.startswith("*"):
        return any(path.rglob(kind.done))
    return (path / kind.done).is_file()


def _note(kind: Kind, path: Path, finished: bool) -> str:
    """A few words on what the entry is, from the files its builder wrote (nothing where they are unreadable)."""

    def quiet(msg: str) -> Exception:
        return CacheError(msg)

    try:
        if kind.name == "models" and finished:
            info = read_json(path / "checkpoint" / "info.json", quiet, "", "")
            return f"{info.get('method', '?')}, {info.get('steps', '?')} steps, code {info.get('code_version', '?')}"
        if kind.name == "models":
            return "no final checkpoint: an interrupted training resumes from its state"
        if kind.name in ("latents", "shards") and finished:
            m = read_json(path / "manifest.json", quiet, "", "")
            cats = m.get("categories") or sorted({s.get("category", "?") for s in m.get("shards", [])})
            return f"{m.get('dataset', '?')}: {', '.join(map(str, cats))}" if cats else str(m.get("dataset", ""))
        if kind.name == "vae" and finished:
            return str(read_json(path / "decodiff.json", quiet, "", "").get("description", ""))[:100]
        if kind.name == "references":
            return f"{sum(1 for _ in path.rglob('*.npz'))} batches kept"
    except (CacheError, OSError, AttributeError, TypeError):
        return ""
    return ""


def _entries_of(kind: Kind, root: Path) -> list[Entry]:
    folder = root / kind.folder if kind.folder else root
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob(kind.pattern)):
        if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue
        tmp = _TMP.match(path.name)
        size, files, used = _walk(path)
        finished = tmp is None and _finished(kind, path)
        state = "interrupted" if tmp else ("finished" if finished else "unfinished")
        note = "a build that stopped half-way (its files are never read)" if tmp else _note(kind, path, finished)
        out.append(Entry(kind.name, path.name, str(path), size, files, used, state, note))
    return out


def list_cache(cache_dir: Path | str, kinds: list[str] | None = None) -> list[Entry]:
    """Every entry of the chosen kinds (all by default), by kind, then name."""
    root = Path(cache_dir)
    if not root.is_dir():
        raise CacheError(f"{root}: no cache folder there (run.cache_dir; --cache-dir)")
    chosen = check_kinds(kinds)
    return [e for k in KINDS if k.name in chosen for e in _entries_of(k, root)]


def check_kinds(kinds: list[str] | None) -> list[str]:
    if not kinds:
        return list(KIND_NAMES)
    bad = [k for k in kinds if k not in KIND_NAMES]
    if bad:
        raise CacheError(f"--kind {bad[0]}: expected one of {', '.join(KIND_NAMES)}")
    return list(kinds)


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '2w' or a plain number of days, in seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise CacheError(f"--older-than {text!r}: expected an age such as 30d, 12h, 90m or 2w")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}[m.group(2)]
    return float(m.group(1)) * unit


def _locks(kind: Kind, path: Path) -> list[Path]:
    """The entry's lock files that exist (a lock with no file is held by nobody)."""
    tmp = _TMP.match(path.name)
    base = tmp.group("base") if tmp else path.name
    found = [path / rel for rel in kind.inner_locks]
    found += [path.parent / pattern.format(name=base) for pattern in kind.beside_locks]
    if tmp:  # a build in progress writes its temporary folder under the final name's lock
        found += [path.parent / base / rel for rel in kind.inner_locks]
    return [p for p in found if p.is_file()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class PruneResult:
    removed: list[Entry]
    skipped: list[tuple[Entry, str]]  # (entry, why)
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(e.bytes for e in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": [asdict(e) for e in self.removed],
            "skipped": [{**asdict(e), "why": why} for e, why in self.skipped],
            "freed_bytes": self.freed,
        }


def prune_cache(
    cache_dir: Path | str,
    kinds: list[str] | None = None,
    older_than: float | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> PruneResult:
    """Remove the entries of `kinds` (all by default) not built or used for `older_than` seconds
    (any age when None). Entries whose builders hold a lock are skipped and said so; so is a
    temporary folder whose building process is still alive on this machine."""
    root = Path(cache_dir)
    now = time.time()
    removed, skipped = [], []
    by_name = {k.name: k for k in KINDS}
    for entry in list_cache(root, kinds):
        if older_than is not None and now - entry.used < older_than:
            continue
        kind, path = by_name[entry.kind], Path(entry.path)
        tmp = _TMP.match(path.name)
        pid = int(tmp.group("pid")) if tmp and tmp.group("pid") else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            skipped.append((entry, f"process {pid} may still be building it"))
            continue
        held: list[FileLock] = []
        try:
            for lock in _locks(kind, path):
                held.append(FileLock(lock, what=f"{entry.kind} {entry.name}", wait=False, log=lambda _: None).acquire())
        except LockBusy as exc:
            skipped.append((entry, f"in use: {exc}"))
            for h in held:
                h.release()
            continue
        try:
            if not dry_run:
                gone = path.with_name(f".{path.name}{_PRUNING}{os.getpid()}")
                os.replace(path, gone)  # from here on a run finds no entry and builds it again
        finally:
            for h in held:
                h.release()
        if not dry_run:
            shutil.rmtree(gone, ignore_errors=True)
        removed.append(entry)
        log(f"{'would remove' if dry_run else 'removed'} {entry.kind}/{entry.name} ({human_bytes(entry.bytes)})")
    if not dry_run:
        _sweep_leftovers(root)
    return PruneResult(removed, skipped, dry_run)


def _sweep_leftovers(root: Path) -> None:
    """Folders a killed prune left half-removed (hidden `.<name>.pruning-<pid>`) of processes now gone."""
    for kind in KINDS:
        folder = root / kind.folder if kind.folder else root
        for path in folder.glob(f".*{_PRUNING}*") if folder.is_dir() else []:
            pid = path.name.rsplit(_PRUNING, 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def entries_word(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_age(days: float) -> str:
    if days < 1 / 24:
        return f"{days * 1440:.0f} min"
    if days < 1:
        return f"{days * 24:.0f} h"
    return f"{days:.0f} d"
