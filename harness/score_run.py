"""Scoring another method's anomaly maps as a run of its own (`decodiff score`): the truth is a
shard set or a native data set folder, used as stored unless overrides say otherwise, so that
maps made at the data's own resolution are compared with masks of that resolution."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from decodiff.datasets.imageio import DataError
from decodiff.harness.config import Config, build_config
from decodiff.harness.errors import UsageError
from decodiff.harness.tracking import check_tracking

if TYPE_CHECKING:
    from decodiff.harness.finishing import RunResult


def score_run(
    maps: str | Path,
    truth: str | Path,
    out: str | Path,
    *,
    dataset: str = "mvtec",
    resize: bool = False,
    config: str | None = None,
    overrides: Sequence[str] = (),
) -> RunResult:
    """Score the maps in `maps` (one .npz or a folder of per-image files) against the test split of
    `truth` (a shard folder or URL, or a native folder of layout `dataset`) into the folder `out`:
    report, tables, summary.json and, unless tracking is off, an MLflow run. `config` (a preset)
    and `overrides` give the metrics and tracking settings; `resize` resizes maps to the masks."""
    t0 = time.time()
    maps, out = Path(maps), Path(out)
    cfg = score_config(truth, out, dataset=dataset, config=config, overrides=overrides)
    if not maps.exists():
        raise DataError(f"{maps}: maps not found")
    # imported once the arguments are known to be good: torch and the metrics take seconds to load
    from decodiff.harness.data import prepare_data, test_loader
    from decodiff.harness.evaluation.score import score_maps, truth_from_batches
    from decodiff.harness.finishing import finish_scores

    check_tracking(cfg)
    data = prepare_data(cfg)
    samples = truth_from_batches(test_loader(cfg, data), cfg.metrics.image_label)
    result = score_maps(
        maps,
        samples,
        data.manifest.dataset,
        resize=resize,
        aupro_protocol=cfg.metrics.aupro_protocol,
        fpr_limit=cfg.metrics.fpr_limit,
    )
    out.mkdir(parents=True, exist_ok=True)
    return finish_scores(cfg, out, data, maps, result, started=t0)


def score_config(
    truth: str | Path, out: Path, *, dataset: str = "mvtec", config: str | None = None, overrides: Sequence[str] = ()
) -> Config:
    """The config of a score run: the truth's data as stored (no resize or crop) unless `overrides`
    say otherwise; the output folder must be new, empty, or an earlier score result."""
    text = str(truth)
    truth = Path(truth)
    if "://" not in text and not text.startswith("pipe:") and not truth.exists():
        raise DataError(
            f"--truth {truth}: not found (expected a shard folder with manifest.json, or a data set folder)"
        )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, expected a folder")
    if out.is_dir() and any(out.iterdir()) and "maps" not in _provenance(out):
        raise UsageError(
            f"--out {out}: holds something else than an earlier `decodiff score` result; choose a new folder"
        )
    if "://" in text or (truth / "manifest.json").is_file():
        where = [f"data.shards={text if '://' in text else truth}"]
    else:
        where = [f"data.root={truth}", f"data.dataset={dataset}"]
    return build_config(config, ["data.resize=null", "data.crop=null", *where, "run.name=score", *overrides])


def _provenance(folder: Path) -> dict:
    try:
        return json.loads((folder / "provenance.json").read_text())
    except (OSError, ValueError):
        return {}
