"""File locks between real processes: refused or waited for, released when the owner dies (even by
SIGKILL), a dead owner's lock taken over saying so, a timeout that names the owner."""

import os
import signal
import subprocess
import sys

import pytest

from decodiff.datasets.locks import FileLock, LockBusy

HOLD = (
    "import sys; from decodiff.datasets.locks import FileLock; "
    "l = FileLock(sys.argv[1], what='x').acquire(); print('held', flush=True); "
    "sys.stdin.readline(); l.release()"
)  # held until told (a line on stdin), never for a guessed time


def _holder(path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_is_refused_or_waited_for_and_a_killed_owner_releases_it(tmp_path):
    path = tmp_path / "f.lock"
    owner = _holder(path)
    try:
        with pytest.raises(
            LockBusy,
            match=rf"shards: another run is writing there \(\S+ pid={owner.pid} since .*; "
            rf"lock {path}\); choose another",
        ):
            FileLock(path, what="shards", wait=False, hint="choose another").acquire()
        with pytest.raises(LockBusy, match=rf"timed out after \d+s waiting for \S+ pid={owner.pid}"):
            FileLock(path, what="shards", timeout=0.3).acquire()
        logs = []
        os.kill(owner.pid, signal.SIGKILL)  # the kernel drops its lock; its owner line stays in the file
        owner.wait()
        with FileLock(path, what="shards", timeout=10, log=logs.append):
            seen = subprocess.run(["cat", str(path)], capture_output=True, text=True).stdout  # not read_text():
            assert f"pid={os.getpid()}" in seen  # closing any file of the lock in this process drops it
        assert any("taking over the lock of" in line and f"pid={owner.pid}" in line for line in logs)
        assert path.read_text() == ""  # released cleanly: nothing to take over next time
    finally:
        owner.kill()
        owner.wait()


def test_a_waiter_goes_on_once_the_owner_is_done(tmp_path):
    path = tmp_path / "f.lock"
    owner = _holder(path)
    logs = []

    def log(line):  # the owner lets go only once this run says it waits: no race with a timed hold
        logs.append(line)
        if "waiting for" in line:
            owner.stdin.write("done\n")
            owner.stdin.flush()

    try:
        with FileLock(path, what="VAE", timeout=60, log=log):
            assert owner.wait(timeout=30) == 0  # the owner released and exited while this one waited
        assert "VAE: waiting for" in logs[0] and f"pid={owner.pid}" in logs[0] and "going on" in logs[-1]
        assert not any("taking over" in line for line in logs)
    finally:
        owner.kill()
        owner.wait()


def test_a_waiter_whose_lock_file_was_taken_away_locks_the_one_now_at_its_path(tmp_path):
    """`decodiff cache prune` renames an entry (and a lock file inside it) away: a run that waited on
    that file must not go on holding a lock on the file that left, which guards nothing."""
    path = tmp_path / "entry" / ".train.lock"
    owner = _holder(path)

    def log(line):
        if "waiting for" in line:
            os.replace(tmp_path / "entry", tmp_path / ".entry.pruning")  # as a prune does, then the owner ends
            owner.stdin.write("done\n")
            owner.stdin.flush()

    third = (
        "import sys; from decodiff.datasets.locks import FileLock; "
        "FileLock(sys.argv[1], what='x', wait=False).acquire()"
    )
    try:
        with FileLock(path, what="training", timeout=60, log=log):
            assert owner.wait(timeout=30) == 0 and path.is_file()
            # a third run is kept out: this lock is on the file at the path, not on the one that left
            other = subprocess.run([sys.executable, "-c", third, str(path)], capture_output=True, text=True)
            assert other.returncode != 0 and "another run is writing there" in other.stderr, other.stderr
    finally:
        owner.kill()
        owner.wait()


def test_a_forked_child_does_not_share_its_parents_lock(tmp_path):
    """POSIX locks are not inherited by fork; the nesting count must not be either (a forked worker
    taking the lock its parent holds would otherwise be told it has it)."""
    path = tmp_path / "f.lock"
    with FileLock(path, what="a"):
        child = os.fork()
        if child == 0:  # the child: refused, as any other process would be
            try:
                FileLock(path, what="a", wait=False).acquire()
                os._exit(3)
            except LockBusy:
                os._exit(0)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_nested_locks_in_one_process(tmp_path):
    path = tmp_path / "f.lock"
    outer = FileLock(path, what="a").acquire()
    FileLock(path, what="a", wait=False).acquire().release()  # the same process: no self-deadlock ...
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from decodiff.datasets.locks import FileLock; "
            "FileLock(sys.argv[1], what='a', wait=False).acquire()",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 1 and "another run is writing there" in probe.stderr  # ... and still held
    outer.release()
