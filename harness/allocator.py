"""glibc's allocator, optionally told to keep freed memory for the next tensor (DECODIFF_ALLOCATOR=kept).

By default glibc serves a request above its mmap threshold (128 KiB, raised on the fly to at most
32 MiB) with a fresh `mmap` and returns it on free, and trims the heap's free top: a network's
large activations, freed and asked for again at every step, fault their pages in again and the
kernel zeroes them again. `kept` raises both thresholds to 1 GiB. Measured (README "glibc's
allocator"; benchmarks/allocator_speed.py): the demo's latent cache builds up to 2x faster and
the authors' UNet, whose attention scores are 128 MiB tensors, spends no more time in the kernel;
but a whole first demo run gained only a few per cent, its evaluation after training swung either
way, and memory grows by a tenth, so glibc's defaults stay the default. Applied to this process
with `mallopt` and to the processes it starts through glibc's own environment variables (DDP and
Ray workers read them as they start). A user's own glibc malloc variables win. Threads other than
the main one allocate from arenas of at most 64 MiB, so there a block above 64 MiB is still mmapped.
"""

from __future__ import annotations

import ctypes
import os
import sys

KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap; up to 1 GiB of free heap top is kept
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
POLICY_VARIABLE = "DECODIFF_ALLOCATOR"  # glibc (default) or kept
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
FORWARDED = (POLICY_VARIABLE, *MALLOC_VARIABLES)  # what a process started elsewhere (a Ray worker) needs
KEPT = {"MALLOC_MMAP_THRESHOLD_": str(KEEP_BYTES), "MALLOC_TRIM_THRESHOLD_": str(KEEP_BYTES)}
KEEP_LINE = f"kept: freed memory stays for the next tensor (mmap and trim thresholds {KEEP_BYTES >> 20} MiB)"
DEFAULT_LINE = "glibc's defaults"


def _malloc_settings() -> dict[str, str]:
    """The glibc malloc variables of the environment (GLIBC_TUNABLES only where it tunes malloc)."""
    got = {k: v for k in MALLOC_VARIABLES if (v := os.environ.get(k)) is not None}
    if "glibc.malloc." not in got.get("GLIBC_TUNABLES", "glibc.malloc."):
        del got["GLIBC_TUNABLES"]
    return got


# what glibc read as this process started (nothing of ours sets them before this module loads)
_AT_START = _malloc_settings()
_applied: str | None = None  # the line of what apply_allocator_policy made hold in this process


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def _wanted() -> str:
    return os.environ.get(POLICY_VARIABLE, "glibc").strip().lower() or "glibc"


def _from_start() -> str:
    if _AT_START == KEPT:  # a parent's `kept`, read by glibc as this process started
        return KEEP_LINE
    if _AT_START:
        return "as set: " + ", ".join(f"{k}={v}" for k, v in _AT_START.items())
    return DEFAULT_LINE


def allocator_line() -> str:
    """What holds in this process, in one line (a run's timings.json records it)."""
    return _applied or _from_start()


def apply_allocator_policy() -> str:
    """Apply DECODIFF_ALLOCATOR to this process and the processes it starts; its line. Idempotent.
    A value other than glibc or kept stops the process with one line."""
    global _applied
    if _wanted() not in ("glibc", "kept"):
        sys.exit(f"decodiff: error: {POLICY_VARIABLE}={os.environ[POLICY_VARIABLE]!r}: expected 'glibc' or 'kept'")
    if _AT_START or _wanted() == "glibc" or _applied:
        return allocator_line()  # the user's own settings, an inherited `kept`, or nothing to do
    libc = _libc()
    if libc is None:
        _applied = f"{DEFAULT_LINE} (not glibc: DECODIFF_ALLOCATOR=kept does nothing)"
    elif libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1:
        os.environ.update(KEPT)
        _applied = KEEP_LINE
    else:
        _applied = "glibc refused DECODIFF_ALLOCATOR=kept (mallopt); its thresholds are as they were or partly set"
        print(f"decodiff: warning: {_applied}", file=sys.stderr)
    return _applied
