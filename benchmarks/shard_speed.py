"""How fast are shard writing and shard reading? (issue 3, "Measure")

The data: an MVTec-AD-layout set of 2,000 256x256 PNG images (4 categories x 500: 400 train,
50 normal test, 50 anomalous test with masks), cut from scikit-image's bundled photographs and
textures with a little noise, saved with PIL's default PNG compression (as data sets ship).
It is written once into --work (default: a temporary folder) and reused.

1. Sharding throughput: `shard_dataset` (what `decodiff data shard` runs) over the set, with
   1 and 2 worker processes, original bytes passed through; and with --resize 128 (decode,
   resize, re-encode). Wall time from the first listing to the renamed manifest, and CPU time
   (with the worker processes): images per CPU second x 2 is the rate of 2 idle cores.
2. Read throughput, side by side in one run: every image of the set with its mask, decoded and
   turned into tensors (`Preprocess` without resizing), through a torch DataLoader with 2 workers
   and batches of 32, (a) from the shards (`ShardStream`) and (b) from the native folders
   (a map-style Dataset over the MVTec-AD reader's samples). The two alternate --repeat times
   (default 5): wall time is the median run; CPU time (this process and its joined loader workers)
   is summed over the runs, which keeps the comparison fair on a machine that others share. Both
   read from the page cache (the files were just written); from network or cold disks the shards'
   sequential reads gain more.
3. Decode rate of one core for JPEG images at 256 and 1024 pixels (what Real-IAD ships), to size
   the loader CPUs in the Real-IAD estimate below.
4. On paper, Real-IAD (151,050 images: 99,721 normal, 51,329 anomalous; 30 categories) on 8
   GPUs at 256 and 1024 pixels: bytes per image (JPEG quality 95 of the same photographs, at 1024
   a 2 x 2 mosaic of 512-pixel crops so that the detail per pixel stays that of a photograph; masks
   as PNG), shard count and size with the default bounds, the rate one GPU trains the XL model
   (FLOPs counted by `decodiff.models.flops` at latent 32 and 128, divided by an assumed
   sustained --tflops), and the read rate in images/s and MB/s that 8 such GPUs need.

    python benchmarks/shard_speed.py [--work DIR] [--repeat 5] [--tflops 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from decodiff.datasets.imageio import read_mask, read_rgb
from decodiff.datasets.mvtec import read_mvtec
from decodiff.datasets.shards import shard_dataset
from decodiff.datasets.stream import ShardStream, collate
from decodiff.datasets.transforms import Preprocess

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "camera")
CATEGORIES = ("cat_a", "cat_b", "cat_c", "cat_d")
PER_CATEGORY = {"train": 400, "good": 50, "defect": 50}
SIDE = 256
REALIAD = {"images": 151_050, "normal": 99_721, "anomalous": 51_329, "categories": 30}


def _photos() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in SOURCES:
        img = getattr(skimage.data, name)()
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        out.append(img)
    return out


def _crop(rng: np.random.Generator, photo: np.ndarray, side: int) -> np.ndarray:
    h, w = photo.shape[:2]
    s = rng.integers(min(side // 2, min(h, w) // 2), min(h, w) + 1)
    top, left = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    img = Image.fromarray(photo[top : top + s, left : left + s]).resize((side, side), Image.BILINEAR)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-3, 4, (side, side, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_set(root: Path, seed: int = 0) -> int:
    """The 2,000-image MVTec-AD-layout set (kept when already complete)."""
    done = root / "complete"
    n = len(CATEGORIES) * sum(PER_CATEGORY.values())
    if done.is_file():
        return n
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    photos = _photos()
    for ci, cat in enumerate(CATEGORIES):
        for folder, count in (
            ("train/good", PER_CATEGORY["train"]),
            ("test/good", PER_CATEGORY["good"]),
            ("test/defect", PER_CATEGORY["defect"]),
        ):
            d = root / cat / folder
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = _crop(rng, photos[(ci + i) % len(photos)], SIDE)
                Image.fromarray(img).save(d / f"{i:03d}.png")
                if folder == "test/defect":
                    m = np.zeros((SIDE, SIDE), np.uint8)
                    y, x = rng.integers(20, SIDE - 60, 2)
                    m[y : y + 40, x : x + 30] = 255
                    gt = root / cat / "ground_truth" / "defect"
                    gt.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(m).save(gt / f"{i:03d}_mask.png")
    done.write_text("ok\n")
    return n


# ---- 1. sharding ----------------------------------------------------------------------------


def time_sharding(root: Path, out: Path, n: int, **kw: Any) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    t, c = time.perf_counter(), _cpu()
    m = shard_dataset("mvtec", root, out, log=lambda msg: None, **kw)
    s, cs = time.perf_counter() - t, _cpu() - c
    return {
        "seconds": round(s, 3),
        "images_per_s": round(n / s, 1),
        "cpu_seconds": round(cs, 3),
        "images_per_cpu_s": round(n / cs, 1),
        "shards": len(m.shards),
        "mb": round(sum(x.bytes for x in m.shards) / 1e6, 1),
        **kw,
    }


# ---- 2. reading -----------------------------------------------------------------------------


class NativeFolder(Dataset):
    """The folder layout read file by file, into the same records the shards decode to."""

    def __init__(self, root: Path, transform: Preprocess):
        self.samples = list(read_mvtec(root))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        image = read_rgb(Path(s.source))
        mask = (
            read_mask(Path(s.mask_source))
            if s.mask_source
            else (np.zeros(image.shape[:2], bool) if s.label == 0 else None)
        )
        return self.transform({"key": s.key, "image": image, "mask": mask, "meta": s.meta()})


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the loader workers, once joined)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _drain(loader: DataLoader) -> tuple[int, float, float]:
    t, c = time.perf_counter(), _cpu()
    n = 0
    for batch in loader:
        n += batch["image"].shape[0]
    return n, time.perf_counter() - t, _cpu() - c


def time_reading(root: Path, shards: Path, repeat: int, workers: int = 2, batch: int = 32) -> dict[str, Any]:
    """Wall time (median of the runs) and CPU time (per image, over all runs) of both readers."""
    pre = Preprocess(resize=None, crop=None)
    train, test = (ShardStream.from_manifest(shards, split) for split in ("train", "test"))
    stream = ShardStream(train.urls + test.urls, counts=train.counts + test.counts, transform=pre)
    native = NativeFolder(root, pre)
    loaders = {
        "shards": DataLoader(stream, batch_size=batch, num_workers=workers, collate_fn=collate),
        "folder": DataLoader(native, batch_size=batch, num_workers=workers, collate_fn=collate, shuffle=False),
    }
    wall: dict[str, list[float]] = {"shards": [], "folder": []}
    cpu = {"shards": 0.0, "folder": 0.0}
    counts = {}
    for _ in range(repeat):
        for name, loader in loaders.items():  # alternate, so that drifting load hits both alike
            counts[name], s, c = _drain(loader)
            wall[name].append(s)
            cpu[name] += c
    med = {k: float(np.median(v)) for k, v in wall.items()}
    cpu_ms = {k: 1e3 * cpu[k] / (repeat * counts[k]) for k in cpu}
    return {
        "images": counts,
        "workers": workers,
        "batch": batch,
        "repeat": repeat,
        "seconds": {k: [round(x, 3) for x in v] for k, v in wall.items()},
        "images_per_s_median": {k: round(counts[k] / med[k], 1) for k in med},
        "ratio_shards_over_folder_wall": round(med["folder"] / med["shards"], 3),
        "cpu_ms_per_image": {k: round(v, 3) for k, v in cpu_ms.items()},
        "ratio_shards_over_folder_cpu": round(cpu_ms["folder"] / cpu_ms["shards"], 3),
    }


# ---- 3. decode rate, 4. Real-IAD on paper --------------------------------------------------


def jpeg_costs(repeat: int = 3) -> dict[int, dict[str, float]]:
    """Bytes of a JPEG (quality 95) and of a mask PNG, and one core's decode-to-tensor rate, per side."""
    rng = np.random.default_rng(1)
    photos = _photos()
    pre = Preprocess(resize=None, crop=None)
    out = {}
    for side in (256, 1024):
        blobs, masks = [], []
        for i in range(8):
            buf = io.BytesIO()
            # the photographs are about 512 pixels: a 1024 image is a 2 x 2 mosaic of crops at full detail
            tiles = [_crop(rng, photos[(i + j) % len(photos)], min(side, 512)) for j in range((side // 512) ** 2 or 1)]
            k = max(1, side // 512)
            img = np.concatenate([np.concatenate(tiles[r * k : (r + 1) * k], 1) for r in range(k)], 0)
            Image.fromarray(img).save(buf, format="JPEG", quality=95)
            blobs.append(buf.getvalue())
            m = np.zeros((side, side), np.uint8)
            m[side // 4 : side // 4 + side // 8, side // 3 : side // 3 + side // 10] = 255
            mb = io.BytesIO()
            Image.fromarray(m).save(mb, format="PNG")
            masks.append(mb.getvalue())
        meta = {"label": 0, "category": "", "defect": ""}
        pre({"key": "", "image": read_rgb(blobs[0]), "mask": None, "meta": meta})  # warm-up
        best = 0.0
        for _ in range(repeat):
            k, t = 0, time.perf_counter()
            while time.perf_counter() - t < 0.5:
                pre({"key": "", "image": read_rgb(blobs[k % len(blobs)]), "mask": None, "meta": meta})
                k += 1
            best = max(best, k / (time.perf_counter() - t))
        out[side] = {
            "jpeg_kb": round(float(np.mean([len(b) for b in blobs])) / 1e3, 1),
            "mask_kb": round(float(np.mean([len(b) for b in masks])) / 1e3, 2),
            "decode_per_core_per_s": round(best, 1),
        }
    return out


def realiad_on_paper(
    costs: dict[int, dict[str, float]], tflops: float, gpus: int = 8, readers_per_gpu: int = 4
) -> dict[str, Any]:
    from decodiff.models.flops import preset_cost

    n, cats = REALIAD["images"], REALIAD["categories"]
    out: dict[str, Any] = {
        "assumptions": {
            "images": n,
            "categories": cats,
            "model": "XL",
            "sustained_tflops_per_gpu": tflops,
            "gpus": gpus,
            "loader_workers_per_gpu": readers_per_gpu,
            "groups": "shards hold one (split, category): about 2 x 30 groups of ~2,500 images",
            "bytes_per_image": "JPEG quality 95 of natural photographs at that side (measured above); masks PNG",
        }
    }
    for side in (256, 1024):
        c = costs[side]
        per_image = c["jpeg_kb"] * 1e3 + REALIAD["anomalous"] / n * c["mask_kb"] * 1e3 + 1536  # + tar headers, meta
        total = n * per_image
        per_group = n / (2 * cats)
        # default bounds: 2,000 samples or 256 MB per shard, whichever comes first
        per_shard = min(2000, int((256 << 20) // per_image))
        shards = 2 * cats * int(np.ceil(per_group / per_shard))
        readers = gpus * readers_per_gpu
        # at least 4 shards per reader keeps the ranks' counts within ~1/4 of a reader's share
        suggested = min(per_shard, int(np.ceil(n / (4 * readers) / 50) * 50))
        gflop = preset_cost("XL", num_classes=cats, latent=side // 8)["gflops_train_step"]
        per_gpu = tflops * 1e3 / gflop
        rate = gpus * per_gpu
        out[f"{side}px"] = {
            "kb_per_image": round(per_image / 1e3, 1),
            "total_gb": round(total / 1e9, 1),
            "default_shards": shards,
            "default_samples_per_shard": per_shard,
            "default_shard_mb": round(min(per_group, per_shard) * per_image / 1e6, 1),
            "suggested_max_count": suggested,
            "suggested_shards": 2 * cats * int(np.ceil(per_group / suggested)),
            "suggested_shard_mb": round(suggested * per_image / 1e6, 1),
            "xl_train_gflop_per_image": round(gflop, 1),
            "images_per_s_per_gpu": round(per_gpu, 1),
            "read_images_per_s": round(rate, 1),
            "read_mb_per_s": round(rate * per_image / 1e6, 1),
            "decode_cores_needed": round(rate / c["decode_per_core_per_s"], 1),
            "epoch_minutes": round(n / rate / 60, 1),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, help="folder for the data set and shards (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--tflops",
        type=float,
        default=300.0,
        help="assumed sustained training TFLOPS per GPU for the Real-IAD estimate (default 300)",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="shard-speed-"))
    root = work / "mvtec-like"
    t = time.perf_counter()
    n = make_set(root)
    print(
        f"data: {n} images of {SIDE}x{SIDE} PNG in {root} ({time.perf_counter() - t:.1f} s to make or find)", flush=True
    )
    res: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()}
    }
    res["sharding"] = [
        time_sharding(root, work / "shards-1", n, workers=1),
        time_sharding(root, work / "shards-2", n, workers=2),
        time_sharding(root, work / "shards-r", n, workers=2, resize=128),
    ]
    for r in res["sharding"]:
        print(
            f"shard: workers={r['workers']} resize={r.get('resize')}: {r['images_per_s']} images/s wall, "
            f"{r['images_per_cpu_s']} images per CPU second ({r['seconds']} s, {r['shards']} shards, {r['mb']} MB)",
            flush=True,
        )
    res["reading"] = time_reading(root, work / "shards-2", args.repeat)
    r = res["reading"]
    print(
        f"read (decode + tensors, 2 loader workers, median of {r['repeat']}): shards "
        f"{r['images_per_s_median']['shards']} images/s, folder {r['images_per_s_median']['folder']} images/s, "
        f"ratio {r['ratio_shards_over_folder_wall']}x; CPU per image: shards {r['cpu_ms_per_image']['shards']} ms, "
        f"folder {r['cpu_ms_per_image']['folder']} ms, ratio {r['ratio_shards_over_folder_cpu']}x",
        flush=True,
    )
    costs = jpeg_costs(args.repeat)
    res["jpeg"] = costs
    for side, c in costs.items():
        print(
            f"jpeg {side}px: {c['jpeg_kb']} KB, mask {c['mask_kb']} KB, one core decodes {c['decode_per_core_per_s']}/s"
        )
    res["realiad_on_paper"] = realiad_on_paper(costs, args.tflops)
    for side in ("256px", "1024px"):
        p = res["realiad_on_paper"][side]
        print(
            f"Real-IAD {side}: {p['total_gb']} GB; default bounds -> {p['default_shards']} shards of "
            f"{p['default_samples_per_shard']} (~{p['default_shard_mb']} MB); suggested --max-count "
            f"{p['suggested_max_count']} -> {p['suggested_shards']} shards of ~{p['suggested_shard_mb']} MB; XL "
            f"{p['images_per_s_per_gpu']} img/s/GPU -> 8 GPUs read {p['read_images_per_s']} img/s = "
            f"{p['read_mb_per_s']} MB/s, {p['decode_cores_needed']} decode cores, epoch {p['epoch_minutes']} min"
        )
    res["machine"]["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
