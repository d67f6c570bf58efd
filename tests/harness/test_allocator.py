"""DECODIFF_ALLOCATOR=kept: glibc's allocator keeps freed memory in the process and the processes it
starts (harness/allocator.py); glibc's defaults otherwise. Read back from glibc itself: mallinfo2's
`hblkhd` counts the bytes glibc holds in separate mmaps, where a large tensor goes by default."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from decodiff.harness.allocator import KEEP_LINE, _libc
from decodiff.harness.timings import Timings

pytestmark = pytest.mark.skipif(_libc() is None, reason="glibc only")

# a 64 MiB tensor alive, then how many bytes glibc has mmapped; with CHILD, the same probe in a
# child that inherits the environment but runs none of our code (a DDP or Ray worker as it starts)
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

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
x = torch.ones(16 << 20)  # 64 MiB
mmapped = libc.mallinfo2().hblkhd
child = None
if CHILD:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
    child = json.loads(out)
print(json.dumps({"mmapped_mb": mmapped >> 20, "child": child}))
"""


def _code(apply: bool, child: str | None) -> str:
    return f"APPLY = {apply}\nCHILD = {child!r}\n" + PROBE


def _probe(apply: bool, **env_extra: str) -> dict:
    drop = (
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_TOP_PAD_",
        "GLIBC_TUNABLES",
        "DECODIFF_ALLOCATOR",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop} | env_extra
    code = _code(apply, _code(False, None) if apply else None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_kept_large_tensors_come_from_the_heap_in_the_process_and_its_children():
    got = _probe(apply=True, DECODIFF_ALLOCATOR="kept")
    assert got["mmapped_mb"] < 64  # the 64 MiB tensor is in the heap, not a mmap of its own
    assert got["child"]["mmapped_mb"] < 64  # the child got it from glibc's environment as it started


def test_glibc_defaults_by_default_and_a_users_own_settings_win():
    default = _probe(apply=True)
    assert default["mmapped_mb"] >= 64 and default["child"]["mmapped_mb"] >= 64  # the probe sees the difference
    own = _probe(apply=True, DECODIFF_ALLOCATOR="kept", MALLOC_MMAP_THRESHOLD_="65536")
    assert own["mmapped_mb"] >= 64 and own["child"]["mmapped_mb"] >= 64


def test_a_bad_policy_stops_in_one_line():
    env = {**os.environ, "DECODIFF_ALLOCATOR": "jemalloc"}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("decodiff")), "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        "decodiff: error: DECODIFF_ALLOCATOR='jemalloc': expected 'glibc' (the default) or 'kept'"
    )


@pytest.mark.parametrize(
    "env, line",
    [
        ({}, "glibc's defaults"),
        ({"DECODIFF_ALLOCATOR": "kept"}, KEEP_LINE),
        ({"MALLOC_TOP_PAD_": "0"}, "as set: MALLOC_TOP_PAD_=0"),
    ],
)
def test_the_run_records_the_policy(tmp_path, monkeypatch, env, line):
    for k in (
        "DECODIFF_ALLOCATOR",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_TOP_PAD_",
        "GLIBC_TUNABLES",
    ):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    t = Timings()
    t.add("training", 1.0)
    assert json.loads(t.write(tmp_path).read_text())["allocator"] == line
