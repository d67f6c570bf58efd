"""Rendered sbatch scripts: valid bash, the launcher arguments accelerate itself parses, job
arrays, the Ray cluster of a sweep, and option errors before anything is written."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from decodiff.jobs.errors import JobError
from decodiff.jobs.sbatch import SlurmJob, SlurmResources, Task, render

BIN = Path(sys.executable).parent


def _job(tmp_path, kind="train", n_tasks=1, **kw) -> SlurmJob:
    tasks = [Task(tmp_path / f"config-{i}.yaml", f"tiny:{i}") for i in range(n_tasks)] if kind != "sweep" else []
    return SlurmJob(kind=kind, name="tiny", job_dir=tmp_path / "job", workdir=tmp_path, tasks=tasks, env_bin=BIN, **kw)


def _bash_n(text: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sbatch"
    path.write_text(text)
    p = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def _sbatch_options(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^#SBATCH --([\w-]+)(?:=(.*))?$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _launcher_argv(text: str, env: dict[str, str]) -> list[str]:
    """The `accelerate launch` argv a node would run: the srun payload expanded by bash with
    that node's SLURM variables (accelerate replaced by printf to see the words)."""
    m = re.search(r"bash -c '(exec accelerate launch.*?)'\n", text, re.S)
    assert m, "no srun ... bash -c 'accelerate launch ...' line"
    payload = m.group(1).replace("accelerate launch", "printf '%s\\n'", 1)
    full_env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", **env)
    p = subprocess.run(["bash", "-c", payload], capture_output=True, text=True, env=full_env, check=True)
    return p.stdout.splitlines()


def _parse_accelerate(argv: list[str]):
    from accelerate.commands.launch import launch_command_parser

    return launch_command_parser().parse_args(argv)


def test_four_nodes_one_launcher_per_node_with_accelerate_arguments(tmp_path):
    text = render(
        _job(tmp_path),
        SlurmResources(nodes=4, gpus_per_node=8, time="2:00:00", partition="gpu", account="proj", cpus_per_task=32),
    )
    _bash_n(text, tmp_path)
    opts = _sbatch_options(text)
    assert opts["nodes"] == "4" and opts["ntasks-per-node"] == "1" and opts["gpus-per-node"] == "8"
    assert opts["time"] == "2:00:00" and opts["partition"] == "gpu" and opts["account"] == "proj"
    assert opts["cpus-per-task"] == "32" and "requeue" in opts and opts["signal"] == "B:USR1@120"
    assert opts["output"].endswith("job/slurm-%j.out") and "array" not in opts
    # srun starts one launcher per node ...
    srun = next(line for line in text.splitlines() if "srun" in line and "accelerate launch" in line)
    assert '--nodes="$SLURM_NNODES"' in srun and "--ntasks-per-node=1" in srun and "--kill-on-bad-exit=1" in srun
    # ... main address from the node list, port found on the first node, 32 processes in all
    assert 'MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in text
    assert "MAIN_PORT=$(free_port $((20000 + SLURM_JOB_ID % 20000)))" in text and "NUM_PROCESSES=32" in text
    # what node 2 runs, parsed by accelerate's own argument parser
    argv = _launcher_argv(
        text,
        {
            "SLURM_NNODES": "4",
            "SLURM_NODEID": "2",
            "MAIN_ADDR": "gpu-017",
            "MAIN_PORT": "29517",
            "NUM_PROCESSES": "32",
            "CONFIG": "/jobs/config.yaml",
        },
    )
    a = _parse_accelerate(argv)
    assert (a.num_machines, a.machine_rank, a.main_process_ip, a.main_process_port) == (4, 2, "gpu-017", 29517)
    assert a.num_processes == 32 and a.multi_gpu and a.rdzv_backend == "static" and a.same_network
    assert a.mixed_precision == "no" and a.max_restarts == 0
    assert Path(a.training_script) == BIN / "decodiff"  # the console script, run by each process
    assert a.training_script_args == ["train", "--config", "/jobs/config.yaml"]


def test_one_node(tmp_path):
    # one process: the command itself as a job step
    text = render(_job(tmp_path, kind="bench"), SlurmResources(nodes=1))
    _bash_n(text, tmp_path)
    opts = _sbatch_options(text)
    assert opts["nodes"] == "1" and "gpus-per-node" not in opts and "accelerate launch" not in text
    assert 'run_step srun --ntasks=1 decodiff bench --config "$CONFIG"' in text
    # one node with 4 GPUs: accelerate with 4 processes on one machine, no rendezvous settings
    text = render(_job(tmp_path), SlurmResources(nodes=1, gpus_per_node=4, mem="200G"))
    _bash_n(text, tmp_path)
    assert _sbatch_options(text)["gpus-per-node"] == "4" and _sbatch_options(text)["mem"] == "200G"
    a = _parse_accelerate(
        _launcher_argv(
            text,
            {
                "SLURM_NNODES": "1",
                "SLURM_NODEID": "0",
                "MAIN_ADDR": "n1",
                "MAIN_PORT": "20001",
                "NUM_PROCESSES": "4",
                "CONFIG": "c.yaml",
            },
        )
    )
    assert (a.num_machines, a.machine_rank, a.num_processes, a.multi_gpu) == (1, 0, 4, True)
    assert a.rdzv_backend == "static" and not a.same_network  # accelerate's default; no multi-node options
    assert f"export PATH={shlex.quote(str(BIN))}:" in text
    # a CPU node with two processes: the same launcher, gloo (ACCELERATE_USE_CPU)
    text = render(_job(tmp_path), SlurmResources(nodes=1, processes_per_node=2))
    _bash_n(text, tmp_path)
    assert "export ACCELERATE_USE_CPU=true" in text and "NUM_PROCESSES=2" in text and "gpus-per-node" not in text
    a = _parse_accelerate(
        _launcher_argv(
            text,
            {
                "SLURM_NNODES": "1",
                "SLURM_NODEID": "0",
                "MAIN_ADDR": "n1",
                "MAIN_PORT": "20001",
                "NUM_PROCESSES": "2",
                "CONFIG": "c.yaml",
            },
        )
    )
    assert (a.num_processes, a.multi_gpu, a.gpu_ids) == (2, True, None)
    with pytest.raises(JobError, match="processes-per-node"):
        render(_job(tmp_path), SlurmResources(gpus_per_node=4, processes_per_node=8))


def test_multi_node_bench_trains_on_all_nodes_then_evaluates_once(tmp_path):
    text = render(_job(tmp_path, kind="bench", mixed_precision="bf16"), SlurmResources(nodes=2, gpus_per_node=4))
    _bash_n(text, tmp_path)
    lines = text.splitlines()
    train_i = next(i for i, line in enumerate(lines) if "accelerate launch" in line)
    bench_i = next(i for i, line in enumerate(lines) if "decodiff bench --config" in line)
    assert train_i < bench_i and '"$(command -v decodiff)" train --config "$CONFIG"' in text
    assert "--mixed_precision bf16" in text
    assert 'srun --nodes=1 --ntasks=1 decodiff bench --config "$CONFIG"' in lines[bench_i]


def test_array_tasks_pick_their_config(tmp_path):
    job = _job(tmp_path, kind="bench", n_tasks=3)
    text = render(job, SlurmResources(max_parallel=2))
    _bash_n(text, tmp_path)
    opts = _sbatch_options(text)
    assert opts["array"] == "0-2%2" and opts["output"].endswith("slurm-%A_%a.out")
    # the task index selects the config: run the selection lines in bash
    sel = "\n".join(line for line in text.splitlines() if line.startswith(("CONFIGS=", "LABELS=", "CONFIG=")))
    for task in range(3):
        p = subprocess.run(
            ["bash", "-c", f'TASK={task}\n{sel}\necho "$CONFIG ${{LABELS[$TASK]}}"'],
            capture_output=True,
            text=True,
            check=True,
        )
        assert p.stdout.split() == [str(tmp_path / f"config-{task}.yaml"), f"tiny:{task}"]


def test_sweep_starts_ray_head_and_workers_then_the_sweep(tmp_path):
    job = _job(
        tmp_path,
        kind="sweep",
        grid=tmp_path / "grid.yaml",
        sweep_overrides=["train.max_steps=5"],
        sweep_options=["--shards=mvtec=/data/mvtec"],
    )
    text = render(job, SlurmResources(nodes=4, gpus_per_node=8, cpus_per_task=64))
    _bash_n(text, tmp_path)
    head = next(line for line in text.splitlines() if "ray start --head" in line)
    assert '-w "$HEAD_NODE"' in head and "--block" in head and '--port="$RAY_PORT"' in head
    assert '--num-gpus="$GPUS_PER_NODE"' in head and "--overlap" in head
    worker = next(line for line in text.splitlines() if "ray start --block --address" in line)
    assert '-w "$node"' in worker and '--address="$HEAD_IP:$RAY_PORT"' in worker
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | tail -n +2' in text  # workers on the other nodes
    sweep = next(line for line in text.splitlines() if line.startswith("run_step decodiff sweep"))
    # overrides right after the file (argparse positionals), then the cluster address and folder
    assert re.search(
        r'decodiff sweep "\$GRID" train\.max_steps=5 --address "\$HEAD_IP:\$RAY_PORT" '
        r'--out "\$SWEEP_DIR" "\$\{RESUME\[@\]\}" --shards=mvtec=/data/mvtec',
        sweep,
    ), sweep
    assert text.index("ray status") < text.index("for node in")  # workers join once the head answers
    assert "stop_ray" in text.split("decodiff sweep")[1]


def test_sweep_command_line_is_accepted_by_decodiff_sweep(tmp_path):
    """The rendered sweep call parses with the real `decodiff sweep` parser."""
    from decodiff.harness.cli import build_parser

    job = _job(
        tmp_path,
        kind="sweep",
        grid=tmp_path / "grid.yaml",
        sweep_overrides=["train.max_steps=5"],
        sweep_options=["--shards=mvtec=/data/mvtec"],
    )
    text = render(job, SlurmResources(nodes=2))
    line = next(x for x in text.splitlines() if x.startswith("run_step decodiff sweep"))
    env = {"GRID": str(tmp_path / "grid.yaml"), "HEAD_IP": "10.0.0.1", "RAY_PORT": "40001", "SWEEP_DIR": "/j/sweep"}
    p = subprocess.run(
        ["bash", "-c", "RESUME=(--resume)\n" + line.replace("run_step decodiff", "printf '%s\\n'", 1)],
        capture_output=True,
        text=True,
        env=dict(os.environ, **env),
        check=True,
    )
    args = build_parser().parse_args(p.stdout.splitlines())
    assert args.command == "sweep" and args.sweep == env["GRID"] and args.overrides == ["train.max_steps=5"]
    assert args.address == "10.0.0.1:40001" and str(args.out) == "/j/sweep" and args.resume
    assert args.shards == ["mvtec=/data/mvtec"]


@pytest.mark.parametrize(
    "res, match",
    [
        (SlurmResources(nodes=0), "--nodes"),
        (SlurmResources(time="2 hours"), "--time"),
        (SlurmResources(partition="a b"), "spaces"),
        (SlurmResources(sbatch_args=["exclusive"]), "--sbatch-arg"),
        (SlurmResources(max_parallel=0), "--max-parallel"),
    ],
)
def test_bad_options(tmp_path, res, match):
    with pytest.raises(JobError, match=match):
        render(_job(tmp_path), res)


def test_sweep_job_without_grid_or_with_array_is_refused(tmp_path):
    with pytest.raises(JobError, match="sweep file"):
        render(_job(tmp_path, kind="sweep"), SlurmResources())
    job = _job(tmp_path, kind="sweep", grid=tmp_path / "g.yaml")
    job.tasks = [Task(tmp_path / "c.yaml")]
    with pytest.raises(JobError, match="arrays"):
        render(job, SlurmResources())


def test_short_time_limit_shortens_the_warning():
    assert SlurmResources(time="10").grace_seconds == 120
    assert SlurmResources(time="4").grace_seconds == 60  # a quarter of 4 minutes
    assert SlurmResources().grace_seconds == 120


def _run_with_fake_slurm(text: str, tmp_path: Path, srun_body: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run a rendered script with `srun` and `scontrol` replaced by small scripts (the real ones
    are exercised by tests/jobs/test_slurm_cluster.py); scontrol's arguments are logged."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/bash\n" + srun_body + "\n")
    (fake / "scontrol").write_text(
        '#!/bin/bash\necho "$*" >> "$SCONTROL_LOG"\n[ "$1 $2" = "show hostnames" ] && echo localhost\nexit 0\n'
    )
    for f in fake.iterdir():
        f.chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    log = tmp_path / "scontrol.log"
    env = dict(
        os.environ,
        PATH=f"{fake}:{os.environ['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_NNODES="1",
        SLURM_NODEID="0",
        SLURM_JOB_NODELIST="localhost",
        SCONTROL_LOG=str(log),
    )
    env.pop("SLURM_ARRAY_JOB_ID", None)
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60), log


@pytest.mark.parametrize("flagged", [True, False])
def test_a_training_that_flags_its_preemption_checkpoint_is_requeued(tmp_path, flagged):
    """Under accelerate launch the step exits 1 even when the workers exited 75; the flag file the
    training writes ($DECODIFF_PREEMPTED_FILE) makes the script requeue. Without it, exit 1 is a failure."""
    text = render(_job(tmp_path), SlurmResources(nodes=1, gpus_per_node=2, time="10", partition="gpu"))
    body = 'echo "preempted by SIGTERM at step 3" > "$DECODIFF_PREEMPTED_FILE"; exit 1' if flagged else "exit 1"
    p, log = _run_with_fake_slurm(text, tmp_path, body)
    status = tmp_path / "job" / "status"
    if flagged:
        assert p.returncode == 0, p.stderr
        assert (status / "4242.requeued").read_text().strip() == "75" and "requeue 4242" in log.read_text()
    else:
        assert p.returncode == 1, p.stderr
        assert (status / "4242.exit").read_text().strip() == "1" and not (status / "4242.requeued").exists()
        assert "requeue" not in (log.read_text() if log.exists() else "")


def test_a_sweep_job_does_not_hand_the_flag_to_its_trials(tmp_path):
    """A sweep's trials may be stopped by Ray: that must never requeue the whole job."""
    sweep = render(
        _job(tmp_path, kind="sweep", grid=tmp_path / "grid.yaml"), SlurmResources(nodes=2, gpus_per_node=1, time="10")
    )
    train = render(_job(tmp_path), SlurmResources(nodes=2, gpus_per_node=1, time="10"))
    assert "DECODIFF_PREEMPTED_FILE" not in sweep and 'export DECODIFF_PREEMPTED_FILE="$PREEMPTED_FLAG"' in train
