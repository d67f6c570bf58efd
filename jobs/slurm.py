"""SLURM through its commands (sbatch, scontrol, scancel): submit a rendered script,
and the status, logs and cancellation of a job or array by id.

Status comes from `scontrol show job` while SLURM knows the job (finished jobs stay there for
MinJobAge, 5 minutes by default), then from the status files the job script writes into its
folder, so it needs no accounting database (`sacct`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from decodiff.jobs.errors import JobError

TIMEOUT = 30  # seconds for one SLURM client command
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
    "REVOKED",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise JobError(
            f"{name} not found on PATH: SLURM's client commands are needed (install slurm-client, "
            f"or run on a login node)"
        )
    return path


def _run(args: list[str], what: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise JobError(
            f"{what}: `{' '.join(args[:2])}` gave no answer in {TIMEOUT} s (is slurmctld reachable?)"
        ) from None
    if check and p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise JobError(f"{what}: {msg[-1] if msg else f'{args[0]} exited {p.returncode}'}")
    return p


def submit(script: Path, extra_args: list[str] = ()) -> str:
    """sbatch the script; returns the job id (an array's job id for arrays)."""
    p = _run([_tool("sbatch"), "--parsable", *extra_args, str(script)], f"sbatch {script}")
    job_id = p.stdout.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise JobError(f"sbatch {script}: unexpected answer {p.stdout.strip()!r}")
    return job_id


@dataclass
class TaskState:
    id: str  # "123" or "123_4"
    state: str  # SLURM state (PENDING, RUNNING, COMPLETED, ...) or REQUEUED/UNKNOWN from the folder
    exit_code: int | None = None
    reason: str = ""
    elapsed: str = ""
    node: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "state": self.state,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "elapsed": self.elapsed,
            "node": self.node,
        }


def _scontrol(job_id: str) -> list[TaskState]:
    """What slurmctld knows about the job; [] when it does not (or cannot be asked from here)."""
    if shutil.which("scontrol") is None:
        return []
    p = _run(["scontrol", "-o", "show", "job", job_id.split("_")[0]], f"scontrol show job {job_id}", check=False)
    if p.returncode != 0:
        return []
    out = []
    for line in p.stdout.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        tid = f.get("JobId", "")
        if f.get("ArrayJobId") and f.get("ArrayTaskId"):
            task = f["ArrayTaskId"]
            tid = f"{f['ArrayJobId']}_{task}" if task.isdigit() else f"{f['ArrayJobId']}_[{task}]"
        code = f.get("ExitCode", "")
        exit_code = int(code.split(":")[0]) if re.match(r"^\d+:\d+$", code) else None
        reason = f.get("Reason", "")
        out.append(
            TaskState(
                tid,
                f.get("JobState", "UNKNOWN"),
                exit_code,
                "" if reason == "None" else reason,
                f.get("RunTime", ""),
                f.get("BatchHost", "") or f.get("NodeList", ""),
            )
        )
    return out


def _from_folder(job_id: str, job_dir: Path | None, tasks: int) -> list[TaskState]:
    if job_dir is None:
        return []
    status = Path(job_dir) / "status"
    base = job_id.split("_")[0]
    if "_" in job_id:
        ids = [job_id]
    else:  # the array's tasks: those expected, and any that left a status file
        found = {p.name.rsplit(".", 1)[0] for p in status.glob(f"{base}_*.*")} if status.is_dir() else set()
        ids = sorted(found | ({f"{base}_{i}" for i in range(tasks)} if tasks > 1 else set()), key=_order) or [job_id]
    out = []
    for tid in ids:
        exit_file, requeued = status / f"{tid}.exit", status / f"{tid}.requeued"
        if exit_file.is_file():
            rc = int(exit_file.read_text().strip() or 1)
            out.append(TaskState(tid, "COMPLETED" if rc == 0 else "FAILED", rc, "from the job folder"))
        elif requeued.is_file():
            out.append(TaskState(tid, "REQUEUED", None, "checkpointed and requeued"))
        else:
            out.append(TaskState(tid, "UNKNOWN", None, "SLURM no longer knows the job and it left no status"))
    return out


def status(job_id: str, job_dir: Path | None = None, tasks: int = 1) -> list[TaskState]:
    """One entry per task (pending array tasks folded as `123_[2-5]`), filtered to `job_id`
    when it names one task."""
    states = _scontrol(job_id) or _from_folder(job_id, job_dir, tasks)
    if not states:
        raise JobError(
            f"job {job_id}: SLURM does not know it (finished jobs are forgotten after MinJobAge) "
            "and no job folder was recorded for it"
        )
    if "_" in job_id:
        states = [s for s in states if s.id == job_id] or states
    return sorted(states, key=lambda s: _order(s.id))


def _order(tid: str) -> tuple:
    base, _, task = tid.partition("_")
    return (int(base) if base.isdigit() else 0, int(task) if task.isdigit() else -1, tid)


def log_files(job_id: str, job_dir: Path) -> list[Path]:
    """The output files of the job (one per array task), named as the script's --output says."""
    base, _, task = job_id.partition("_")
    folder = Path(job_dir)
    if task:
        files = [folder / f"slurm-{base}_{task}.out"]
    else:
        files = sorted(folder.glob(f"slurm-{base}_*.out"), key=lambda p: _order(p.stem.removeprefix("slurm-")))
        files = files or [folder / f"slurm-{base}.out"]
    return files


def read_logs(job_id: str, job_dir: Path) -> str:
    parts = []
    files = log_files(job_id, job_dir)
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        parts.append(f"==> {f.name} <==\n{text}" if len(files) > 1 else text)
    if not parts:
        raise JobError(f"job {job_id}: no log yet in {job_dir} (pending jobs write none)")
    return "\n".join(parts)


def follow_logs(job_id: str, job_dir: Path, tasks: int, poll: float = 2.0) -> Iterator[str]:
    """New log text as it is written, until every task has finished."""
    seen: dict[Path, int] = {}
    last: Path | None = None
    while True:
        files = log_files(job_id, job_dir)
        for f in files:
            if f.is_file():
                with open(f, errors="replace") as fh:
                    fh.seek(seen.get(f, 0))
                    chunk = fh.read()
                    seen[f] = fh.tell()
                if chunk:
                    if len(files) > 1 and f != last:
                        yield f"==> {f.name} <==\n"  # as `tail -f` marks which file a chunk is from
                    last = f
                    yield chunk
        try:
            done = all(s.final or s.state == "UNKNOWN" for s in status(job_id, job_dir, tasks))
        except JobError:
            done = True
        if done:
            return
        time.sleep(poll)


def cancel(job_id: str, signal: str | None = None) -> None:
    args = [_tool("scancel")]
    if signal:
        args += ["--signal", signal, "--batch"]
    _run(args + [job_id], f"scancel {job_id}")


def wait(
    job_id: str, job_dir: Path | None = None, tasks: int = 1, timeout: float | None = None, poll: float = 1.0
) -> list[TaskState]:
    """Poll until every task has finished (or `timeout` seconds pass); returns the last states."""
    start = time.monotonic()
    while True:
        states = status(job_id, job_dir, tasks)
        if states and all(s.final for s in states):
            return states
        if timeout is not None and time.monotonic() - start > timeout:
            return states
        time.sleep(poll)
