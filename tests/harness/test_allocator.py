"""DECODIFF_ALLOCATOR=kept: glibc's allocator keeps freed memory in the process and the processes it
starts (harness/allocator.py); glibc's defaults otherwise. Read back from glibc itself: mallinfo2's
`hblkhd` counts the bytes glibc holds in separate mmaps, where a large tensor goes by default."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from decodiff.harness.allocator import KEEP_LINE, MALLOC_VARIABLES, _libc

pytestmark = pytest.mark.skipif(_libc() is None, reason="glibc only")

# A 64 MiB tensor alive: how many bytes glibc holds in mmaps; a 64 MiB block freed: how many bytes
# glibc keeps at the heap's top (what trimming would give back); and the allocator line a run records. With CHILD, the
# same probe in a child that inherits the environment and runs none of our code (a DDP or Ray worker
# as it starts).
PROBE = """
import ctypes, json, subprocess, sys
if APPLY:
    from decodiff.harness.process_env import set_process_defaults
    set_process_defaults()
import torch

class MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = MallInfo2, ctypes.c_void_p, [ctypes.c_void_p]
x = torch.ones(16 << 20)  # 64 MiB
mmapped = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)  # nothing is allocated between this and its free: it is the heap's top
libc.free(block)
kept_top = libc.mallinfo2().keepcost
line = None
if APPLY:
    from decodiff.harness.timings import Timings
    line = Timings().to_dict()["allocator"]
child = None
if CHILD:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
    child = json.loads(out)
print(json.dumps({"mmapped_mb": mmapped >> 20, "kept_top_mb": kept_top >> 20, "line": line, "child": child}))
"""


def _code(apply: bool, child: str | None) -> str:
    return f"APPLY = {apply}\nCHILD = {child!r}\n" + PROBE


def _probe(apply: bool = True, **env_extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*MALLOC_VARIABLES, "DECODIFF_ALLOCATOR")} | env_extra
    code = _code(apply, _code(False, None) if apply else None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_kept_large_tensors_come_from_the_heap_and_stay_in_the_process_and_its_children():
    got = _probe(DECODIFF_ALLOCATOR="kept")
    assert got["line"] == KEEP_LINE
    assert got["mmapped_mb"] < 64  # the 64 MiB tensor is in the heap, not a mmap of its own
    assert got["kept_top_mb"] >= 64  # freed, it stays at the heap's top (the trim threshold)
    child = got["child"]  # glibc read the exported variables as the child started
    assert child["mmapped_mb"] < 64 and child["kept_top_mb"] >= 64


def test_glibc_defaults_by_default_and_what_holds_is_recorded():
    default = _probe()
    assert default["line"] == "glibc's defaults"
    assert default["mmapped_mb"] >= 64 and default["child"]["mmapped_mb"] >= 64  # the probe sees the difference
    assert default["kept_top_mb"] < 64
    # a user's own variable wins, and is what the run records
    own = _probe(DECODIFF_ALLOCATOR="kept", MALLOC_MMAP_THRESHOLD_="65536")
    assert own["mmapped_mb"] >= 64 and own["child"]["mmapped_mb"] >= 64
    assert own["line"] == "as set: MALLOC_MMAP_THRESHOLD_=65536"
    # variables equal to ours, inherited from a parent whatever this process asks for: they hold
    inherited = _probe(
        DECODIFF_ALLOCATOR="glibc", MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 30)
    )
    assert inherited["mmapped_mb"] < 64 and inherited["line"] == KEEP_LINE
    # GLIBC_TUNABLES that do not tune malloc leave `kept` to work
    tunables = _probe(DECODIFF_ALLOCATOR="kept", GLIBC_TUNABLES="glibc.pthread.rseq=0")
    assert tunables["mmapped_mb"] < 64 and tunables["line"] == KEEP_LINE


def test_a_bad_policy_stops_in_one_line():
    env = {**os.environ, "DECODIFF_ALLOCATOR": "Jemalloc"}
    decodiff = str(Path(sys.executable).with_name("decodiff"))
    out = subprocess.run([decodiff, "--help"], capture_output=True, text=True, env=env)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        "decodiff: error: DECODIFF_ALLOCATOR='Jemalloc': expected 'glibc' or 'kept'"
    )
