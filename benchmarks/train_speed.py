"""Training and evaluation throughput (issue 5, "Measure").

Training samples/s of a UNet preset (default XS) on 256x256 images (32x32x4 latents), side by
side in one run:
- with the latent cache (no VAE in the loop) and without it (the frozen VAE encodes every batch);
- one process with one thread, one process with all threads, and N processes with one thread
  each under `accelerate launch --multi_gpu` (gloo on CPU): the scaling from 1 to N processes.
Then evaluation images/s: deviation correction with 5 reverse steps, decoding (the
reconstruction and the VAE reference), anomaly maps and image scores.

Every measurement is the real code path (`harness.training.loop.train`, `harness.evaluation.evaluate.evaluate`)
in a fresh process on the embedded demo set generated at 256 px. Weights are untrained: only
speed is measured. Training rates exclude the first optimizer step (start-up); the latent cache
is built once beforehand and its build rate reported apart. The VAE is the project's CPU one
(`--vae small`: the f8-small AutoencoderKL) or the Stable-Diffusion KL-f8 architecture
(`--vae sd`: 83.7M parameters, random weights, as costly as sd-vae-ft-ema). Timings on a
shared machine are noisy: rows run interleaved (cache on/off side by side, `--repeat` rounds,
the fastest counts), and each row also reports samples per CPU-second (CPU time of all its
processes over the timed steps), which other load on the machine does not inflate.

    python benchmarks/train_speed.py                 # CPU, XS, a few minutes
    python benchmarks/train_speed.py --vae sd --eval-images 4
    python benchmarks/train_speed.py --device cuda --size L --precision bf16 --batch 64 --steps 30 \\
        --layouts 1x0 --vae sd --json out.json      # a GPU (see benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def overrides(args: argparse.Namespace, work: Path, with_shards: bool = True) -> list[str]:
    shards = work / "shards"  # the training images in small units (prepare, --shard-samples), so that ranks share them
    return [
        *([f"data.shards={shards}"] if with_shards and args.shard_samples else []),
        f"data.root={work / 'demo'}",  # the generated demo set (sharded by prepare with --shard-samples)
        f"run.cache_dir={work / 'cache'}",
        f"run.out_dir={work / 'runs'}",
        f"run.device={args.device}",
        "data.demo.size=256",
        f"data.demo.n_train={args.train_images}",
        f"data.demo.n_test_good={args.test_images}",
        f"data.demo.n_test_per_defect={max(1, args.test_images // 4)}",
        f"data.demo.categories=[{','.join(args.categories)}]",
        "data.num_workers=0",
        f"model.size={args.size}",
        f"vae.pretrained={work / 'vae'}",
        f"train.batch_size={args.batch}",
        "train.grad_accum=1",
        f"train.max_steps={args.steps}",
        f"train.mixed_precision='{args.precision}'",
        "train.checkpoint_every=1000000",
        "train.log_every=1000000",
        "train.lr_schedule=constant",
        "train.warmup=0",
        "train.cache_variants=2",
        f"infer.batch_size={args.eval_batch}",
        "infer.reverse_steps=5",
        f"infer.precision={'bf16' if args.precision == 'bf16' else 'fp32'}",  # the row's precision, inference too
        "tracking.enabled=false",
    ]


# ---- worker: one measurement in this process (or in each process of an accelerate launch) -------
def worker(args: argparse.Namespace) -> None:
    import torch

    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data
    from decodiff.harness.training.distributed import gather_to_main, make_accelerator, shutdown
    from decodiff.harness.training.vae_fit import get_vae

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    cfg = build_config("demo", [*overrides(args, work), f"train.latent_cache={args.cache == 'on'}"])
    result: dict = {}
    if args.worker == "train":
        from decodiff.harness.training.loop import train

        acc = make_accelerator(cfg)
        with acc.main_process_first():
            data = prepare_data(cfg)
            vae = get_vae(cfg, data)
        res = train(cfg, data, vae, work / Path(args.result).stem, accelerator=acc)  # the same folder on every rank
        cpu = gather_to_main(res.timed_cpu_seconds)
        result = {
            "samples_per_second": res.samples_per_second,
            "steps": res.steps,
            "seconds": res.seconds,
            "samples_per_cpu_second": res.timed_samples / sum(cpu) if cpu and sum(cpu) else 0.0,
        }
        is_main = acc.is_main_process
    else:
        from decodiff.harness.evaluation.evaluate import evaluate
        from decodiff.models.unet import build_unet

        data = prepare_data(cfg)
        vae = get_vae(cfg, data)
        torch.manual_seed(0)
        model = build_unet(args.size, num_classes=len(data.categories), sample_size=vae.latent_size(256))
        if args.device == "cuda":  # an untimed pass first: CUDA context, cuDNN's algorithm search, the allocator
            evaluate(cfg, data, model, vae, data.categories, out=None)
        cpu0 = time.process_time()
        ev = evaluate(cfg, data, model, vae, data.categories, out=None)
        result = {
            "images_per_second": ev.images_per_second,
            "images": len(ev.samples),
            "seconds": ev.seconds,
            "images_per_cpu_second": len(ev.samples) / (time.process_time() - cpu0),
        }
        is_main = True
    if is_main:
        Path(args.result).write_text(json.dumps(result))
    shutdown()


# ---- driver -----------------------------------------------------------------------------------
def prepare(args: argparse.Namespace, work: Path) -> dict:
    """Data, the VAE folder and the latent cache (built once, timed apart)."""
    import torch
    from diffusers import AutoencoderKL

    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data
    from decodiff.harness.training.latent_cache import build_latent_cache, cache_key
    from decodiff.harness.training.vae_fit import get_vae
    from decodiff.models.vae import build_small_vae, save_vae

    torch.manual_seed(0)
    if args.vae == "sd":  # the sd-vae-ft-ema architecture (diffusers' AutoencoderKL defaults for SD)
        n = 4
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            layers_per_block=2,
            latent_channels=4,
        )
        desc, scale = "Stable-Diffusion KL-f8 architecture, random weights (speed only)", 0.18215
    else:
        vae, desc, scale = build_small_vae("f8-small"), "f8-small AutoencoderKL, random weights (speed only)", 1.0
    if not (work / "vae" / "config.json").is_file():
        save_vae(vae, work / "vae", scale=scale, description=desc)
    if args.shard_samples and not (work / "shards" / "manifest.json").is_file():
        from decodiff.datasets.shards import shard_dataset

        prepare_data(build_config("demo", overrides(args, work, with_shards=False)))  # generates the demo set
        shard_dataset("demo", work / "demo", work / "shards", max_count=args.shard_samples)
    cfg = build_config("demo", [*overrides(args, work), "train.latent_cache=true"])
    data = prepare_data(cfg)
    frozen = get_vae(cfg, data)
    if args.threads_all:
        torch.set_num_threads(args.threads_all)
    shutil.rmtree(
        Path(cfg.run.cache_dir) / "latents" / cache_key(cfg, data, frozen), ignore_errors=True
    )  # timed afresh
    t0 = time.time()
    build_latent_cache(cfg, data, frozen)
    seconds = time.time() - t0
    n = data.manifest.count("train", data.categories)
    del frozen
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the rows run in their own processes: this one keeps no GPU memory
    return {
        "vae": desc,
        "vae_parameters": sum(p.numel() for p in vae.parameters()),
        "train_images": n,
        "test_images": data.manifest.count("test", data.categories),
        "latent_cache_images_per_second": n * cfg.train.cache_variants / seconds,
        "latent_cache_variants": cfg.train.cache_variants,
    }


def launch(args: argparse.Namespace, work: Path, kind: str, cache: str, procs: int, threads: int) -> dict:
    result = work / f"result-{kind}-{cache}-{procs}x{threads}.json"
    result.unlink(missing_ok=True)
    forward = [
        f"--{k}={v}"
        for k, v in (
            ("size", args.size),
            ("batch", args.batch),
            ("steps", args.steps),
            ("device", args.device),
            ("precision", args.precision),
            ("train-images", args.train_images),
            ("eval-batch", args.eval_batch),
            ("categories", ",".join(args.categories)),
            ("vae", args.vae),
            ("test-images", args.test_images),
            ("shard-samples", args.shard_samples),
        )
    ]
    tail = [
        str(HERE),
        f"--worker={kind}",
        f"--work={work}",
        f"--result={result}",
        f"--cache={cache}",
        f"--threads={threads}",
        *forward,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if procs > 1:
        if args.device == "cpu":
            env["ACCELERATE_USE_CPU"] = "true"
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        cmd = [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(procs),
            "--num_machines",
            "1",
            "--mixed_precision",
            args.precision,
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(29400 + os.getpid() % 500),
            *tail,
        ]
    else:
        cmd = [sys.executable, *tail]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0 or not result.is_file():
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"train_speed: the {kind} run ({cache}, {procs}x{threads}) failed")
    shutil.rmtree(work / result.stem, ignore_errors=True)  # the row's checkpoint (UNet L: GBs with its state)
    return {**json.loads(result.read_text()), "wall_seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="XS")
    ap.add_argument("--batch", type=int, default=4, help="global batch per optimizer step (default 4)")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per run; the first is not timed")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    ap.add_argument("--vae", default="small", choices=("small", "sd"))
    ap.add_argument(
        "--layouts",
        default=None,
        help="processes x threads per row, e.g. 1x1,1x2,2x1 (0 threads: torch's default); "
        "default on CPU: 1x1, 1x<cores>, <cores>x1",
    )
    ap.add_argument("--train-images", type=int, default=8, help="training images per category (default 8)")
    ap.add_argument("--categories", default="brick,coffee", type=lambda s: s.split(","))
    ap.add_argument("--eval-batch", type=int, default=4)
    ap.add_argument(
        "--test-images", type=int, default=1, help="normal test images per category (a quarter as many per defect)"
    )
    ap.add_argument(
        "--shard-samples",
        type=int,
        default=0,
        help="training images per shard (0: the data set's default, one shard per category): ranks are dealt "
        "whole shards, so several processes need several shards each",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the fastest counts (default 1)")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--work", default=None, help="working folder (default: a new temporary one)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default="on", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    cores = os.cpu_count() or 1
    args.threads_all = cores if args.device == "cpu" else 0
    layouts = args.layouts or (f"1x1,1x{cores},{cores}x1" if args.device == "cpu" else "1x0")
    rows_spec = [tuple(int(v) for v in item.split("x")) for item in layouts.split(",")]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="decodiff-train-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"[train_speed] preparing data, VAE and latent cache in {work}", file=sys.stderr, flush=True)
    setup = prepare(args, work)
    rows: list[dict] = []
    load_before = os.getloadavg()[0]
    for rep in range(args.repeat):  # rows interleaved, so a change in the machine's load hits all of them
        for procs, threads in rows_spec:
            for cache in ("on", "off"):
                print(
                    f"[train_speed] training: latent cache {cache}, {procs} process(es) x {threads or 'default'} "
                    f"thread(s), run {rep + 1}/{args.repeat}",
                    file=sys.stderr,
                    flush=True,
                )
                r = launch(args, work, "train", cache, procs, threads)
                row = {"latent_cache": cache == "on", "processes": procs, "threads_per_process": threads, **r}
                same = [
                    x
                    for x in rows
                    if (x["latent_cache"], x["processes"], x["threads_per_process"])
                    == (row["latent_cache"], procs, threads)
                ]
                if not same:
                    rows.append({**row, "runs": [r["samples_per_second"]]})
                else:  # the best run counts (noise on a shared machine only slows down)
                    same[0]["runs"].append(r["samples_per_second"])
                    if r["samples_per_second"] > same[0]["samples_per_second"]:
                        same[0].update(r)
    evaluation = None
    if not args.no_eval:
        print("[train_speed] evaluation (5 reverse steps, decode, maps)", file=sys.stderr, flush=True)
        evaluation = launch(args, work, "eval", "on", 1, args.threads_all)
    report = {
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "size": args.size,
        "image": 256,
        "latent": [4, 32, 32],
        "batch": args.batch,
        "steps": args.steps,
        "device": args.device,
        "precision": args.precision,
        "cpu": platform.processor() or platform.machine(),
        "cores": cores,
        **setup,
        "train": rows,
        "eval": evaluation,
    }
    print(
        f"\nUNet {args.size}, 256x256 images (latent 4x32x32), global batch {args.batch}, {args.steps} steps "
        f"(first not timed), {args.device}, precision {args.precision}; VAE: {setup['vae']}"
    )
    print(
        f"load average {report['load_average_before']:.1f} before, {report['load_average_after']:.1f} after "
        f"({cores} cores); best of {args.repeat} run(s) per row"
    )
    print(
        f"latent cache build: {setup['latent_cache_images_per_second']:.2f} encodings/s "
        f"({setup['train_images']} images x {setup['latent_cache_variants']} variants)"
    )
    print(f"{'latent cache':>12} {'processes':>9} {'threads':>7} {'samples/s':>10} {'vs 1x1':>7} {'per CPU-s':>10}")
    base = {
        r["latent_cache"]: r["samples_per_second"]
        for r in rows
        if (r["processes"], r["threads_per_process"]) == rows_spec[0]
    }
    rows.sort(key=lambda r: (not r["latent_cache"], rows_spec.index((r["processes"], r["threads_per_process"]))))
    for r in rows:
        rel = r["samples_per_second"] / base[r["latent_cache"]] if base.get(r["latent_cache"]) else float("nan")
        print(
            f"{'on' if r['latent_cache'] else 'off':>12} {r['processes']:>9} {r['threads_per_process'] or 'all':>7} "
            f"{r['samples_per_second']:>10.3f} {rel:>7.2f} {r['samples_per_cpu_second']:>10.3f}"
        )
    for procs, threads in rows_spec:
        on = [r for r in rows if r["latent_cache"] and (r["processes"], r["threads_per_process"]) == (procs, threads)]
        off = [
            r for r in rows if not r["latent_cache"] and (r["processes"], r["threads_per_process"]) == (procs, threads)
        ]
        if on and off and off[0]["samples_per_second"]:
            print(
                f"latent cache speed-up at {procs}x{threads or 'all'}: "
                f"{on[0]['samples_per_second'] / off[0]['samples_per_second']:.1f}x"
            )
    if evaluation:
        print(
            f"evaluation: {evaluation['images_per_second']:.3f} images/s, "
            f"{evaluation['images_per_cpu_second']:.3f} per "
            f"CPU-second ({evaluation['images']} images, 5 reverse steps, 2 decodes and maps per image, "
            f"batch {args.eval_batch})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
