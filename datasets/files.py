"""Files written so that a reader never sees half of one, file checksums, and JSON files read with
one-line errors: the one home of each, used by every package (datasets is the floor the others stand on)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: Path | str, data: str | bytes | Callable[[Path], object]) -> None:
    """Write to a temporary name beside `path`, then rename: a crash leaves the old file or none.
    `data` may be a function that writes the file at the path it is given (numpy, PIL, a stream of
    rows), for contents too large to hold twice in memory; the temporary name keeps `path`'s suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        elif isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            data(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path | str, obj: Any) -> None:
    """`obj` as indented JSON, written atomically (values JSON does not know become strings)."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str))


def mark_used(folder: Path | str, cache_dir: Path | str | None = None) -> None:
    """Mark a cache entry as used now (its folder's modification time), so that `decodiff cache prune
    --older-than` spares what runs still read; a read-only cache stays as it is. With `cache_dir`,
    only a folder inside it (a path the user gave may lie anywhere: their own folders are left alone)."""
    try:
        if cache_dir is None or Path(folder).resolve().is_relative_to(Path(cache_dir).resolve()):
            os.utime(folder)
    except OSError:
        pass


def sha256_file(path: Path | str, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path, error: Callable[[str], Exception], missing: str, invalid: str) -> Any:
    """The parsed JSON of `path`. A missing file raises `error(missing)`, one that is not JSON
    `error(f"{invalid} ({what the parser said})")`: the caller's exception and words, in one line."""
    if not path.is_file():
        raise error(missing)
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise error(f"{invalid} ({exc})") from None
