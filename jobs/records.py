"""The local index of submitted jobs, so `decodiff jobs status|logs|stop ID` knows each job's
back end, address and folder without being told again.

One JSON line per submission in `$DECODIFF_STATE_DIR/jobs.jsonl` (default
`$XDG_STATE_HOME/decodiff`, else `~/.local/state/decodiff`). Each job's folder also keeps its own
`job.json`, so the index can be rebuilt from the folders.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from decodiff.datasets.files import write_atomic


@dataclass
class JobRecord:
    id: str  # SLURM job id or Ray submission id
    backend: str  # "slurm" | "ray"
    kind: str  # "train" | "bench" | "sweep"
    name: str
    job_dir: str  # the job's folder (script, configs, logs, status files)
    submitted: str  # ISO time
    address: str | None = None  # Ray dashboard address
    script: str | None = None  # sbatch script
    tasks: int = 1  # array tasks
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def state_dir() -> Path:
    if os.environ.get("DECODIFF_STATE_DIR"):
        return Path(os.environ["DECODIFF_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "decodiff"


def index_path() -> Path:
    return state_dir() / "jobs.jsonl"


def add_record(rec: JobRecord) -> None:
    """Append the record to the index and write job.json into the job's folder."""
    folder = Path(rec.job_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "job.json", json.dumps(rec.to_json(), indent=2) + "\n")
    path = index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(rec.to_json(), separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines from parallel submits do not interleave
    finally:
        os.close(fd)


def all_records() -> list[JobRecord]:
    path = index_path()
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
            out.append(JobRecord(**d))
        except (ValueError, TypeError):
            continue  # a torn or foreign line never hides the others
    return out


def find_record(job_id: str) -> JobRecord | None:
    """The newest record whose id is `job_id`; SLURM array tasks (`123_4`) match their array job."""
    base = job_id.split("_", 1)[0] if job_id.split("_", 1)[0].isdigit() else job_id
    for rec in reversed(all_records()):
        if rec.id in (job_id, base):
            return rec
    return None
