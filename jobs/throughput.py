"""How fast a device does DeCo-Diff's work: measured (the training benchmark's JSON) or, where
nothing was measured, an estimate from the GPU's published peak and an assumed utilisation.

The measured file (written by benchmarks/train_speed.py, passed as `--throughput FILE`):

    {"format": "decodiff-throughput/1",
     "device": "NVIDIA H100 80GB HBM3",      # torch.cuda.get_device_name(), or "cpu"
     "gpu": "h100",                          # optional: the name used with --gpu
     "entries": [
       {"model": "L",                        # UNet preset (model.size)
        "latent_size": 32,                   # latent side (image side / 8 for KL-f8)
        "latent_channels": 4,                # optional, default 4
        "mixed_precision": "no",             # no | fp16 | bf16 (train.mixed_precision)
        "num_classes": 15,                   # optional, default 15
        "train_samples_per_second": 412.0,   # optimizer-step throughput per process (GPU)
        "eval_images_per_second": 95.0,      # optional: full correction incl. VAE, per process
        "reverse_steps": 5}                  # with eval_images_per_second: the steps it used
     ]}

A measured rate is turned into achieved TFLOP/s with the same FLOP counts the plan uses, so one
measurement (say model L on an H100) also prices the other presets and image sizes on that GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decodiff.datasets.files import read_json
from decodiff.jobs.errors import JobError

FORMAT = "decodiff-throughput/1"
PRECISIONS = ("no", "fp16", "bf16")
# Assumed share of the peak a DeCo-Diff UNet step reaches (convolutions + attention on 32x32
# latents); labelled as estimates wherever they are used.
TRAIN_UTILISATION = 0.35
INFER_UTILISATION = 0.25


@dataclass(frozen=True)
class GPU:
    title: str
    fp32: float  # dense peak TFLOP/s without tensor cores
    tf32: float  # dense TF32 tensor-core peak (fp32 training with allow_tf32)
    half: float  # dense bf16/fp16 tensor-core peak with fp32 accumulation
    aliases: tuple[str, ...] = ()


# Dense peaks from the vendors' data sheets (no sparsity).
GPUS: dict[str, GPU] = {
    "h200": GPU("NVIDIA H200", 67.0, 494.7, 989.4),
    "h100": GPU("NVIDIA H100 SXM", 67.0, 494.7, 989.4),
    "a100": GPU("NVIDIA A100", 19.5, 156.0, 312.0),
    "l40s": GPU("NVIDIA L40S", 91.6, 183.0, 362.0),
    "a6000": GPU("NVIDIA RTX A6000 (the paper's GPU)", 38.7, 77.4, 154.8),
    "a10": GPU("NVIDIA A10", 31.2, 62.5, 125.0),
    "l4": GPU("NVIDIA L4", 30.3, 60.0, 121.0),
    "v100": GPU("NVIDIA V100", 15.7, 15.7, 125.0),
    "rtx4090": GPU("NVIDIA GeForce RTX 4090", 82.6, 82.6, 165.2, ("4090",)),
    "rtx3090": GPU("NVIDIA GeForce RTX 3090", 35.6, 35.6, 71.0, ("3090",)),
    "t4": GPU("NVIDIA T4", 8.1, 8.1, 65.0),
    "cpu": GPU("CPU (one process, a few cores)", 0.15, 0.15, 0.15),
}


def gpu_key(name: str) -> str | None:
    """A built-in profile for a device name ("NVIDIA H100 80GB HBM3" -> "h100"), or None."""
    n = name.lower().replace("nvidia", "").replace("geforce", "").replace(" ", "").replace("-", "").replace("_", "")
    if n in GPUS:
        return n
    n = n.replace("rtx", "")
    for key in sorted(GPUS, key=len, reverse=True):  # l40s before l4, a100 before a10
        if key.replace("rtx", "") in n or any(a in n for a in GPUS[key].aliases):
            return key
    return None


@dataclass
class Measurement:
    model: str
    latent_size: int
    mixed_precision: str
    train_samples_per_second: float
    latent_channels: int = 4
    num_classes: int = 15
    eval_images_per_second: float | None = None
    reverse_steps: int | None = None


@dataclass
class Measured:
    path: str
    device: str
    gpu: str | None
    entries: list[Measurement]


def load_throughput(path: str | Path) -> Measured:
    """Read and check a throughput file; JobError names the file and the bad field."""
    p = Path(path)
    d = read_json(p, JobError, f"--throughput {p}: file not found", f"--throughput {p}: not valid JSON")
    if not isinstance(d, dict):
        raise JobError(f"--throughput {p}: expected an object with device and entries")
    if d.get("format", FORMAT) != FORMAT:
        raise JobError(f"--throughput {p}: format {d.get('format')!r}, expected {FORMAT!r}")
    device = d.get("device")
    entries = d.get("entries")
    if not isinstance(device, str) or not device:
        raise JobError(f"--throughput {p}: 'device' must name the device (e.g. \"NVIDIA H100 80GB HBM3\")")
    if not isinstance(entries, list) or not entries:
        raise JobError(f"--throughput {p}: 'entries' must be a non-empty list of measurements")
    out = []
    for i, e in enumerate(entries):
        where = f"--throughput {p}: entries[{i}]"
        if not isinstance(e, dict):
            raise JobError(f"{where}: expected an object")
        try:
            m = Measurement(
                model=str(e["model"]),
                latent_size=int(e["latent_size"]),
                mixed_precision=str(e.get("mixed_precision", "no")),
                train_samples_per_second=float(e["train_samples_per_second"]),
                latent_channels=int(e.get("latent_channels", 4)),
                num_classes=int(e.get("num_classes", 15)),
                eval_images_per_second=float(e["eval_images_per_second"]) if e.get("eval_images_per_second") else None,
                reverse_steps=int(e["reverse_steps"]) if e.get("reverse_steps") else None,
            )
        except KeyError as exc:
            raise JobError(
                f"{where}: missing {exc.args[0]!r} (needs model, latent_size, train_samples_per_second)"
            ) from None
        except (TypeError, ValueError) as exc:
            raise JobError(f"{where}: bad value ({exc})") from None
        if m.mixed_precision not in PRECISIONS:
            raise JobError(f"{where}: mixed_precision {m.mixed_precision!r}, expected one of {', '.join(PRECISIONS)}")
        if m.train_samples_per_second <= 0 or m.latent_size < 1:
            raise JobError(f"{where}: train_samples_per_second and latent_size must be positive")
        if m.eval_images_per_second and not m.reverse_steps:
            raise JobError(f"{where}: eval_images_per_second needs reverse_steps")
        out.append(m)
    gpu = d.get("gpu")
    return Measured(str(p), device, str(gpu) if gpu else None, out)


@dataclass
class DeviceProfile:
    """Effective TFLOP/s per process for training and inference, by mixed precision."""

    name: str
    title: str
    train: dict[str, float]
    infer: dict[str, float]
    source: str  # how the numbers were obtained: "measured ..." or "estimate ..."
    measured: bool = False
    notes: list[str] = field(default_factory=list)

    def rate(self, kind: str, precision: str) -> float:
        table = self.train if kind == "train" else self.infer
        return table.get(precision) or table["no"]


def builtin_profile(name: str, allow_tf32: bool = True) -> DeviceProfile:
    key = gpu_key(name)
    if key is None:
        raise JobError(f"--gpu {name}: unknown GPU; known: {', '.join(GPUS)} (or measure it: --throughput FILE)")
    g = GPUS[key]
    fp = g.tf32 if allow_tf32 else g.fp32
    peaks = {"no": fp, "fp16": g.half, "bf16": g.half if key != "v100" else g.fp32}
    if key == "cpu":
        source = (
            f"estimate: a nominal {g.fp32:g} TFLOP/s per CPU process x assumed utilisation; CPUs differ "
            "widely: measure with benchmarks/train_speed.py and pass --throughput"
        )
    else:
        source = (
            f"estimate: {g.title} data-sheet peak x assumed utilisation ({TRAIN_UTILISATION:.0%} training, "
            f"{INFER_UTILISATION:.0%} inference); measure with benchmarks/train_speed.py and pass --throughput"
        )
    return DeviceProfile(
        key,
        g.title,
        {k: v * TRAIN_UTILISATION for k, v in peaks.items()},
        {k: v * INFER_UTILISATION for k, v in peaks.items()},
        source,
    )


def measured_profile(
    measured: Measured,
    train_gflops: Callable[[Measurement], float],
    infer_gflops: Callable[[Measurement], float],
    allow_tf32: bool = True,
) -> DeviceProfile:
    """A profile from measured rates: achieved TFLOP/s = rate x FLOPs per sample, averaged per
    precision; precisions (or inference) not measured are scaled from the built-in ratios."""
    key = measured.gpu and gpu_key(measured.gpu) or gpu_key(measured.device)
    base = builtin_profile(key, allow_tf32) if key else None
    train: dict[str, list[float]] = {}
    infer: dict[str, list[float]] = {}
    for m in measured.entries:
        train.setdefault(m.mixed_precision, []).append(m.train_samples_per_second * train_gflops(m) / 1e3)
        if m.eval_images_per_second:
            infer.setdefault(m.mixed_precision, []).append(m.eval_images_per_second * infer_gflops(m) / 1e3)
    t = {k: sum(v) / len(v) for k, v in train.items()}
    i = {k: sum(v) / len(v) for k, v in infer.items()}
    notes = []
    ref = next(iter(t))
    for prec in PRECISIONS:
        if prec not in t:
            ratio = base.train[prec] / base.train[ref] if base else 1.0
            t[prec] = t[ref] * ratio
            notes.append(
                f"training at mixed_precision={prec} scaled from {ref}" + ("" if base else " 1:1 (unknown GPU)")
            )
    for prec in PRECISIONS:
        if prec not in i:
            i[prec] = t[prec] * INFER_UTILISATION / TRAIN_UTILISATION
    if not infer:
        notes.append("inference not measured: training rate x assumed inference/training utilisation")
    models = ", ".join(sorted({f"{m.model}@{m.latent_size}/{m.mixed_precision}" for m in measured.entries}))
    return DeviceProfile(
        key or measured.device,
        measured.device,
        t,
        i,
        f"measured: {measured.path} ({measured.device}; {models})",
        True,
        notes,
    )


def profile_to_json(p: DeviceProfile) -> dict[str, Any]:
    return {
        "name": p.name,
        "title": p.title,
        "train_tflops": {k: round(v, 3) for k, v in p.train.items()},
        "infer_tflops": {k: round(v, 3) for k, v in p.infer.items()},
        "source": p.source,
        "measured": p.measured,
        "notes": p.notes,
    }
