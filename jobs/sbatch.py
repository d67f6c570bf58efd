"""sbatch scripts for decodiff jobs: multi-node Accelerate training, the benchmark, and a Ray
cluster across the allocation running a sweep; job arrays; preemption and requeue.

The scripts call only the `decodiff` console script (and `accelerate`/`ray` from the same
environment): everything a job does is a CLI command a user could type.

Launch
- train, or bench with more than one process: one `accelerate launch` per node through
  `srun --ntasks-per-node=1`; the main process address is the allocation's first node (where the
  batch script runs), its port a free one found there starting from a number derived from the
  job id, and each launcher's machine rank is its `SLURM_NODEID`.
- bench: after the (multi-node) training step, `decodiff bench` on the batch node evaluates; it
  finds the model trained by the step in the shared cache (same training key) and reuses it.
- sweep: `ray start --head` on the first node, `ray start --address` on the others (one `srun`
  each, `--overlap` so the driver can run beside them), then `decodiff sweep GRID --address`.

Preemption
- `#SBATCH --signal=B:USR1@GRACE` warns the batch shell GRACE seconds before the time limit.
  The trap sends SIGTERM to the running step's tasks (`scancel --signal=TERM`; torchrun forwards
  it to its workers); the training saves a checkpoint at the next step and exits with 75
  (harness/training/preemption.py). The script then requeues the job (`scontrol requeue`; the job has
  `--requeue`, logs are appended). The requeued job reruns the same command, and the training
  continues from its checkpoint (the model cache resumes an unfinished training of the same key).
- A step that exits 75 without a warning (its tasks were signalled, e.g. `scancel --signal=TERM
  ID` to checkpoint now) is requeued too: 75 means "checkpointed, run me again". Under
  `accelerate launch` the launcher exits 1 whatever its workers' code, so the training also
  writes $DECODIFF_PREEMPTED_FILE (status/<task>.preempted; train and bench jobs only), which
  counts as 75.
- SIGTERM to the batch shell (scancel, or preemption, where SLURM itself requeues or not as
  its PreemptMode says) is forwarded to the step so it checkpoints; the script never requeues
  then, so a cancelled job stays cancelled.

Every task writes `status/<job id>.exit` (its exit code) or `status/<job id>.requeued` into the
job folder, which `decodiff jobs status` reads once SLURM has forgotten the job.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from decodiff.jobs.errors import JobError
from decodiff.jobs.walltime import parse_time

PREEMPTED_EXIT = 75  # the training's exit code after a preemption checkpoint (EX_TEMPFAIL)
KINDS = ("train", "bench", "sweep")


@dataclass
class SlurmResources:
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None  # CPUs per node (one task per node)
    mem: str | None = None  # per node, sbatch syntax (e.g. 64G, 0 = all)
    time: str | None = None  # time limit in any sbatch form
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    processes_per_node: int | None = None  # training processes per node (default: GPUs per node, 1 on CPU nodes)
    grace: int = 120  # seconds between the USR1 warning and the time limit
    max_parallel: int | None = None  # array tasks running at once (%N)
    sbatch_args: list[str] = field(default_factory=list)  # extra `#SBATCH` options, verbatim

    def check(self) -> None:
        if self.nodes < 1:
            raise JobError(f"--nodes {self.nodes}: expected 1 or more")
        if self.gpus_per_node < 0:
            raise JobError(f"--gpus-per-node {self.gpus_per_node}: expected 0 or more")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise JobError(f"--cpus-per-task {self.cpus_per_task}: expected 1 or more")
        if self.grace < 0:
            raise JobError(f"--grace {self.grace}: expected seconds >= 0")
        if self.processes_per_node is not None and self.processes_per_node < 1:
            raise JobError(f"--processes-per-node {self.processes_per_node}: expected 1 or more")
        if self.processes_per_node and self.gpus_per_node and self.processes_per_node > self.gpus_per_node:
            raise JobError(
                f"--processes-per-node {self.processes_per_node}: more than the {self.gpus_per_node} GPUs per node"
            )
        if self.max_parallel is not None and self.max_parallel < 1:
            raise JobError(f"--max-parallel {self.max_parallel}: expected 1 or more")
        if self.time is not None:
            parse_time(self.time)
        for a in self.sbatch_args:
            if not a.startswith("-") or "\n" in a:
                raise JobError(f"--sbatch-arg {a!r}: expected one sbatch option such as --exclusive or --mail-type=END")

    @property
    def processes(self) -> int:
        """Training processes: one per GPU (or per --processes-per-node), one per CPU node."""
        return self.nodes * (self.processes_per_node or max(1, self.gpus_per_node))

    @property
    def grace_seconds(self) -> int:
        """The warning lead, at most a quarter of the time limit so a short job still runs."""
        if self.time is None:
            return self.grace
        return min(self.grace, parse_time(self.time) // 4)


@dataclass
class Task:
    """One array task (or the only task): the config it runs and a label for the logs."""

    config: Path
    label: str = ""


@dataclass
class SlurmJob:
    kind: str  # train | bench | sweep
    name: str
    job_dir: Path  # script, configs, logs and status files
    workdir: Path  # the job's working directory (relative config paths resolve here)
    tasks: list[Task] = field(default_factory=list)  # train/bench: one or more (an array)
    grid: Path | None = None  # sweep: the sweep file
    sweep_overrides: list[str] = field(default_factory=list)  # sweep: key=value for every trial
    sweep_options: list[str] = field(default_factory=list)  # sweep: extra options (--shards=NAME=DIR)
    env_bin: Path | None = None  # folder with decodiff, accelerate and ray, put first on PATH
    setup: list[str] = field(default_factory=list)  # shell lines run first (module load, source venv)
    mixed_precision: str = "no"
    env: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.kind not in KINDS:
            raise JobError(f"job kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.kind == "sweep":
            if self.grid is None:
                raise JobError("sweep job: a sweep file is required")
            if self.tasks:
                raise JobError("sweep job: job arrays are for train and bench (a sweep spreads its own trials)")
        elif not self.tasks:
            raise JobError(f"{self.kind} job: a config is required")
        for line in self.setup:
            if "\n" in line:
                raise JobError(f"--setup {line!r}: one shell line per --setup")


def script_name() -> str:
    return "job.sbatch"


def log_pattern(job: SlurmJob) -> str:
    """sbatch's --output: %j (job id), or %A_%a (array job id, task index) for arrays."""
    return str(job.job_dir / ("slurm-%A_%a.out" if len(job.tasks) > 1 else "slurm-%j.out"))


def render(job: SlurmJob, res: SlurmResources) -> str:
    """The sbatch script; raises JobError on bad options. Pure: writes nothing."""
    job.check()
    res.check()
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# decodiff {job.kind} job '{job.name}': rendered by `decodiff submit slurm`; submit with `sbatch {job.job_dir / script_name()}`.",
        f"#SBATCH --job-name={_sbatch_value(f'decodiff-{job.kind}-{job.name}')}",
        f"#SBATCH --nodes={res.nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if res.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={res.gpus_per_node}")
    for opt, value in (
        ("cpus-per-task", res.cpus_per_task),
        ("mem", res.mem),
        ("time", res.time),
        ("partition", res.partition),
        ("account", res.account),
        ("qos", res.qos),
        ("constraint", res.constraint),
    ):
        if value is not None:
            lines.append(f"#SBATCH --{opt}={_sbatch_value(str(value))}")
    lines += [
        f"#SBATCH --output={_sbatch_value(log_pattern(job))}",
        "#SBATCH --open-mode=append",
        f"#SBATCH --chdir={_sbatch_value(str(job.workdir))}",
        "#SBATCH --requeue",
    ]
    if res.grace_seconds > 0:
        lines.append(f"#SBATCH --signal=B:USR1@{res.grace_seconds}")
    if len(job.tasks) > 1:
        lines.append(f"#SBATCH --array=0-{len(job.tasks) - 1}" + (f"%{res.max_parallel}" if res.max_parallel else ""))
    lines += [f"#SBATCH {a}" for a in res.sbatch_args]
    lines += ["", "set -uo pipefail"]
    lines += list(job.setup)
    if job.env_bin is not None:
        lines.append(f'export PATH={q(str(job.env_bin))}:"$PATH"')
    env = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **job.env}
    lines += [f"export {k}={q(v)}" for k, v in env.items()]
    lines += [
        f"JOB_DIR={q(str(job.job_dir))}",
        f"PREEMPTED_EXIT={PREEMPTED_EXIT}",
        f"NODES={res.nodes}",
        f"GPUS_PER_NODE={res.gpus_per_node}",
        _COMMON,
    ]
    if job.kind == "sweep":
        lines.append(_sweep_body(job, res))
    else:
        lines.append(_config_body(job, res))
    return "\n".join(lines) + "\n"


def _sbatch_value(v: str) -> str:
    """sbatch reads `#SBATCH` lines itself (no shell): values must be one token on one line."""
    if any(c in v for c in "\n\r\t ") or not v:
        raise JobError(f"{v!r}: sbatch options cannot contain spaces or line breaks")
    return v


# Shared by every script: task identity, status files, signal handling, running a step.
_COMMON = r"""
TASK=${SLURM_ARRAY_TASK_ID:-0}
if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then TASK_ID="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; else TASK_ID="$SLURM_JOB_ID"; fi
mkdir -p "$JOB_DIR/status"
PREEMPTED_FLAG="$JOB_DIR/status/$TASK_ID.preempted"  # written by a training that checkpointed on a signal
rm -f "$JOB_DIR/status/$TASK_ID.exit" "$JOB_DIR/status/$TASK_ID.requeued" "$PREEMPTED_FLAG"
say() { echo "[decodiff-job $(date '+%F %T')] $*" >&2; }
say "task $TASK_ID on $(hostname) (nodes: ${SLURM_JOB_NODELIST:-?}, restart ${SLURM_RESTART_COUNT:-0})"

WARNED=0
TERMED=0
STEP_PID=
STEP_SRUN=0
# SIGTERM to the running work. A job step's tasks get it from SLURM (`scancel --signal`, which
# signals the steps only): SIGTERM to srun itself would cancel the step and kill its tasks.
stop_step() {
  if [ -z "$STEP_PID" ]; then return; fi
  if [ "$STEP_SRUN" = 1 ]; then scancel --signal=TERM "$SLURM_JOB_ID" 2>/dev/null || kill -TERM "$STEP_PID" 2>/dev/null
  else kill -TERM "$STEP_PID" 2>/dev/null; fi
}
on_usr1() {  # the time-limit warning (#SBATCH --signal=B:USR1@...): checkpoint, then requeue
  WARNED=1
  say "time-limit warning: asking the run to checkpoint and stop (it is requeued afterwards)"
  stop_step
}
on_term() {  # scancel or preemption: let the run checkpoint; SLURM decides about requeueing
  TERMED=1
  say "SIGTERM: asking the run to checkpoint and stop"
  stop_step
}
trap on_usr1 USR1
trap on_term TERM

# Run one step in the background so the traps run while it works; return its exit code.
run_step() {
  if [ "$1" = srun ]; then STEP_SRUN=1; else STEP_SRUN=0; fi
  "$@" &
  STEP_PID=$!
  local rc
  while :; do
    wait "$STEP_PID"; rc=$?
    if ! kill -0 "$STEP_PID" 2>/dev/null; then wait "$STEP_PID" 2>/dev/null; rc=$?; break; fi
  done
  STEP_PID=
  return "$rc"
}

# End the task: requeue after a preemption checkpoint, else record the exit code.
finish() {
  local rc=$1
  if [ "$rc" -ne 0 ] && [ -f "$PREEMPTED_FLAG" ]; then rc=$PREEMPTED_EXIT; fi
  if [ "$rc" -ne 0 ] && [ "$TERMED" = 0 ] && { [ "$WARNED" = 1 ] || [ "$rc" -eq "$PREEMPTED_EXIT" ]; }; then
    say "checkpointed (exit $rc): requeueing job $SLURM_JOB_ID; the run resumes from its checkpoint"
    echo "$rc" > "$JOB_DIR/status/$TASK_ID.requeued"
    scontrol requeue "$SLURM_JOB_ID" || say "scontrol requeue failed; resubmit $JOB_DIR/job.sbatch to resume"
    exit 0
  fi
  echo "$rc" > "$JOB_DIR/status/$TASK_ID.exit"
  say "finished with exit code $rc"
  exit "$rc"
}

# A free port on this (the first) node, starting from a number derived from the job id so that
# jobs sharing a node rarely collide.
free_port() {
  python - "$1" <<'PY'
import socket, sys
start = int(sys.argv[1])
for port in list(range(start, start + 200)) + [0]:
    s = socket.socket()
    try:
        s.bind(("", port))
        print(s.getsockname()[1])
        break
    except OSError:
        continue
    finally:
        s.close()
PY
}
"""


def _config_body(job: SlurmJob, res: SlurmResources) -> str:
    q = shlex.quote
    configs = " ".join(q(str(t.config)) for t in job.tasks)
    labels = " ".join(q(t.label or t.config.stem) for t in job.tasks)
    out = [
        f"CONFIGS=({configs})",
        f"LABELS=({labels})",
        "CONFIG=${CONFIGS[$TASK]}",
        'say "config $CONFIG (${LABELS[$TASK]})"',
        # train/bench only (not sweeps, whose failed trials must not requeue the job): a launcher
        # turns the training's exit 75 into 1, so the training also says so through this file
        'export DECODIFF_PREEMPTED_FILE="$PREEMPTED_FLAG"',
    ]
    distributed = res.processes > 1
    if not distributed:
        # one process: the command itself, as a job step
        out.append(f'run_step srun --ntasks=1 decodiff {job.kind} --config "$CONFIG"')
        out.append("finish $?")
        return "\n".join(out) + "\n"
    launch = [
        "exec accelerate launch",
        '--num_machines "$SLURM_NNODES"',
        '--machine_rank "$SLURM_NODEID"',
        '--main_process_ip "$MAIN_ADDR"',
        '--main_process_port "$MAIN_PORT"',
        '--num_processes "$NUM_PROCESSES"',
    ]
    # torchrun's launcher for GPUs and CPUs alike (ACCELERATE_USE_CPU=true: gloo instead of NCCL)
    launch += ["--multi_gpu"] + (["--gpu_ids all"] if res.gpus_per_node > 0 else [])
    if res.nodes > 1:
        launch += ["--rdzv_backend static", "--same_network"]
    launch += [
        f"--mixed_precision {q(job.mixed_precision)}",
        "--dynamo_backend no",
        "--max_restarts 0",
        '"$(command -v decodiff)" train --config "$CONFIG"',
    ]
    out += [
        'MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "MAIN_PORT=$(free_port $((20000 + SLURM_JOB_ID % 20000)))",
        f"NUM_PROCESSES={res.processes}",
        "export MAIN_ADDR MAIN_PORT NUM_PROCESSES CONFIG",
    ]
    if res.gpus_per_node == 0:
        out.append("export ACCELERATE_USE_CPU=true  # CPU nodes: processes talk over gloo")
    out += [
        'say "training on $SLURM_NNODES node(s) x $GPUS_PER_NODE GPU(s): $NUM_PROCESSES processes, main $MAIN_ADDR:$MAIN_PORT"',
        "# one launcher per node; the single quotes defer $SLURM_NODEID to each node",
        'run_step srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c \''
        + " \\\n    ".join(launch)
        + "'",
        "rc=$?",
    ]
    if job.kind == "bench":
        out += [
            'if [ "$rc" -ne 0 ]; then finish "$rc"; fi',
            "# evaluation and report on this node: the model the step trained is found in the cache",
            'run_step srun --nodes=1 --ntasks=1 decodiff bench --config "$CONFIG"',
            "finish $?",
        ]
    else:
        out.append('finish "$rc"')
    return "\n".join(out) + "\n"


def _sweep_body(job: SlurmJob, res: SlurmResources) -> str:
    q = shlex.quote
    over = "".join(" " + q(a) for a in job.sweep_overrides)  # positionals right after the file (argparse)
    opts = "".join(" " + q(a) for a in job.sweep_options)
    cpus = "${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}"
    return (
        "\n".join(
            [
                f"GRID={q(str(job.grid))}",
                'SWEEP_DIR="$JOB_DIR/sweep"',
                'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                "HEAD_IP=$(hostname --ip-address | awk '{print $1}')",
                "RAY_PORT=$(free_port $((40000 + SLURM_JOB_ID % 20000)))",
                'RAY_TMP="/tmp/ray-$SLURM_JOB_ID"',
                "export RAY_USAGE_STATS_ENABLED=0",
                "RAY_PIDS=()",
                'stop_ray() { if [ ${#RAY_PIDS[@]} -gt 0 ]; then kill -TERM "${RAY_PIDS[@]}" 2>/dev/null; wait "${RAY_PIDS[@]}" 2>/dev/null; fi; }',
                'say "Ray head on $HEAD_NODE ($HEAD_IP:$RAY_PORT), $SLURM_NNODES node(s) x $GPUS_PER_NODE GPU(s)"',
                f'srun --overlap --nodes=1 --ntasks=1 -w "$HEAD_NODE" ray start --head --block --node-ip-address="$HEAD_IP" '
                f'--port="$RAY_PORT" --num-cpus={cpus} --num-gpus="$GPUS_PER_NODE" --include-dashboard=false '
                '--temp-dir="$RAY_TMP" --disable-usage-stats &',
                "RAY_PIDS+=($!)",
                'for i in $(seq 1 120); do ray status --address="$HEAD_IP:$RAY_PORT" >/dev/null 2>&1 && break; sleep 1; done',
                'if ! ray status --address="$HEAD_IP:$RAY_PORT" >/dev/null 2>&1; then say "the Ray head did not come up"; stop_ray; finish 1; fi',
                'for node in $(scontrol show hostnames "$SLURM_JOB_NODELIST" | tail -n +2); do',
                f'  srun --overlap --nodes=1 --ntasks=1 -w "$node" ray start --block --address="$HEAD_IP:$RAY_PORT" '
                f'--num-cpus={cpus} --num-gpus="$GPUS_PER_NODE" --temp-dir="$RAY_TMP" --disable-usage-stats &',
                "  RAY_PIDS+=($!)",
                "done",
                "RESUME=()",
                'if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] || [ -d "$SWEEP_DIR" ]; then RESUME=(--resume); fi',
                f'run_step decodiff sweep "$GRID"{over} --address "$HEAD_IP:$RAY_PORT" --out "$SWEEP_DIR" "${{RESUME[@]}}"{opts}',
                "rc=$?",
                "stop_ray",
                'finish "$rc"',
            ]
        )
        + "\n"
    )
