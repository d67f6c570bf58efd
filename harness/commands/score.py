"""`decodiff score`: score anomaly maps produced by any method with the same metrics, tables and
MLflow run as a DeCo-Diff run."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from decodiff.harness.commands.common import add_json_arg, headline, print_json
from decodiff.harness.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score another method's anomaly maps against a test split",
                       description="Match maps to the ground truth by sample key (image path relative to the data set "
                                   "root, without extension) and write the per-category report and an MLflow run. "
                                   "Maps: one .npz with `keys` and `maps` (optionally `scores`), or a folder with "
                                   "<key>.npy/.npz per image. The truth is used as stored (no resize or crop) unless "
                                   "overrides say otherwise, e.g. data.resize=288 data.crop=256.")
    p.add_argument("--maps", required=True, type=Path, help=".npz of maps or a folder of per-image maps")
    p.add_argument("--truth", required=True, help="shard set (folder with manifest.json) or a native data set folder")
    p.add_argument("--dataset", default="mvtec", help="layout of a native --truth folder (default mvtec)")
    p.add_argument("--out", required=True, type=Path, help="output folder for the report and tables")
    p.add_argument("--resize", action="store_true", help="resize maps bilinearly to the mask size where they differ")
    p.add_argument("--config", "-c", default=None, metavar="PRESET", help="preset for metrics/tracking settings")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. metrics.aupro_protocol=deco-diff-code")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from decodiff.harness.config import build_config

    truth = Path(args.truth)
    if "://" not in args.truth and not args.truth.startswith("pipe:") and not truth.exists():
        from decodiff.datasets.imageio import DataError

        raise DataError(f"--truth {truth}: not found (expected a shard folder with manifest.json, or a data set folder)")
    out = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, expected a folder")
    if out.is_dir() and any(out.iterdir()) and "maps" not in _provenance(out):
        raise UsageError(f"--out {out}: holds something else than an earlier `decodiff score` result; choose a new folder")
    where = [f"data.shards={truth}"] if (truth / "manifest.json").is_file() or "://" in args.truth else \
        [f"data.root={truth}", f"data.dataset={args.dataset}"]
    cfg = build_config(args.config, ["data.resize=null", "data.crop=null", *where, "run.name=score", *args.overrides])
    if not args.maps.exists():
        from decodiff.datasets.imageio import DataError

        raise DataError(f"{args.maps}: maps not found")
    from decodiff.harness.data import prepare_data, test_loader
    from decodiff.harness.progress import log
    from decodiff.harness.provenance import code_version
    from decodiff.harness.runs import write_run_files, write_summary
    from decodiff.harness.evaluation.score import score_maps, truth_from_batches
    from decodiff.harness.tracking import check_tracking, log_run
    from decodiff.reports.markdown import write_report

    t0 = time.time()
    check_tracking(cfg)
    data = prepare_data(cfg)
    truth = truth_from_batches(test_loader(cfg, data), cfg.metrics.image_label)
    result = score_maps(args.maps, truth, data.manifest.dataset,
                        resize=args.resize, aupro_protocol=cfg.metrics.aupro_protocol, fpr_limit=cfg.metrics.fpr_limit)
    out.mkdir(parents=True, exist_ok=True)
    prov = write_run_files(out, cfg, {"maps": str(args.maps.resolve()),
                                      "data": {"source": data.source, "checksum": data.manifest.checksum}})
    provenance = {"maps": str(args.maps), "data": f"{data.source} (data checksum {data.manifest.checksum[:12]})",
                  "AUPRO": f"protocol {cfg.metrics.aupro_protocol}, FPR limit {cfg.metrics.fpr_limit}",
                  "code version": prov["code_version"]}
    report = write_report(out, result.records, result.samples, title=f"Scores of {args.maps.name}",
                          provenance=provenance, notes=result.notes)
    run_id = None
    if cfg.tracking.enabled:
        run_id = log_run(cfg, result.records, run_name=f"score-{args.maps.stem}", artifacts=[report, out / "metrics.csv"],
                         tags={"kind": "score", "code_version": code_version(), "data_checksum": data.manifest.checksum,
                               "maps": str(args.maps)[:250]})
    summary = {"run_id": run_id, "report": str(report.resolve()), "metrics": result.records,
               "seconds": round(time.time() - t0, 1)}
    write_summary(out, summary)
    log(f"report: {report}")
    log(f"mean: {headline(result.records)}")
    if args.json:
        print_json(summary)
    else:
        print(report.resolve())
    return 0


def _provenance(folder: Path) -> dict:
    try:
        return json.loads((folder / "provenance.json").read_text())
    except (OSError, ValueError):
        return {}
