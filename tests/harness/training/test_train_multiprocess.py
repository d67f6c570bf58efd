"""Training over two real processes (`accelerate launch --multi_gpu --num_processes 2`, CPU, gloo)
on shards that divide unevenly, and exact resume after SIGKILL and after preemption (SIGTERM).

The data: three categories of the tiny demo set, 9 training images each, re-sharded 6 images
per shard: the shards (6, 3, 6, 3, 6, 3) cannot be dealt evenly to two ranks (15 and 12
samples), so one rank runs out a step early in every epoch.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from decodiff.datasets.mvtec import read_mvtec
from decodiff.datasets.shards import write_shards
from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.evaluation.evaluate import evaluate
from decodiff.harness.training.checkpoint import STATE_DIR, latest_state, load_model
from decodiff.harness.training.vae_fit import get_vae

SCRIPT = Path(__file__).with_name("train_ranks_script.py")
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
PORT = 29600 + os.getpid() % 300
DEMO = ["data.demo.n_train=9", "data.demo.categories=[brick,coffee,coins]"]


def launch(args: list[str], port: int, extra_env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    env = dict(
        os.environ,
        ACCELERATE_USE_CPU="true",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        PYTHONWARNINGS="ignore",
        **(extra_env or {}),
    )
    cmd = [
        ACCELERATE,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *args,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Config overrides for the uneven shard set (data, VAE and latent cache made once here)."""
    root = tmp_path_factory.mktemp("ranks")
    cache = root / "cache"
    shards = root / "uneven-shards"
    base = build_config("tiny", [f"run.cache_dir={cache}", *DEMO])
    write_shards(_demo_samples(base), shards, dataset="demo", max_count=6)
    overrides = [
        f"run.cache_dir={cache}",
        "run.device=cpu",
        *DEMO,
        f"data.shards={shards}",
        "train.batch_size=6",
        "train.grad_accum=2",
        "train.max_steps=24",
        "train.lr_schedule=cosine",
        "train.ema=0.9",
        "train.warmup=2",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "infer.batch_size=4",
        "vae.steps=4",
    ]
    cfg = build_config("tiny", overrides)
    data = prepare_data(cfg)
    get_vae(cfg, data)
    return {"root": root, "overrides": overrides, "cfg": cfg, "data": data}


def _demo_samples(cfg):
    from decodiff.datasets.demo import generate_demo

    d = cfg.data.demo
    root = Path(cfg.run.cache_dir) / "demo-uneven"
    generate_demo(
        root,
        size=d.size,
        n_train=d.n_train,
        n_test_good=d.n_test_good,
        n_test_per_defect=d.n_test_per_defect,
        categories=d.categories,
        seed=0,
    )
    return read_mvtec(root, dataset="demo")


@pytest.fixture(scope="module")
def ranks_run(uneven, tmp_path_factory):
    """One two-process run of train_ranks_script.py: its report, and its training folder (the
    uninterrupted reference for the resume test)."""
    tmp = tmp_path_factory.mktemp("ranks-run")
    report, out = tmp / "report.json", tmp / "out"
    rc, _, err = finish(launch([str(SCRIPT), str(report), str(out), *uneven["overrides"]], PORT))
    assert rc == 0, err[-3000:]
    return json.loads(report.read_text()), out


@pytest.mark.slow
def test_two_ranks_sync_cover_and_evaluate_like_one(uneven, ranks_run):
    """Gradients equal across ranks and equal to the one-process mean-loss gradient; weights
    equal; every training sample once per epoch over both ranks (latent cache and images);
    evaluation over both ranks gives the numbers of one process."""
    data = uneven["data"]
    # the deal really is uneven, so the balancing (and the placeholder) is exercised
    assert sorted(s.count for s in data.manifest.shards if s.split == "train") == [3, 3, 3, 6, 6, 6]
    r, out = ranks_run
    assert r["world"] == 2

    all_keys = sorted(_train_keys(data))
    for name, (rank0, rank1) in r["coverage"].items():
        seen = rank0["keys"] + rank1["keys"]
        assert sorted(seen) == all_keys, name  # each sample exactly once per epoch, none lost
        assert rank0["steps"] == rank1["steps"], name  # the same number of steps on every rank
        assert [len(rank0["keys"]), len(rank1["keys"])] == rank0["planned"], name
        assert rank0["n_global"] == rank1["n_global"], name
        assert sum(rank0["n_global"]) == len(all_keys), name
        if name.startswith("images"):  # (the latent cache has its own, smaller shards)
            assert sorted(rank0["planned"]) == [12, 15] and rank0["steps"] == 5, name
            assert rank0["empty_steps"] + rank1["empty_steps"] == 1, name

    w = r["weighted_gradient"]
    assert w["ranks_equal"]
    assert w["max_abs_diff_to_reference"] <= 1e-6 * max(1.0, w["reference_norm"])
    g = r["loop_gradients"]
    assert g["steps"] == 3 and g["ranks_equal"] and g["nonzero"]
    assert r["steps"] == 24
    assert r["digests"][0] == r["digests"][1]  # weights equal after the steps

    # the same checkpoint evaluated by this single process (one thread, like the ranks)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, spec, _ = load_model(out / "checkpoint")
        single = evaluate(uneven["cfg"], data, model, get_vae(uneven["cfg"], data), spec["classes"], out=None)
    finally:
        torch.set_num_threads(threads)
    assert r["eval"]["ranks_same"]
    assert r["eval"]["samples"] == single.samples
    assert r["eval"]["records"] == single.records  # exactly the same numbers


def _train_keys(data):
    from decodiff.datasets.stream import ShardStream

    return [s["key"] for s in ShardStream(data.urls("train"))]


def _train_cmd(overrides, out, *extra):
    return ["-m", "decodiff.harness.cli", "train", "--config", "tiny", "--out", str(out), "--json", *extra, *overrides]


def _wait_for_step(out: Path, step: int, p: subprocess.Popen, timeout: float = 180) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        state = latest_state(out)
        if state is not None and int(state.name.split("-")[1]) >= step:
            return int(state.name.split("-")[1])
        if p.poll() is not None:
            raise AssertionError(f"training ended before step {step}: {p.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint at step {step} within {timeout}s")


def _descendants(root: int) -> dict[int, list[bytes]]:
    """pid -> environment of every live descendant of `root` (torchrun starts its workers in
    sessions of their own, so a process group does not reach them)."""
    parent, envs = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            envs[int(pid)] = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
    out = {}
    for pid in envs:
        up = pid
        while up in parent and up > 1:
            up = parent[up]
            if up == root:
                out[pid] = envs[pid]
                break
    return out


def _worker_pid(launcher: int, local_rank: int) -> int:
    for pid, env in _descendants(launcher).items():
        if f"LOCAL_RANK={local_rank}".encode() in env:
            return pid
    raise AssertionError(f"no worker with LOCAL_RANK={local_rank} under {launcher}")


def _kill_all(p: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it at once (what a node failure does)."""
    pids = [p.pid, *_descendants(p.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(timeout=60)
    for pid in pids:  # reap-free wait until the workers are gone
        for _ in range(500):
            if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]:
                break
            time.sleep(0.01)


@pytest.fixture
def launched():
    """Launches of a test, killed (with their workers) if the test fails half-way."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            _kill_all(p)


@pytest.mark.slow
def test_killed_then_preempted_run_resumes_bitwise(uneven, ranks_run, tmp_path, launched):
    """Two processes: a run SIGKILLed after a checkpoint; resumed, and then its rank 1 alone gets
    SIGTERM (both ranks stop at the same step, save, exit 75); resumed again. It ends with
    weights, optimizer, EMA and random states bitwise equal to the uninterrupted run's."""
    _, ref = ranks_run
    run = tmp_path / "run"
    p = launch(_train_cmd(uneven["overrides"], run), PORT + 1)
    launched.append(p)
    step = _wait_for_step(run, 6, p)
    _kill_all(p)  # the launcher and both workers: no chance to save
    step = int(latest_state(run).name.split("-")[1])
    assert step < 24 and not (run / "checkpoint" / "model.safetensors").exists()

    flag = tmp_path / "status" / "job.preempted"  # what a job script names to learn of it
    p = launch(_train_cmd(uneven["overrides"], run, "--resume"), PORT + 2, {"DECODIFF_PREEMPTED_FILE": str(flag)})
    launched.append(p)
    _wait_for_step(run, step + 4, p)
    os.kill(_worker_pid(p.pid, 1), signal.SIGTERM)
    rc, out, err = finish(p)
    assert rc != 0 and "exitcode  : 75" in err, err[-3000:]  # the worker's code; the launcher exits 1
    assert flag.read_text().startswith("preempted by ")  # so the job script can requeue on it anyway
    assert "resumed at step" in err
    latest = json.loads((run / STATE_DIR / "latest.json").read_text())
    assert latest["reason"] == "preempted" and step < latest["step"] < 24
    state = run / STATE_DIR / latest["state"]
    assert sorted(f.name for f in state.iterdir()) == sorted(
        [
            "ema.safetensors",
            "model.safetensors",
            "optimizer.safetensors",
            "state.json",
            "rank-0.json",
            "rank-1.json",
            "rank-0.safetensors",
            "rank-1.safetensors",
        ]
    )  # nothing pickled

    rc, out, err = finish(launch(_train_cmd(uneven["overrides"], run, "--resume"), PORT + 3))
    assert rc == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["resumed_from"] == latest["step"]

    assert (run / "checkpoint" / "model.safetensors").read_bytes() == (
        ref / "checkpoint" / "model.safetensors"
    ).read_bytes()
    a, b = ref / STATE_DIR / "step-00000024", run / STATE_DIR / "step-00000024"
    for name in (
        "model.safetensors",
        "optimizer.safetensors",
        "ema.safetensors",
        "rank-0.safetensors",
        "rank-1.safetensors",
    ):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_evaluate_command_over_two_ranks_reports_once(uneven, ranks_run, tmp_path):
    """`accelerate launch ... decodiff evaluate` over two processes: both ranks score a share of the
    test set, the main one alone writes the run folder and prints the results, with the numbers
    of a one-process evaluation."""
    r, out = ranks_run
    runs = tmp_path / "runs"
    args = [
        "-m",
        "decodiff.harness.cli",
        "evaluate",
        "--checkpoint",
        str(out / "checkpoint"),
        "--config",
        "tiny",
        "--json",
        *uneven["overrides"],
        f"run.out_dir={runs}",
        "tracking.enabled=false",
        "metrics.bootstrap=0",
    ]
    rc, stdout, err = finish(launch(args, PORT + 4))
    assert rc == 0, err[-3000:]
    assert [p.name.split("-")[1] for p in runs.iterdir()] == ["evaluate"]  # one run folder, not one per rank
    res = json.loads(stdout)  # exactly one JSON object: only the main process printed
    assert Path(res["report"]).is_file()
    assert res["metrics"] == r["eval"]["records"]
    assert "on 2 processes" in err
    # both ranks kept their shards' z and Decoder(z) (auto on a CPU), and the numbers read back are those above
    given = dict(o.split("=", 1) for o in uneven["overrides"] if o.startswith(("run.cache_dir=", "data.shards=")))
    manifest = json.loads((Path(given["data.shards"]) / "manifest.json").read_text())
    kept = {p.parent.name for p in (Path(given["run.cache_dir"]) / "references").glob("*/*/*.npz")}
    assert kept == {s["name"] for s in manifest["shards"] if s["split"] == "test"}  # every rank's share


@pytest.mark.slow
def test_bench_command_over_two_ranks_trains_evaluates_and_reports_once(uneven, tmp_path):
    """`accelerate launch ... decodiff bench` over two processes: both ranks train (DDP) and score;
    the main one alone writes the run folder and prints the results. Run again, every rank
    reuses the model (the main process decides for all) and the numbers are the same."""
    runs = tmp_path / "runs"
    args = [
        "-m",
        "decodiff.harness.cli",
        "bench",
        "--config",
        "tiny",
        "--json",
        *uneven["overrides"],
        "train.max_steps=4",
        f"run.out_dir={runs}",
        "tracking.enabled=false",
        "metrics.bootstrap=0",
    ]
    rc, stdout, err = finish(launch(args, PORT + 5))
    assert rc == 0, err[-3000:]
    assert "over 2 process(es)" in err and "on 2 processes" in err
    assert [p.name.split("-")[1] for p in runs.iterdir()] == ["bench"]
    first = json.loads(stdout)
    rc, stdout, err = finish(launch(args, PORT + 6))
    assert rc == 0, err[-3000:]
    assert "train: reusing" in err and "train: UNet" not in err
    assert json.loads(stdout)["metrics"] == first["metrics"]
    assert len(list(runs.iterdir())) == 2


@pytest.mark.slow
def test_evaluate_refuses_another_model_size_and_keeps_the_checkpoints_vae(uneven, ranks_run, tmp_path):
    """A checkpoint is evaluated with the VAE it was trained with, even for a subset of categories
    (whose own small VAE would differ); a model.size that is not the checkpoint's is refused."""
    _, out = ranks_run
    cli = str(Path(sys.executable).with_name("decodiff"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    base = [
        "evaluate",
        "--checkpoint",
        str(out / "checkpoint"),
        "--config",
        "tiny",
        *uneven["overrides"],
        f"run.out_dir={tmp_path / 'runs'}",
        "tracking.enabled=false",
        "metrics.bootstrap=0",
    ]
    p = subprocess.run([cli, *base, "model.size=demo"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "a UNet of size tiny, but the config says model.size=demo" in p.stderr
    assert not (tmp_path / "runs").exists()
    p = subprocess.run(
        [cli, *base, "data.categories=[coins]", "--json"], capture_output=True, text=True, env=env, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "VAE: the checkpoint's own" in p.stderr and "training a small AutoencoderKL" not in p.stderr
    assert {r["category"] for r in json.loads(p.stdout)["metrics"]} >= {"coins", "mean"}


@pytest.mark.slow
def test_two_machines_train_to_the_weights_of_one_machine_with_two_processes(uneven, ranks_run, tmp_path, launched):
    """Two `accelerate launch` processes as two machines (--num_machines 2, machine ranks 0 and 1, one
    process each, loopback, gloo) on one shared --out: the final model is byte for byte the one of
    one machine with two processes."""
    _, ref = ranks_run
    run = tmp_path / "run"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    machines = []
    for rank in (0, 1):
        cmd = [
            ACCELERATE,
            "launch",
            "--multi_gpu",
            "--num_machines",
            "2",
            "--num_processes",
            "2",
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(PORT + 7),
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            *_train_cmd(uneven["overrides"], run),
        ]
        machines.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        launched.append(machines[-1])
    results = [finish(p, timeout=400) for p in machines]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "over 2 process(es)" in results[0][2]
    printed = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results if out.strip()]
    assert len(printed) == 1 and printed[0]["info"]["steps"] == 24  # the main process alone reports
    final = "checkpoint/model.safetensors"
    assert (run / final).read_bytes() == (ref / final).read_bytes()
