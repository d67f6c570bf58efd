"""What a run cache (`run.cache_dir`) holds, and taking back its space: `decodiff cache list|prune`.

Everything a run builds in the cache is keyed by what made it (settings, data checksums, weights,
versions), so no entry is ever stale, only unused: entries pile up as settings, data and code change
(a model per training key, a latent cache per VAE and augmentation, a test set's references per VAE and
layout). A run that reuses an entry marks it used (`files.mark_used`: the folder's modification time),
so `prune --older-than 30d` removes what no run has built or read for 30 days. Only folders named as
the builders name them count as entries (a user's own folder in the cache is never touched). An entry
goes only when none of its build locks is held (a run building it is never disturbed), and it is
first renamed to a hidden name: a run that looks for it afterwards finds nothing and builds it again,
never half of it (datasets/locks.py: a run that waited on a lock inside it locks the new file).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from decodiff.datasets.locks import FileLock, LockBusy
from decodiff.datasets.shards import STATE
from decodiff.harness.errors import UsageError

HEX16 = r"[0-9a-f]{16}"  # models, latents, VAEs, references, validation splits: sha256 prefixes


class CacheError(UsageError):
    """A request the cache cannot answer (no such folder, unknown kind, bad age): one line, exit 2."""


@dataclass(frozen=True)
class Kind:
    """One kind of entry: where its builder puts it, how it names it, which file says the build
    finished (`*.npz`: references are written a batch at a time, so any batch makes them usable),
    and the locks its builders hold (beside the entry first, as builders take them)."""

    name: str  # as `--kind` takes it
    folder: str  # under the cache folder ("" = the cache folder itself)
    names: str  # the builder's entry names (a regular expression)
    what: str  # what its entries are (`cache list --json` gives it)
    done: str
    beside_locks: tuple[str, ...] = ()  # lock files beside an entry ({name}: the entry's name)
    inner_locks: tuple[str, ...] = ()  # lock files inside it


# the builders' own locks: harness/data.lock_path (`.{name}.lock`), training/loop.TRAIN_LOCK, sweep/trial's
# training_lock (`{key}.lock`), datasets/shards' run state; tests/harness/test_caches.py checks them against those
KINDS = (
    Kind(
        "models",
        "models",
        HEX16,
        "trained DeCo-Diff models (unfinished: a training's state to resume)",
        "checkpoint/model.safetensors",
        beside_locks=("{name}.lock",),
        inner_locks=(".train.lock",),
    ),
    Kind("latents", "latents", HEX16, "latent caches of training images", "manifest.json", (".{name}.lock",)),
    Kind("references", "references", HEX16, "test sets' z and Decoder(z) (infer.reference_cache)", "*.npz"),
    Kind("vae", "vae", HEX16, "small VAEs trained or fine-tuned for a data set", "decodiff.json", (".{name}.lock",)),
    Kind(
        "shards",
        "shards",
        r"[A-Za-z0-9_.-]+-[0-9a-f]{10}",
        "WebDataset shards of data folders",
        "manifest.json",
        beside_locks=(".{name}.lock",),
        inner_locks=(f"{STATE}/lock",),
    ),
    Kind("validation", "validation", HEX16, "validation splits (sweeps)", "val/manifest.json"),
    Kind("demo", "", r"demo-[0-9a-f]{10}", "the generated demo data set", "demo.json", (".{name}.lock",)),
    Kind("budgets", "budgets", HEX16 + r"\.json", "the training steps a run.time_budget chose, for reruns", ""),
)
KIND_NAMES = tuple(k.name for k in KINDS)
# a build's temporary folder: validation `<key>.tmp-<pid>`, latents `<key>.tmp`, demo `.tmp-<pid>` / `.old-<pid>`
_TMP = r"(?:\.(?:tmp|old)(?:-(?P<pid>\d+))?)?"
TMP_GRACE = 3600.0  # seconds: a temporary folder this young may be a build on another machine
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
    """(bytes, files, newest modification time) of an entry, itself included; links are not followed.
    Lock files do not count as use: taking a lock (a prune's dry run, too) writes its owner line."""
    st = path.lstat()
    if not path.is_dir():
        return st.st_size, 1, st.st_mtime
    size, files, newest = 0, 0, st.st_mtime
    for root, dirs, names in os.walk(path):
        for n in dirs + names:
            try:
                st = os.lstat(os.path.join(root, n))
            except OSError:  # removed while we looked
                continue
            if n in names:
                size, files = size + st.st_size, files + 1
            if not (n == "lock" or n.endswith(".lock")):
                newest = max(newest, st.st_mtime)
    return size, files, newest


def _finished(kind: Kind, path: Path) -> bool:
    if not kind.done:
        return True
    if kind.done.startswith("*"):
        return any(path.rglob(kind.done))
    return (path / kind.done).is_file()


def _json(path: Path) -> dict[str, Any]:
    try:
        got = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def _note(kind: Kind, path: Path, finished: bool) -> str:
    """A few words on what the entry is, from the files its builder wrote (nothing where unreadable)."""
    if kind.name == "models":
        if not finished:
            return "no final checkpoint: an interrupted training resumes from its state"
        info = _json(path / "checkpoint" / "info.json")
        return f"{info.get('method', '?')}, {info.get('steps', '?')} steps, code {info.get('code_version', '?')}"
    if kind.name in ("latents", "shards") and finished:
        m = _json(path / "manifest.json")
        shards = m.get("shards") if isinstance(m.get("shards"), list) else []
        cats = m.get("categories") or sorted({str(s.get("category", "?")) for s in shards if isinstance(s, dict)})
        return f"{m.get('dataset', '?')}: {', '.join(map(str, cats))}" if cats else str(m.get("dataset", ""))
    if kind.name == "vae" and finished:
        return str(_json(path / "decodiff.json").get("description", ""))[:100]
    if kind.name == "references":
        return f"{sum(1 for _ in path.rglob('*.npz'))} batches kept"
    if kind.name == "budgets":
        return f"{_json(path).get('steps', '?')} steps"
    return ""


def _entries_of(kind: Kind, root: Path) -> list[Entry]:
    folder = root / kind.folder if kind.folder else root
    if not folder.is_dir():
        return []
    shape = re.compile(f"(?P<base>{kind.names}){_TMP}")
    files = kind.names.endswith(r"\.json")  # budgets are files; every other kind's entries are folders
    out = []
    for path in sorted(folder.iterdir()):
        m = shape.fullmatch(path.name)
        if m is None or path.is_symlink() or path.is_dir() == files:
            continue  # not what this kind's builder writes: never listed, never removed
        interrupted = path.name != m.group("base")
        try:
            size, files, used = _walk(path)
        except FileNotFoundError:  # renamed or removed while we looked
            continue
        finished = not interrupted and _finished(kind, path)
        state = "interrupted" if interrupted else ("finished" if finished else "unfinished")
        note = "a build's temporary folder (never read by a run)" if interrupted else _note(kind, path, finished)
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
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise CacheError(f"--older-than {text!r}: expected an age such as 30d, 12h, 90m or 2w")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}[m.group(2)]
    return float(m.group(1)) * unit


def _locks(kind: Kind, path: Path) -> list[Path]:
    """The entry's lock files that exist (a lock with no file is held by nobody), beside ones first:
    the order builders take them in, so that a prune never holds one a builder needs first."""
    base = re.sub(f"{_TMP}$", "", path.name)
    found = [path.parent / pattern.format(name=base) for pattern in kind.beside_locks]
    found += [path / rel for rel in kind.inner_locks]
    if base != path.name:  # a build in progress writes its temporary folder under the final name's locks
        found += [path.parent / base / rel for rel in kind.inner_locks]
    return [p for p in found if p.is_file()]


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
    (any age when None). Skipped, and said so: an entry whose builders hold a lock, one used again
    while the prune looked, and a build's temporary folder younger than TMP_GRACE (its builder may
    run on another machine, where this one cannot see the process)."""
    root = Path(cache_dir)
    now = time.time()
    removed, skipped = [], []
    by_name = {k.name: k for k in KINDS}
    for entry in list_cache(root, kinds):
        if older_than is not None and now - entry.used < older_than:
            continue
        kind, path = by_name[entry.kind], Path(entry.path)
        if entry.state == "interrupted" and now - entry.used < TMP_GRACE:
            skipped.append((entry, f"a build's temporary folder written {human_age(entry.age_days(now))} ago"))
            continue
        held: list[FileLock] = []
        try:
            for lock in _locks(kind, path):
                held.append(FileLock(lock, what=f"{entry.kind} {entry.name}", wait=False, log=lambda _: None).acquire())
            why = _why_not(path, older_than)
            if why is None and not dry_run:
                gone = path.with_name(f".{path.name}{_PRUNING}{os.getpid()}")
                os.replace(path, gone)  # from here on a run finds no entry and builds it again
        except LockBusy as exc:
            why = f"in use: {exc}"
        except FileNotFoundError:
            why = "gone already (another prune, or its build renamed it)"
        finally:
            for h in held:
                h.release()
        if why is not None:
            skipped.append((entry, why))
            continue
        if not dry_run:
            _remove(gone)
        removed.append(entry)
        log(f"{'would remove' if dry_run else 'removed'} {entry.kind}/{entry.name} ({human_bytes(entry.bytes)})")
    if not dry_run:
        _sweep_leftovers(root)
    return PruneResult(removed, skipped, dry_run)


def _why_not(path: Path, older_than: float | None) -> str | None:
    """Checked again under the locks: a run may have read the entry since it was listed."""
    used = _walk(path)[2]
    if older_than is not None and time.time() - used < older_than:
        return f"used again {human_age((time.time() - used) / 86400)} ago"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_leftovers(root: Path) -> None:
    """What a killed prune left half-removed (hidden `.<name>.pruning-<pid>`) of processes now gone."""
    for kind in KINDS:
        folder = root / kind.folder if kind.folder else root
        for path in folder.glob(f".*{_PRUNING}*") if folder.is_dir() else []:
            pid = path.name.rsplit(_PRUNING, 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                _remove(path)


def entries_word(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def human_bytes(n: float) -> str:
    units, i = ("B", "KB", "MB", "GB"), 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def human_age(days: float) -> str:
    if days < 1 / 24:
        return f"{days * 1440:.0f} min"
    if days < 1:
        return f"{days * 24:.0f} h"
    return f"{days:.0f} d"
