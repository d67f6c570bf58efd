"""File locks for folders that several runs (processes, machines) may build or write at once.

A lock is a POSIX record lock (fcntl.lockf) on a small lock file, which holds its owner
("host pid=N since TIME") while locked. POSIX locks are what NFS and Lustre lock across
machines; they belong to the process, so the kernel drops them when it dies (SIGKILL
included) and forked children never inherit them: a lock is never left behind by a dead
run or its orphaned workers. An owner line still in the file when the lock is free is a
run that died holding it: it is taken over, saying so. The price of POSIX locks: a process that
opens and closes the lock file by any other means (read_text, copytree, hashing a folder) drops
its lock on the spot, so lock files sit beside what they guard or are left alone by the holder.

`wait=True` is for shared caches (one run builds, the others wait, then reuse); `wait=False`
for a run's own output folder (a second run there is refused). Waiting ends after
DECODIFF_LOCK_TIMEOUT seconds (default 12 hours) with an error naming the lock and its owner.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from decodiff.datasets.imageio import DataError

TIMEOUT_ENV = "DECODIFF_LOCK_TIMEOUT"
DEFAULT_TIMEOUT = 12 * 3600.0
# path -> (fd, depth, pid): POSIX locks are per process, so a process nests here; the pid keeps a forked
# child (a copy of this dict, none of the locks) from taking its parent's entry for a lock of its own
_held: dict[str, tuple[int, int, int]] = {}


class LockBusy(DataError):
    """Another run holds the lock (wait=False), or waiting for it timed out."""


def _log(msg: str) -> None:
    print(f"[decodiff] {msg}", file=sys.stderr, flush=True)


def lock_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise DataError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st, fst = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)


def _owner(fd: int) -> str:
    try:
        return os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


class FileLock:
    """`with FileLock(path, what="shards in X"): build()`; see the module doc."""

    def __init__(
        self,
        path: Path | str,
        what: str,
        *,
        wait: bool = True,
        timeout: float | None = None,
        log: Callable[[str], None] | None = None,
        hint: str = "",
    ) -> None:
        self.path = Path(path)
        self.what, self.wait, self.hint = what, wait, hint
        self.timeout = lock_timeout() if timeout is None else timeout
        self.log = log or _log
        self._key = str(self.path.absolute())

    def acquire(self) -> FileLock:
        fd, depth, pid = _held.get(self._key, (-1, 0, -1))
        if depth and pid == os.getpid():  # this process holds it already (a nested caller)
            _held[self._key] = (fd, depth + 1, pid)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        start, told, pause = time.monotonic(), False, 0.05
        try:
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if _same_file(fd, self.path):
                        break
                    # the file was removed or replaced while we waited (`decodiff cache prune` took the
                    # folder): a lock on it guards nothing; lock the file now at that path instead
                    old, fd = fd, -1
                    os.close(old)
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EAGAIN):
                        raise DataError(f"{self.path}: cannot lock ({exc.strerror})") from None
                owner = _owner(fd) or "another process"
                if not self.wait:
                    raise LockBusy(
                        f"{self.what}: another run is writing there ({owner}; lock {self.path})"
                        + (f"; {self.hint}" if self.hint else "")
                    )
                waited = time.monotonic() - start
                if waited > self.timeout:
                    raise LockBusy(
                        f"{self.what}: timed out after {waited:.0f}s waiting for {owner} (lock "
                        f"{self.path}; {TIMEOUT_ENV} sets the limit, in seconds)"
                    )
                if not told:
                    self.log(f"{self.what}: waiting for {owner}, which is making it (lock {self.path})")
                    told = True
                time.sleep(pause)
                pause = min(pause * 1.5, 2.0)
            stale = _owner(fd)
            if stale:
                self.log(f"{self.what}: taking over the lock of {stale}, which is gone (it died holding it)")
            line = f"{socket.gethostname()} pid={os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, line.encode(), 0)
        except BaseException:
            if fd >= 0:
                os.close(fd)  # closing drops a lock taken above
            raise
        if told:
            self.log(f"{self.what}: the other run is done; going on")
        _held[self._key] = (fd, 1, os.getpid())
        return self

    def release(self) -> None:
        fd, depth, pid = _held.get(self._key, (-1, 0, -1))
        if pid != os.getpid():  # not this process's (a forked child's copy of its parent's entry)
            return
        if depth > 1:
            _held[self._key] = (fd, depth - 1, pid)
            return
        if depth == 1:
            del _held[self._key]
            try:
                os.ftruncate(fd, 0)  # a free lock with no owner line: released, not abandoned
            except OSError:
                pass
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
