"""glibc's allocator, optionally told to keep freed memory for the next tensor (DECODIFF_ALLOCATOR=kept).

By default glibc serves a request above its mmap threshold (128 KiB, raised on the fly to at most
32 MiB) with a fresh `mmap` and returns it on free, and trims the heap's free top: a network's
large activations, freed and asked for again at every step, fault their pages in again and the
kernel zeroes them again. `kept` raises both thresholds to 1 GiB. Measured (README "glibc's
allocator"; benchmarks/allocator_speed.py): the demo's latent cache builds 2x faster and the
authors' UNet, whose attention scores are 128 MiB tensors, spends no more time in the kernel, but
the demo's evaluation after training in the same process ran slower and its training no faster,
so glibc's defaults stay the default. Applied to this process with `mallopt` and to the processes
it starts through glibc's own environment variables (DDP and Ray workers read them as they
start). A user's own glibc malloc variables win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap; up to 1 GiB of free heap top is kept
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
POLICY_VARIABLE = "DECODIFF_ALLOCATOR"  # glibc (default) or kept
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
FORWARDED = (POLICY_VARIABLE, *GLIBC_VARIABLES)  # what a process started elsewhere (a Ray worker) needs
KEPT = {"MALLOC_MMAP_THRESHOLD_": str(KEEP_BYTES), "MALLOC_TRIM_THRESHOLD_": str(KEEP_BYTES)}
KEEP_LINE = f"kept: freed memory stays for the next tensor (mmap and trim thresholds {KEEP_BYTES >> 20} MiB)"


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def _wanted() -> str:
    return os.environ.get(POLICY_VARIABLE, "glibc").strip().lower() or "glibc"


def _users_own() -> dict[str, str]:
    """glibc malloc variables that are not the ones `kept` sets (so the user's)."""
    return {k: v for k in GLIBC_VARIABLES if (v := os.environ.get(k)) is not None and KEPT.get(k) != v}


def allocator_line() -> str:
    """What holds in this process, in one line (a run's timings.json records it)."""
    own = _users_own()
    if own:
        return "as set: " + ", ".join(f"{k}={v}" for k, v in own.items())
    if _wanted() != "kept":
        return "glibc's defaults"
    return KEEP_LINE if _libc() is not None else "glibc's defaults (not glibc: DECODIFF_ALLOCATOR=kept does nothing)"


def apply_allocator_policy() -> str:
    """Apply DECODIFF_ALLOCATOR to this process and the processes it starts; its line. Idempotent.
    A value other than glibc or kept stops the process with one line."""
    if _wanted() not in ("glibc", "kept"):
        sys.exit(f"decodiff: error: {POLICY_VARIABLE}={_wanted()!r}: expected 'glibc' (the default) or 'kept'")
    line = allocator_line()
    if line == KEEP_LINE:
        libc = _libc()
        assert libc is not None
        if libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) != 1 or libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) != 1:
            os.environ[POLICY_VARIABLE] = "glibc"  # what holds, for the run's record and the children
            return "glibc's defaults (mallopt refused the thresholds)"
        os.environ.update(KEPT)
    return line
