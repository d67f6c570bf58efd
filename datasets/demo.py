"""The embedded demo data set: MVTec-AD-shaped, generated offline from scikit-image's photographs.

A fresh machine has no data set and may have no network, yet `decodiff bench --config demo`
must train and score something real. The images are real photographs and textures bundled
with scikit-image (no download); normal images are random crops (textures) or slightly
jittered views (objects) of them, and test defects are painted by `decodiff.datasets.defects`
with exact masks. Everything is drawn from numpy generators seeded per image, so the same
seed gives byte-identical PNGs on the same library versions, and `demo_example` can
re-create any single image together with the clean image its defect was painted on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from decodiff.datasets.defects import (
    CHANGE_THRESHOLD,
    DEFECT_KINDS,
    MAX_AREA,
    MIN_AREA,
    SUBTLE_FRACTION,
    synthesize_defect,
)
from decodiff.datasets.imageio import encode_png
from decodiff.datasets.records import NORMAL

GENERATOR_VERSION = "decodiff-demo/1"  # change whenever the images would change
MANIFEST = "demo.json"

# The eight symmetries of a square, as (quarter turns, mirror).
_DIHEDRAL = tuple((k, m) for m in (False, True) for k in range(4))
_STOCHASTIC_DEFECTS = tuple(d for d in DEFECT_KINDS if d != "displaced")


@dataclass(frozen=True)
class DemoCategory:
    """How one category's normal images are drawn from its scikit-image source."""

    name: str
    source: str  # a `skimage.data` function
    kind: str  # "texture": random crops; "object": one roughly aligned view, jittered
    # texture: crop side as a fraction of the source's short side;
    # object: (centre row, centre column, side) of the view in source pixels
    view: float | tuple[float, float, float]
    symmetries: tuple[tuple[int, bool], ...] = ((0, False),)  # textures: allowed (turns, mirror)
    defects: tuple[str, ...] = DEFECT_KINDS
    subtle: float = SUBTLE_FRACTION  # share of low-contrast defects


CATEGORIES: dict[str, DemoCategory] = {
    c.name: c
    for c in (
        # Stochastic and isotropic: any turn or mirror is still grass. A displaced piece of a
        # stochastic texture is the same texture (invisible to a person): no "displaced" here.
        # Normal grass already holds dark shadows and smooth leaves, so fewer defects are faint.
        DemoCategory("grass", "grass", "texture", 0.375, _DIHEDRAL, _STOCHASTIC_DEFECTS, 0.2),
        # Regular: the courses keep their direction (half turns and mirrors only).
        DemoCategory("brick", "brick", "texture", 0.5, ((0, False), (0, True), (2, False), (2, True))),
        DemoCategory("gravel", "gravel", "texture", 0.375, _DIHEDRAL, _STOCHASTIC_DEFECTS, 0.2),
        # Objects: rows of coins on a plain ground; an espresso cup and saucer on a wooden table.
        DemoCategory("coins", "coins", "object", (151.0, 192.0, 280.0)),
        DemoCategory("coffee", "coffee", "object", (205.0, 285.0, 390.0)),
    )
}
DEMO_CATEGORIES: tuple[str, ...] = ("grass", "brick", "coins", "coffee")

# Foreign material for "foreign_texture" defects: every bundled picture but the category's own.
_FOREIGN_SOURCES = ("gravel", "grass", "brick", "camera", "rocket", "chelsea", "coins", "coffee", "moon")


@dataclass(frozen=True)
class DemoExample:
    """One demo image; `clean` is the normal image a defect was painted on (or the image)."""

    image: np.ndarray
    mask: np.ndarray | None  # HxW bool for test images, None for normal ones
    clean: np.ndarray


@dataclass
class DemoInfo:
    """What `generate_demo` made (or found): enough for a run to record its data."""

    root: Path
    categories: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # category -> "train/good", "test/<defect>" -> images
    checksum: str  # `demo_checksum(root)`
    reused: bool = False
    params: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- images


@cache
def _source(name: str) -> np.ndarray:
    image = np.asarray(getattr(skimage.data, name)())
    image.setflags(write=False)
    return image


def foreign_textures(category: str | None = None) -> tuple[np.ndarray, ...]:
    """Bundled pictures to take foreign material from (`synthesize_defect`'s source_textures).

    A demo category's own source is left out, so its "foreign" material is never its own.
    """
    own = CATEGORIES[category].source if category is not None else None
    return tuple(_source(n) for n in _FOREIGN_SOURCES if n != own)


@lru_cache(maxsize=16)
def _object_base(category: str, size: int) -> tuple[np.ndarray, float, float]:
    """The source scaled once (with anti-aliasing) so the view is `size` wide, reflect-padded.

    Jitter is then a near-identity warp of this, which needs no anti-aliasing of its own.
    Returns the image and the view's centre (row, col) in it.
    """
    cy, cx, side = CATEGORIES[category].view
    src = _source(CATEGORIES[category].source)
    f = size / side
    h, w = max(1, round(src.shape[0] * f)), max(1, round(src.shape[1] * f))
    small = np.asarray(Image.fromarray(src).resize((w, h), Image.BICUBIC))
    pad = size // 4
    widths = ((pad, pad), (pad, pad)) + (((0, 0),) if small.ndim == 3 else ())
    base = np.pad(small, widths, mode="reflect")
    base.setflags(write=False)
    return base, cy * h / src.shape[0] + pad, cx * w / src.shape[1] + pad


def normal_image(category: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A normal image (uint8, HxW for grey sources, HxWx3 for colour ones) of `category`."""
    cat = CATEGORIES[category]
    if cat.kind == "texture":
        src = _source(cat.source)
        side = cat.view * min(src.shape[:2])
        y0, x0 = rng.uniform(0, src.shape[0] - side), rng.uniform(0, src.shape[1] - side)
        crop = Image.fromarray(src).resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + side, y0 + side))
        turns, mirror = cat.symmetries[int(rng.integers(len(cat.symmetries)))]
        image = np.rot90(np.asarray(crop), turns)
        image = (image[:, ::-1] if mirror else image).astype(np.float32)
        image *= rng.uniform(0.96, 1.04)
    else:
        # A part on the line: shifted by up to 2 pixels (at 128 px), turned by up to a degree, a little
        # brighter or darker, with sensor noise; never the same image twice.
        base, cy, cx = _object_base(category, size)
        ty, tx = rng.uniform(-1, 1, 2) * size / 64
        theta = np.deg2rad(rng.uniform(-1.0, 1.0))
        zoom = rng.uniform(0.985, 1.015)
        a, b = zoom * np.cos(theta), -zoom * np.sin(theta)
        d, e = zoom * np.sin(theta), zoom * np.cos(theta)
        half = size / 2
        coeffs = (a, b, cx + tx - (a + b) * half, d, e, cy + ty - (d + e) * half)
        view = Image.fromarray(base).transform((size, size), Image.AFFINE, coeffs, resample=Image.BICUBIC)
        image = np.asarray(view).astype(np.float32) * rng.uniform(0.95, 1.05)
        image += rng.normal(0.0, 1.5, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _code(text: str) -> int:
    return zlib.crc32(text.encode())


def demo_example(category: str, split: str, defect: str, index: int, *, size: int = 128, seed: int = 0) -> DemoExample:
    """Image `index` of `<category>/<split>/<defect>`, exactly as `generate_demo` writes it.

    Each image has its own generator (seeded by seed, category, split, defect and index), so
    any one can be re-created alone, and changing a count leaves the other images unchanged.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown demo category {category!r}; expected one of {', '.join(CATEGORIES)}")
    if split not in ("train", "test") or (split == "train" and defect != NORMAL):
        raise ValueError(f"no demo images for {category}/{split}/{defect}")
    if defect != NORMAL and defect not in CATEGORIES[category].defects:
        raise ValueError(f"{category} has no {defect!r} defect; it has {', '.join(CATEGORIES[category].defects)}")
    rng = np.random.default_rng([seed, _code(category), _code(split), _code(defect), index])
    clean = normal_image(category, rng, size)
    if split == "train":
        return DemoExample(clean, None, clean)
    if defect == NORMAL:
        return DemoExample(clean, np.zeros(clean.shape[:2], bool), clean)
    image, mask = synthesize_defect(clean, defect, rng, foreign_textures(category), subtle=CATEGORIES[category].subtle)
    return DemoExample(image, mask, clean)


# --------------------------------------------------------------------------- writing


def demo_checksum(root: Path) -> str:
    """sha256 over every file under `root` but demo.json, in sorted order of relative path.

    Each file adds its relative POSIX path, a NUL byte and the sha256 digest of its bytes.
    """
    root = Path(root)
    total = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() != MANIFEST):
        total.update(path.relative_to(root).as_posix().encode() + b"\0")
        total.update(hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()


def _plan(categories: Sequence[str], n_train: int, n_test_good: int, n_per_defect: int):
    """(category, split, defect, count) for every folder, in writing order."""
    for cat in categories:
        yield cat, "train", NORMAL, n_train
        yield cat, "test", NORMAL, n_test_good
        for defect in CATEGORIES[cat].defects:
            yield cat, "test", defect, n_per_defect


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _info(root: Path, manifest: dict, reused: bool) -> DemoInfo:
    return DemoInfo(
        root,
        tuple(manifest["params"]["categories"]),
        manifest["counts"],
        manifest["sha256"],
        reused,
        manifest["params"],
    )


def _matches(manifest: dict | None, params: dict) -> bool:
    return bool(manifest) and manifest.get("generator") == GENERATOR_VERSION and manifest.get("params") == params


def _remove_stale_temporaries(root: Path) -> None:
    """Delete `<root>.tmp-<pid>` and `<root>.old-<pid>` left by generator runs that were killed."""
    for path in root.parent.iterdir():
        name = path.name
        for prefix in (f"{root.name}.tmp-", f"{root.name}.old-"):
            pid = name[len(prefix) :] if name.startswith(prefix) else ""
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(path, ignore_errors=True)
            except PermissionError:  # alive, someone else's
                pass


def generate_demo(
    root: Path,
    *,
    size: int = 128,
    n_train: int = 80,
    n_test_good: int = 12,
    n_test_per_defect: int = 6,
    categories: Sequence[str] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DemoInfo:
    """Write the demo set in the MVTec-AD layout under `root`, or reuse the one there.

    `root` is reused as it is when its demo.json names the same parameters and generator
    version. Otherwise the set is written to `<root>.tmp-<pid>` and renamed to `root` when
    complete, so `root` is never half-written; an older demo set there is replaced, any other
    non-empty folder is refused. `progress(done, total)` is called after each image.
    """
    root = Path(root)
    categories = tuple(DEMO_CATEGORIES if categories is None else categories)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories or len(set(categories)) != len(categories):
        raise ValueError(f"demo categories must be distinct names from {', '.join(CATEGORIES)}; got {list(categories)}")
    if size < 32:
        raise ValueError(f"demo image size must be at least 32, got {size}")
    if n_train < 1 or n_test_good < 0 or n_test_per_defect < 0:
        raise ValueError(
            f"demo counts must be n_train >= 1 and test counts >= 0; got {n_train}, {n_test_good}, {n_test_per_defect}"
        )
    params = {
        "size": int(size),
        "n_train": int(n_train),
        "n_test_good": int(n_test_good),
        "n_test_per_defect": int(n_test_per_defect),
        "categories": list(categories),
        "seed": int(seed),
    }

    existing = _read_manifest(root)
    if _matches(existing, params):
        return _info(root, existing, reused=True)
    if root.exists() and existing is None and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root}: exists and is not a demo data set (no {MANIFEST}); refusing to overwrite it")

    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = _write(tmp, params, progress)
        manifest = {
            "generator": GENERATOR_VERSION,
            "params": params,
            "counts": counts,
            "sha256": demo_checksum(tmp),
            "sources": {c: f"skimage.data.{CATEGORIES[c].source}" for c in categories},
            "mask_rule": f"mask = exactly the pixels whose uint8 value differs from the clean image; changes "
            f"below {CHANGE_THRESHOLD} grey levels are reverted, and pixels inside a defect's core "
            f"that the new content left within {CHANGE_THRESHOLD - 1} levels are moved "
            f"{CHANGE_THRESHOLD} levels, so every masked pixel differs by >= {CHANGE_THRESHOLD}; "
            f"defect area in [{MIN_AREA}, {MAX_AREA}] of the image",
            "libraries": _library_versions(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return _install(tmp, root, params, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(tmp: Path, params: dict, progress: Callable[[int, int], None] | None) -> dict[str, dict[str, int]]:
    plan = list(_plan(params["categories"], params["n_train"], params["n_test_good"], params["n_test_per_defect"]))
    total, done = sum(n for *_, n in plan), 0
    counts: dict[str, dict[str, int]] = {}
    for cat, split, defect, n in plan:
        folder = tmp / cat / split / defect
        folder.mkdir(parents=True, exist_ok=True)
        if split == "test" and defect != NORMAL:
            (tmp / cat / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            ex = demo_example(cat, split, defect, i, size=params["size"], seed=params["seed"])
            (folder / f"{i:03d}.png").write_bytes(encode_png(ex.image))
            if split == "test" and defect != NORMAL:
                (tmp / cat / "ground_truth" / defect / f"{i:03d}_mask.png").write_bytes(encode_png(ex.mask))
            done += 1
            if progress is not None:
                progress(done, total)
        counts.setdefault(cat, {})[f"{split}/{defect}"] = n
    return counts


def _install(tmp: Path, root: Path, params: dict, manifest: dict) -> DemoInfo:
    """Rename the finished `tmp` to `root`, replacing an older demo set or an empty folder."""
    old = None
    if root.exists():
        if _read_manifest(root) is not None:
            old = root.parent / f"{root.name}.old-{os.getpid()}"
            os.rename(root, old)
        else:
            root.rmdir()  # empty: checked by the caller
    try:
        os.rename(tmp, root)
    except OSError:
        # Another process finished the same set first: use theirs.
        theirs = _read_manifest(root)
        if _matches(theirs, params):
            return _info(root, theirs, reused=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return _info(root, manifest, reused=False)


def _library_versions() -> dict[str, str]:
    out = {}
    for name in ("numpy", "pillow", "scikit-image", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
