"""SLURM time limits: read ("90", "1:30:00", "2-00:00:00") and written back."""

from __future__ import annotations

import re

from decodiff.jobs.errors import JobError

_FORMS = (
    re.compile(r"^(?P<m>\d+)$"),
    re.compile(r"^(?P<m>\d+):(?P<s>\d+)$"),
    re.compile(r"^(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d+)$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+)$"),
    re.compile(r"^(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)$"),
)


def parse_time(text: str) -> int:
    """Seconds of a SLURM time limit in any of sbatch's forms: minutes, minutes:seconds,
    hours:minutes:seconds, days-hours, days-hours:minutes, days-hours:minutes:seconds."""
    t = str(text).strip()
    for form in _FORMS:
        m = form.match(t)
        if m:
            g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
            seconds = g.get("d", 0) * 86400 + g.get("h", 0) * 3600 + g.get("m", 0) * 60 + g.get("s", 0)
            if seconds <= 0:
                break
            return seconds
    raise JobError(f"--time {text!r}: expected a SLURM time limit such as 90 (minutes), 4:00:00 or 2-00:00:00")


def format_time(seconds: float) -> str:
    """Seconds as SLURM's [days-]hours:minutes:seconds, rounded up to the minute."""
    s = int(-(-max(0, seconds) // 60) * 60)
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{sec:02d}" if d else f"{h:02d}:{m:02d}:{sec:02d}"


def format_duration(seconds: float) -> str:
    """A human duration for tables: 45 s, 12 min, 3.4 h, 2.1 d."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
