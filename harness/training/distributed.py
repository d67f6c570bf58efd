"""Devices and processes for training and evaluation: the device and the Accelerator for a
config, seeds, a CPU control channel between ranks, gathering results on the main process, and
a clean shutdown.

Launch one process per GPU (`--num_processes` is the total over all machines):
    # one machine, G GPUs
    accelerate launch --multi_gpu --num_processes G -m decodiff.harness.cli train --config C --out DIR --resume
    # N machines x G GPUs: the same command on every machine, R = 0..N-1 its rank, HOST machine 0
    accelerate launch --multi_gpu --num_machines N --num_processes N*G --machine_rank R \
        --main_process_ip HOST --main_process_port 29500 -m decodiff.harness.cli train --config C --out DIR --resume
    # CPU (tests, a laptop): gloo instead of NCCL
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 -m decodiff.harness.cli ...
`--out` (checkpoints) must be on a file system all machines share; `run.cache_dir` (shards,
VAE, latent cache) may be shared or per machine (each machine's first process then builds it).

The control channel is a gloo process group beside NCCL: the small per-step exchanges (sample
counts, preemption, evaluation results) go over it as CPU tensors, so they never make the CPU
wait for the GPU's queue.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed

from decodiff.harness.config import Config, ConfigError

_control: Any = None


def device_for(cfg: Config) -> torch.device:
    """The device `run.device` names (auto: CUDA where there is one), for evaluation, encoding and the VAE."""
    if cfg.run.device == "cuda" or (cfg.run.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("run.device=cuda but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def use_cpu(cfg: Config) -> bool:
    if cfg.run.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but CUDA is not available")
    return (
        cfg.run.device == "cpu"
        or not torch.cuda.is_available()
        or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    )


@contextmanager
def tf32_for_training(cfg: Config) -> Iterator[None]:
    """TF32 in matrix products and convolutions as train.allow_tf32 says (both ways: torch's default
    already has it on for convolutions), for the training only: the process's flags are restored after,
    so that an evaluation in the same process (bench, a sweep trial) computes as a fresh `decodiff
    evaluate` of the model does, at torch's defaults."""
    if use_cpu(cfg):
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.train.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def make_accelerator(cfg: Config) -> Accelerator:
    """One Accelerator per process; accumulation and batching are done by the training loop
    (feed.py), so Accelerate sees one micro-batch per backward."""
    t = cfg.train
    cpu = use_cpu(cfg)
    if cpu and t.mixed_precision == "fp16":
        raise ConfigError("train.mixed_precision=fp16 needs a GPU (use bf16 or no on CPU)")
    # the other ranks wait at a barrier while the main process makes shards or a VAE (can be long)
    timeout = InitProcessGroupKwargs(timeout=timedelta(hours=2))
    acc = Accelerator(
        cpu=cpu,
        mixed_precision=t.mixed_precision,
        gradient_accumulation_steps=1,
        dynamo_backend="inductor" if t.compile else "no",
        kwargs_handlers=[timeout],
    )
    control_group()  # every rank creates it here, in the same order
    if dist.is_initialized():
        atexit.register(shutdown)
    return acc


def launched_world() -> int:
    """Processes started together by a launcher (`accelerate launch` and torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def accelerator_if_launched(cfg: Config) -> Accelerator | None:
    """The Accelerator when this process is one of several launched together, else None: a
    command that may or may not train joins the process group before its first shared step."""
    return make_accelerator(cfg) if launched_world() > 1 else None


@contextmanager
def builders_first(acc: Accelerator | None) -> Iterator[None]:
    """Run the body on the main process first, then on each machine's first process, then on the
    rest: shared caches (shards, VAE) are built once, per-machine caches once per machine, and
    every other process finds them made. Every rank passes the same two barriers."""
    if acc is None:
        yield
        return
    with acc.main_process_first(), acc.local_main_process_first():
        yield


def seed_everything(seed: int) -> None:
    """random, numpy and torch (CPU and CUDA) of this process."""
    set_seed(seed)


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def control_group() -> Any:
    """The gloo group for small CPU exchanges (the default group when it is gloo already)."""
    global _control
    if not (dist.is_available() and dist.is_initialized()):
        return None
    if _control is None:
        _control = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return _control


def all_sum(values: list[int]) -> list[int]:
    """Element-wise sum of small integer vectors over all ranks (a no-op in one process)."""
    rank, world = rank_and_world()
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(t, group=control_group())
    return [int(v) for v in t.tolist()]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's object on the main process (rank order), None elsewhere. Objects are
    pickled between this run's own processes only (never read from files)."""
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0, group=control_group())
    return out


def broadcast_from_main(obj: Any) -> Any:
    rank, world = rank_and_world()
    if world == 1:
        return obj
    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0, group=control_group())
    return box[0]


def same_weights_on_all_ranks(model: torch.nn.Module) -> str:
    """sha256 of the model's weights; raises if any rank holds different ones (DDP out of sync)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    rank, world = rank_and_world()
    if world > 1:
        digests = gather_to_main(digest)
        bad = [] if digests is None else [r for r, d in enumerate(digests) if d != digests[0]]
        bad = broadcast_from_main(bad)
        if bad:
            raise RuntimeError(f"the weights of ranks {bad} differ from rank 0's: the processes went out of sync")
    return digest


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier(group=control_group())


def shutdown() -> None:
    """Destroy the process groups (NCCL warns at exit otherwise); safe to call twice."""
    global _control
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control = None
