"""Our UNet's training step and 5-step inference against a reference implementation, side by
side in one process (issue 16).

The reference is loaded from a path you give: a Python file, or a folder holding `models.py`,
that defines the DeCo-Diff authors' builder
`create_unet_model(latent_size, model_channels, num_res_blocks, num_heads, channel_mult,
context_dim, ncls)` (their published code: the LDM "openaimodel" UNet with spatial
transformers), called as `model(z_t, t, context=class_ids[:, None])`. Without `--reference`,
ours is timed alone.

Both get the same inputs (latents, steps, classes, targets), the same threads, the same
optimizer (AdamW, lr 1e-4, weight decay 1e-4) and train mode (dropout) for the step; eval mode
and no gradients for inference (5 model calls at t = 8, 6, 4, 2, 0 with the correction update
between them). Rounds are interleaved (their order alternates) and the best of N counts, in
wall seconds and in CPU seconds of this process (which other load on a shared machine inflates
less). `--load N` runs N more training jobs of our UNet (same size, batch and threads, in
their own processes) on the same cores while measuring: the "second training job" case.
`--compile` adds ours under torch.compile and reports its compile time (the first step);
`--bf16` adds ours under bfloat16 autocast (a labelled switch: it changes the numbers).
`--profile` first prints each one's costliest operators in one inference (torch.profiler).

    python benchmarks/unet_vs_reference.py                                   # ours alone, XS
    python benchmarks/unet_vs_reference.py --reference ~/DeCo-Diff          # beside the authors'
    python benchmarks/unet_vs_reference.py --reference ~/DeCo-Diff --load 1 --json out.json
    python benchmarks/unet_vs_reference.py --reference ~/DeCo-Diff --size L --batch 4 --rounds 3
    python benchmarks/unet_vs_reference.py --device cuda --size L --batch 64 --bf16 --compile   # a GPU
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from decodiff.harness.process_env import set_process_defaults

set_process_defaults()  # offline as `decodiff`; the OpenMP wait is the environment's (thread_wait.py sets it)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from decodiff.harness.allocator import allocator_line  # noqa: E402
from decodiff.models.unet_presets import UNET_PRESETS  # noqa: E402

# base channels and attention heads at the first level of the published presets (context = 2 x base)
AUTHORS_PRESETS = {"XS": (64, 4), "S": (128, 4), "M": (192, 6), "L": (256, 8), "XL": (320, 12)}
STEPS = (8, 6, 4, 2, 0)  # the published 5-step sub-sequence of T = 10


def load_reference(path: str) -> Callable[..., torch.nn.Module]:
    """`create_unet_model` from a file, or from `models.py` in a folder (its folder first on sys.path,
    so that its own imports resolve)."""
    p = Path(path).expanduser().resolve()
    file = p / "models.py" if p.is_dir() else p
    if not file.is_file():
        sys.exit(f"unet_vs_reference: {file} is not a file (expected a .py file or a folder with models.py)")
    sys.path.insert(0, str(file.parent))
    spec = importlib.util.spec_from_file_location("reference_models", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "create_unet_model"):
        sys.exit(f"unet_vs_reference: {file} defines no create_unet_model(...)")
    return module.create_unet_model


def build_ours(args: argparse.Namespace) -> torch.nn.Module:
    from decodiff.models.unet import build_unet

    return build_unet(args.size, num_classes=args.classes, sample_size=args.latent)


def build_reference(args: argparse.Namespace) -> torch.nn.Module:
    create = load_reference(args.reference)
    ch, heads = AUTHORS_PRESETS[args.size]
    return create(args.latent, ch, 2, heads, [1, 2, 4], 2 * ch, args.classes)


class Contestant:
    """One model with its optimizer and how it is called; inference may run on a copy of the
    weights in another memory layout (`infer_net`, `infer_call`), as the harness does."""

    def __init__(
        self,
        name: str,
        net: torch.nn.Module,
        call: Callable[..., torch.Tensor],
        infer_net: torch.nn.Module | None = None,
        infer_call: Callable[..., torch.Tensor] | None = None,
        bf16: bool = False,
        optimizer: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        self.name, self.net, self.call, self.bf16, self.device = name, net, call, bf16, device
        self.infer_net, self.infer_call = infer_net or net, infer_call or call
        self.opt = torch.optim.AdamW(
            [p for p in net.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4, **(optimizer or {})
        )

    def _amp(self) -> Any:
        return torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16)

    def train_step(self, z: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, target: torch.Tensor) -> None:
        self.net.train()
        with self._amp():
            pred = self.call(z, t, ids)
        loss = F.mse_loss(pred.float(), target)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        self.infer_net.eval()
        for i, step in enumerate(STEPS):  # deviation correction, z_{t-1} strategy (its arithmetic is negligible)
            tt = torch.full((z.shape[0],), step, dtype=torch.long, device=z.device)
            with self._amp():
                eta = self.infer_call(z, tt, ids).float()
            z = z - 0.1 * eta if i + 1 < len(STEPS) else z
        return z


def ours_contestant(args: argparse.Namespace, name: str, compile_: bool = False, bf16: bool = False) -> Contestant:
    """Our UNet as the harness runs it on CPU: training in the contiguous layout (train.channels_last
    false) with AdamW's foreach kernel (make_optimizer); inference on channels-last weights
    (infer.channels_last auto)."""
    from decodiff.models.layout import to_layout, use_channels_last

    torch.manual_seed(0)
    net = build_ours(args).to(args.device)
    # as infer.channels_last (auto: on CPU, and on CUDA with reduced precision), per contestant
    layout = use_channels_last(args.infer_channels_last, torch.device(args.device), reduced_precision=bf16)
    infer_net = to_layout(copy.deepcopy(net), layout)
    to_layout(net, args.train_channels_last)
    call, infer_call = net, infer_net
    if compile_:
        call, infer_call = torch.compile(net), torch.compile(infer_net)
    return Contestant(
        name,
        net,
        lambda z, t, ids: call(z, t, ids),
        infer_net,
        lambda z, t, ids: infer_call(z, t, ids),
        bf16=bf16,
        optimizer={"fused": True} if args.device == "cuda" else {"foreach": True},
        device=args.device,
    )


def contestants(args: argparse.Namespace) -> list[Contestant]:
    out = [ours_contestant(args, "ours")]
    if args.compile:
        out.append(ours_contestant(args, "ours+compile", compile_=True))
    if args.bf16:
        out.append(ours_contestant(args, "ours+bf16", bf16=True))
    if args.reference:
        torch.manual_seed(0)
        ref = build_reference(args).to(args.device)
        out.append(Contestant("reference", ref, lambda z, t, ids: ref(z, t, context=ids[:, None]), device=args.device))
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()  # on a GPU: the queued work is done before the clock is read
    return time.perf_counter() - wall, time.process_time() - cpu


def background(args: argparse.Namespace) -> None:
    """A training job of our UNet until terminated (the --load case)."""
    torch.set_num_threads(args.threads)
    c = ours_contestant(args, "load")
    z, t, ids, target = (x.to(args.device) for x in inputs(args))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        c.train_step(z, t, ids, target)


def inputs(args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 4, args.latent, args.latent)
    z = torch.randn(shape, generator=g)
    t = torch.randint(0, 10, (args.batch,), generator=g)
    ids = torch.randint(0, args.classes, (args.batch,), generator=g)
    return z, t, ids, torch.randn(shape, generator=g)


def start_load(args: argparse.Namespace) -> list[subprocess.Popen]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--background",
        "--size",
        args.size,
        "--batch",
        str(args.batch),
        "--latent",
        str(args.latent),
        "--threads",
        str(args.threads),
        "--classes",
        str(args.classes),
        "--device",
        args.device,
    ]
    if args.train_channels_last:
        cmd.append("--train-channels-last")
    procs = [subprocess.Popen(cmd) for _ in range(args.load)]
    time.sleep(args.load_warmup)  # let them reach their steady state (imports, first steps)
    return procs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", help="a .py file or a folder with models.py defining create_unet_model")
    ap.add_argument(
        "--size",
        default="XS",
        choices=sorted(UNET_PRESETS),
        help="our UNet preset (the reference has XS..XL; demo and tiny are ours alone)",
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--classes", type=int, default=15)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--load", type=int, default=0, help="extra training jobs of our UNet on the same cores")
    ap.add_argument("--load-warmup", type=float, default=20.0, help="seconds the load runs before timing")
    ap.add_argument("--compile", action="store_true", help="also ours under torch.compile (compile time reported)")
    ap.add_argument("--bf16", action="store_true", help="also ours under bfloat16 autocast (changes the numbers)")
    ap.add_argument(
        "--train-channels-last",
        action="store_true",
        help="train ours channels-last (default: contiguous, as train.channels_last=false)",
    )
    ap.add_argument(
        "--infer-channels-last",
        dest="infer_channels_last",
        action="store_true",
        default=None,
        help="infer ours channels-last (default: as infer.channels_last auto: on CPU, or with --bf16)",
    )
    ap.add_argument("--no-infer-channels-last", dest="infer_channels_last", action="store_false")
    ap.add_argument(
        "--profile", action="store_true", help="print each one's costliest operators in one inference, then time"
    )
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.background:
        return background(args)
    if args.reference and args.size not in AUTHORS_PRESETS:
        sys.exit(
            f"unet_vs_reference: --size {args.size} has no counterpart in the reference "
            f"(it has {', '.join(AUTHORS_PRESETS)})"
        )
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as train.allow_tf32
    z, t, ids, target = (x.to(args.device) for x in inputs(args))
    players = contestants(args)
    first: dict[str, dict[str, float]] = {}
    for c in players:  # first step and first inference: start-up (and compile) apart from the timings
        first[c.name] = {
            "train_seconds": round(timed(lambda c=c: c.train_step(z, t, ids, target))[0], 2),
            "infer_seconds": round(timed(lambda c=c: c.infer(z, ids))[0], 2),
        }
        c.train_step(z, t, ids, target)
        print(
            f"{c.name}: first step {first[c.name]['train_seconds']}s, first inference "
            f"{first[c.name]['infer_seconds']}s",
            file=sys.stderr,
            flush=True,
        )
    if args.profile:
        for c in players:
            print(f"{c.name}: {profile_line(lambda c=c: c.infer(z, ids))}", file=sys.stderr, flush=True)
    procs = start_load(args) if args.load else []
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for r in range(args.rounds):
            order = players if r % 2 == 0 else players[::-1]
            for c in order:
                times.setdefault((c.name, "train"), []).append(timed(lambda c=c: c.train_step(z, t, ids, target)))
            for c in order[::-1]:
                times.setdefault((c.name, "infer"), []).append(timed(lambda c=c: c.infer(z, ids)))
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
            summary(args, players, first, times, final=False)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    summary(args, players, first, times, final=True)


def profile_line(fn: Callable[[], Any], top: int = 6) -> str:
    """The operators with the most self CPU time in one call of `fn`, as shares of the total."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f} %" for e in events[:top])


def summary(
    args: argparse.Namespace,
    players: list[Contestant],
    first: dict[str, dict[str, float]],
    times: dict[tuple[str, str], list[tuple[float, float]]],
    final: bool,
) -> None:
    """Best-of-rounds table and speed-ups; printed at the end, written to --json after every round
    (a long run on a loaded machine leaves its partial result)."""
    rows: dict[str, dict[str, Any]] = {}
    for (name, kind), vals in times.items():
        wall, cpu = min(v[0] for v in vals), min(v[1] for v in vals)
        rows.setdefault(name, {})[kind] = {
            "best_seconds": round(wall, 4),
            "best_cpu_seconds": round(cpu, 4),
            "samples_per_second": round(args.batch / wall, 3),
            "cpu_seconds_per_sample": round(cpu / args.batch, 4),
            "rounds": len(vals),
        }
    ratios = {}
    if "reference" in rows:
        for name in rows:
            if name == "reference":
                continue
            for kind in rows[name]:
                if kind not in rows["reference"]:
                    continue
                ref, own = rows["reference"][kind], rows[name][kind]
                ratios[f"{name}_{kind}_speedup"] = round(ref["best_seconds"] / own["best_seconds"], 2)
                ratios[f"{name}_{kind}_cpu_speedup"] = round(ref["best_cpu_seconds"] / own["best_cpu_seconds"], 2)
    params = {c.name: sum(p.numel() for p in c.net.parameters()) for c in players}
    result = {
        "size": args.size,
        "batch": args.batch,
        "latent": args.latent,
        "threads": args.threads,
        "rounds": args.rounds,
        "load_jobs": args.load,
        "device": args.device,
        "train_channels_last": args.train_channels_last,
        "infer_channels_last": args.infer_channels_last
        if args.infer_channels_last is not None
        else "auto (on CPU, and on CUDA for ours+bf16)",
        "reference": args.reference,
        "parameters": params,
        "first": first,
        "timings": rows,
        "ratios": ratios,
        "complete": final,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "allocator": allocator_line(),  # glibc defaults or DECODIFF_ALLOCATOR=kept (README "glibc's allocator")
    }
    if final:
        print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
