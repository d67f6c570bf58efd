"""What a shard set or a native data set folder holds, and what is wrong with it.

`inspect_location(path)` counts samples per split, category, label and defect type, tallies
image sizes and lists problems, each an error (the set cannot be used as it is) or a warning
(it can, with a caveat). A shard set is checked against its manifest (files present at their
sizes; with `verify` their sha256; with `deep` every sample decoded and counted); a native
folder is read with its data set's reader (the layout is recognised unless given), every
image's and mask's header read (with `deep`, every file decoded).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from decodiff.datasets.imageio import DataError, image_size, read_mask, read_rgb
from decodiff.datasets.manifest import MANIFEST, SHA256_DIFFERS, Manifest, shard_problem
from decodiff.datasets.records import Sample
from decodiff.datasets.registry import detect_layout, read_dataset, spec
from decodiff.datasets.shard_record import decode_record
from decodiff.datasets.tar_records import open_records

Progress = Callable[[int, int | None], None]


@dataclass
class Problem:
    severity: str  # "error" | "warning"
    where: str
    what: str


@dataclass
class Inspection:
    location: str
    kind: str  # "shards" | "native" | "unknown"
    dataset: str | None = None
    categories: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # split -> category -> counts
    image_sizes: dict[str, int] = field(default_factory=dict)
    shards: dict[str, Any] | None = None  # {"count", "bytes", "per_split"}
    skipped: list[dict[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def error(self, where: str | Path, what: str) -> None:
        self.problems.append(Problem("error", str(where), what))

    def warn(self, where: str | Path, what: str) -> None:
        self.problems.append(Problem("warning", str(where), what))

    def totals(self) -> dict[str, dict[str, int]]:
        return {
            split: {
                "normal": sum(c["normal"] for c in cats.values()),
                "anomalous": sum(c["anomalous"] for c in cats.values()),
                "no_mask": sum(c.get("no_mask", 0) for c in cats.values()),
            }
            for split, cats in self.counts.items()
        }

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["totals"] = self.totals()
        return d


def inspect_location(
    location: str | Path,
    *,
    dataset: str | None = None,
    options: dict[str, Any] | None = None,
    verify: bool = False,
    deep: bool = False,
    progress: Progress | None = None,
) -> Inspection:
    """Inspect a shard set (folder with manifest.json or tars, or a remote location) or a native folder."""
    from decodiff.datasets.stream import is_url  # stream pulls torch (0.7 s): a local inspection does without

    loc = str(location)
    if is_url(loc):
        return _inspect_remote(loc, verify)
    path = Path(loc)
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.is_file():
        raise DataError(f"{path}: a file; expected a shard set folder or a data set folder")
    if (path / MANIFEST).is_file() or any(path.glob("*.tar")) or (path / ".shard-run").is_dir():
        return _inspect_shards(path, verify, deep, progress)
    return _inspect_native(path, dataset, options or {}, deep, progress)


# ---- shard sets -----------------------------------------------------------------------------


def _from_manifest(ins: Inspection, m: Manifest) -> None:
    ins.dataset, ins.categories, ins.counts = m.dataset, list(m.categories), m.counts
    ins.image_sizes = dict(m.image_sizes) or (
        {f"{m.image_size[0]}x{m.image_size[1]}": m.count("train") + m.count("test")} if m.image_size else {}
    )
    ins.skipped = list(m.skipped)
    per_split: dict[str, int] = {}
    for s in m.shards:
        per_split[s.split] = per_split.get(s.split, 0) + 1
    ins.shards = {
        "count": len(m.shards),
        "bytes": sum(s.bytes for s in m.shards),
        "per_split": per_split,
        "checksum": m.checksum,
    }
    if m.skipped:
        ins.warn(MANIFEST, f"{len(m.skipped)} samples were skipped when sharding (--skip-bad); listed under 'skipped'")
    # the manifest's counts must agree with its shards'
    for split, cats in m.counts.items():
        for cat, c in cats.items():
            n = sum(s.count for s in m.shards if s.split == split and s.category == cat)
            if n != c["normal"] + c["anomalous"]:
                ins.error(
                    MANIFEST, f"{split}/{cat}: shards hold {n} samples, the counts say {c['normal'] + c['anomalous']}"
                )
    _content_checks(ins)


def _content_checks(ins: Inspection) -> None:
    for cat in ins.categories:
        train = ins.counts.get("train", {}).get(cat)
        test = ins.counts.get("test", {}).get(cat)
        if not train or not train["normal"]:
            ins.warn(cat, "no training images (this category cannot be trained on)")
        if train and train["anomalous"]:
            ins.error(cat, f"{train['anomalous']} anomalous images in the train split")
        if not test:
            ins.warn(cat, "no test images (this category cannot be evaluated)")
        elif not test["anomalous"]:
            ins.warn(cat, "no anomalous test images (image AUROC is undefined)")
        elif not test["normal"]:
            ins.warn(cat, "no normal test images (image AUROC is undefined)")
        if test and test.get("no_mask"):
            n, of = test["no_mask"], test["anomalous"]
            what = (
                f"none of its {of} anomalous test images has a mask"
                if n == of
                else f"{n} of its {of} anomalous test images have no mask"
            )
            hint = (
                " Shard it (or run bench/train/evaluate) with --masks-optional / data.masks_optional=true to "
                "keep them; without it sharding stops at the first."
                if ins.kind == "native"
                else ""
            )
            ins.warn(
                cat,
                f"masks missing: {what}, so this category's pixel "
                f"metrics will be null (not available) and its figures show no mask row; image metrics "
                f"are unaffected.{hint}",
            )


def _inspect_shards(path: Path, verify: bool, deep: bool, progress: Progress | None) -> Inspection:
    ins = Inspection(str(path), "shards")
    tars = sorted(p.name for p in path.glob("*.tar"))
    if not (path / MANIFEST).is_file():
        ins.error(
            path / MANIFEST,
            f"missing: an unfinished or killed shard run ({len(tars)} finished tars); run "
            "`decodiff data shard` again with the same arguments to finish it",
        )
        return ins
    try:
        m = Manifest.load(path)
    except DataError as exc:
        ins.error(path / MANIFEST, str(exc).split(": ", 1)[-1])
        return ins
    _from_manifest(ins, m)
    listed = {s.name for s in m.shards}
    for name in tars:
        if name not in listed:
            ins.warn(path / name, f"a tar not listed in {MANIFEST} (left from another run?)")
    for tmp in sorted(path.glob("*.tar.tmp-*")):
        ins.warn(path / tmp.name, "temporary file of a killed shard run (safe to delete)")
    if (path / ".shard-run").is_dir():
        ins.warn(path / ".shard-run", "state of an unfinished shard run next to a finished manifest")
    total = len(m.shards)
    for i, s in enumerate(m.shards):
        p = path / s.name
        what = shard_problem(path, s, sha256=verify)
        if what:
            ins.error(p, what)
        if deep and what in (None, SHA256_DIFFERS):  # whole-sized: decoding it says which samples are damaged
            _deep_shard(ins, p, s.count)
        if progress:
            progress(i + 1, total)
    return ins


def _deep_shard(ins: Inspection, path: Path, expected: int) -> None:
    n = 0
    try:
        for rec in open_records(str(path)):
            try:
                decode_record(rec)
            except (DataError, KeyError, ValueError) as exc:
                ins.error(path, f"sample {rec.get('__key__')}: {exc}")
            n += 1
    except DataError as exc:
        ins.error(path, f"unreadable tar ({str(exc).split(': ', 1)[-1]})")
        return
    if n != expected:
        ins.error(path, f"holds {n} samples, the manifest says {expected}")


def _inspect_remote(loc: str, verify: bool) -> Inspection:
    # webdataset and stream pull torch (0.7 s): only a remote inspection needs them
    import webdataset as wds

    from decodiff.datasets.stream import load_manifest, resolve

    ins = Inspection(loc, "shards")
    try:
        m = load_manifest(loc)
    except DataError as exc:
        ins.error(loc, str(exc))
        return ins
    _from_manifest(ins, m)
    if verify:
        for s in m.shards:
            url = resolve(loc, s.name)
            h = hashlib.sha256()
            try:
                with wds.gopen(url, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
            except OSError as exc:
                ins.error(url, f"unreadable ({exc})")
                continue
            if h.hexdigest() != s.sha256:
                ins.error(url, "sha256 differs from the manifest's")
    return ins


# ---- native folders -------------------------------------------------------------------------


def _inspect_native(
    root: Path, dataset: str | None, options: dict[str, Any], deep: bool, progress: Progress | None
) -> Inspection:
    ins = Inspection(str(root), "native")
    name = dataset or detect_layout(root)
    if name is None:
        ins.kind = "unknown"
        ins.error(
            root,
            "no known layout (MVTec-AD/MPDD, VisA raw or converted, Real-IAD, normal/anomalous "
            "folders, or a shard set); name it with --dataset",
        )
        return ins
    ins.dataset = name
    bad: list[tuple[str, str]] = []
    samples: list[Sample] = []
    try:
        # masks optional: an anomalous image without a mask is counted, and reported once per category
        for s in read_dataset(name, root, on_bad=lambda p, r: bad.append((p, r)), masks_optional=True, **options):
            samples.append(s)
    except DataError as exc:
        ins.error(root, str(exc))
    for p, r in bad:
        ins.error(p, r)
    ins.categories = list(dict.fromkeys(s.category for s in samples))
    official = spec(name).categories
    if official and samples:
        missing = [c for c in official if c not in ins.categories]
        extra = [c for c in ins.categories if c not in official]
        if missing:
            ins.warn(root, f"{len(missing)} of the {len(official)} official {name} categories are not there: {missing}")
        if extra:
            ins.warn(root, f"categories not in the official {name} list: {extra}")
    for i, s in enumerate(samples):
        c = ins.counts.setdefault(s.split, {}).setdefault(
            s.category, {"normal": 0, "anomalous": 0, "defects": {}, "no_mask": 0}
        )
        c["anomalous" if s.label else "normal"] += 1
        c["defects"][s.defect] = c["defects"].get(s.defect, 0) + 1
        if not s.has_mask:
            c["no_mask"] += 1
        _check_files(ins, s, deep)
        if progress and (i % 256 == 0 or i + 1 == len(samples)):
            progress(i + 1, len(samples))
    _content_checks(ins)
    return ins


def _check_files(ins: Inspection, s: Sample, deep: bool) -> None:
    try:
        if deep:
            h, w = read_rgb(Path(s.source)).shape[:2]
        else:
            h, w = image_size(Path(s.source))
    except DataError as exc:
        ins.error(s.source, str(exc).split(": ", 1)[-1])
        return
    k = f"{h}x{w}"
    ins.image_sizes[k] = ins.image_sizes.get(k, 0) + 1
    if s.mask_source:
        try:
            mh, mw = read_mask(Path(s.mask_source)).shape if deep else image_size(Path(s.mask_source))
        except DataError as exc:
            ins.error(s.mask_source, str(exc).split(": ", 1)[-1])
            return
        if (mh, mw) != (h, w):
            ins.error(s.mask_source, f"mask size {mw}x{mh} differs from its image {w}x{h} ({s.source})")


# ---- text -----------------------------------------------------------------------------------


def format_inspection(ins: Inspection) -> str:
    """A plain-text report: header, the count table, sizes, problems, verdict."""
    lines = []
    what = {"shards": "shard set", "native": "data set folder", "unknown": "folder"}[ins.kind]
    head = f"{ins.location}: {what}"
    if ins.dataset:
        head += f" ({ins.dataset})"
    if ins.shards:
        head += f", {ins.shards['count']} shards, {ins.shards['bytes'] / 1e6:.1f} MB"
    lines.append(head)
    if ins.counts:
        rows = [("split", "category", "normal", "anomalous", "no mask", "defect types")]
        for split in sorted(ins.counts, key=lambda s: {"train": 0, "val": 1, "test": 2}.get(s, 9)):
            for cat, c in ins.counts[split].items():
                defects = ", ".join(f"{d} {n}" for d, n in sorted(c["defects"].items()) if d != "good")
                rows.append(
                    (split, cat, str(c["normal"]), str(c["anomalous"]), str(c.get("no_mask", 0) or ""), defects)
                )
            t = ins.totals()[split]
            rows.append((split, "(all)", str(t["normal"]), str(t["anomalous"]), str(t["no_mask"] or ""), ""))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            lines.append(
                "  "
                + "  ".join(r[i].ljust(widths[i]) if i < 2 else r[i].rjust(widths[i]) for i in range(5))
                + ("  " + r[5] if r[5] else "")
            )
    if ins.image_sizes:
        sizes = sorted(ins.image_sizes.items(), key=lambda kv: -kv[1])
        lines.append(
            "image sizes (HxW): "
            + ", ".join(f"{k} ({n})" for k, n in sizes[:8])
            + (f", ... {len(sizes) - 8} more" if len(sizes) > 8 else "")
        )
    if ins.skipped:
        lines.append(f"skipped when sharding: {len(ins.skipped)}")
        lines += [f"  {s.get('source') or s.get('key')}: {s.get('reason')}" for s in ins.skipped[:20]]
    errors = [p for p in ins.problems if p.severity == "error"]
    warnings = [p for p in ins.problems if p.severity == "warning"]
    for p in errors[:50] + warnings[:50]:
        lines.append(f"{p.severity}: {p.where}: {p.what}")
    if len(errors) > 50 or len(warnings) > 50:
        lines.append(f"... ({len(errors)} errors and {len(warnings)} warnings in all; --json lists every one)")
    lines.append(
        "OK"
        if ins.ok and not warnings
        else f"{'OK with' if ins.ok else 'NOT OK:'} {len(errors)} errors, {len(warnings)} warnings"
    )
    return "\n".join(lines)
