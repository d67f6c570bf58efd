"""`decodiff report`: the report of a run (from its folder or from MLflow alone), or the comparison
of several runs, of every run of an MLflow experiment, or of a sweep's trials, optionally beside
the paper's published numbers. Writes report.md, report.html (self-contained), tables (CSV and
LaTeX) and figures (PNG) into --out."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from decodiff.harness.commands.common import add_json_arg, print_json

HELP = "write the report of a run, an experiment or a sweep (tables, figures, HTML)"
DESCRIPTION = """Rebuild a run's report from its run folder or from the tracking server alone, or compare runs (seeds
averaged, bootstrap intervals, the paper's methods beside them with --compare-published)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--run", action="append", metavar="ID|DIR", help="a run folder or an MLflow run id; repeat to compare runs"
    )
    what.add_argument("--sweep", type=Path, metavar="DIR", help="a sweep folder (decodiff sweep)")
    what.add_argument("--experiment", metavar="NAME", help="every run of an MLflow experiment")
    p.add_argument(
        "--compare-published",
        action="store_true",
        help="put the paper's numbers (RD4AD ... MambaAD and DeCo-Diff, main Tables 1, 2, appendix 3-7) "
        "beside the runs, for the runs' dataset",
    )
    p.add_argument(
        "--published-dataset",
        choices=["mvtec", "visa", "mpdd", "realiad"],
        help="compare with the paper's numbers on this dataset (implies --compare-published)",
    )
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI for run ids and experiments (default: $MLFLOW_TRACKING_URI, "
        "else the default config's sqlite:///runs/mlflow.db)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    add_json_arg(p)
    p.set_defaults(func=run)


def default_uri() -> str:
    from decodiff.harness.config import Config
    from decodiff.harness.tracking import tracking_uri

    return os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri(Config())


def run(args: argparse.Namespace) -> int:
    # reading: fail within seconds when a server is down (MLflow's default retries take minutes)
    saved = {k: os.environ.get(k) for k in FAST_FAIL}
    for k, v in FAST_FAIL.items():
        os.environ.setdefault(k, v)
    try:
        return _run(args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


FAST_FAIL = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def _run(args: argparse.Namespace) -> int:
    from decodiff.harness.progress import log
    from decodiff.harness.report_inputs import resolve_experiment, resolve_runs, resolve_sweep, scratch_dir
    from decodiff.reports.build import build_comparison_report, build_run_report, sweep_missing
    from decodiff.reports.write import write_report_files

    uri = args.tracking_uri or default_uri()
    compare = args.compare_published or args.published_dataset is not None
    with scratch_dir() as tmp:
        if args.run:
            inputs = resolve_runs(args.run, uri, Path(tmp))
            what = f"{len(args.run)} run(s)"
        elif args.sweep is not None:
            inputs = resolve_sweep(args.sweep)
            what = f"sweep {args.sweep}"
        else:
            inputs = resolve_experiment(args.experiment, uri, Path(tmp))
            what = f"experiment {args.experiment}"
        for problem in inputs.problems:
            log(f"report: {problem}")
        if args.run and len(args.run) == 1 and inputs.runs:
            r = inputs.runs[0]
            report = build_run_report(r, (args.published_dataset or r.dataset) if compare else None)
        else:
            missing = list(inputs.missing)
            if inputs.sweep is not None:
                default_ds = inputs.runs[0].dataset if inputs.runs else "unknown"
                missing += sweep_missing(inputs.sweep, default_ds)
            if args.sweep is not None:
                title = f"DeCo-Diff sweep: {inputs.sweep.name}"
                meta = [
                    ("sweep folder", str(args.sweep)),
                    (
                        "trials",
                        f"{sum(t.run is not None for t in inputs.sweep.trials)} of {len(inputs.sweep.trials)} finished",
                    ),
                ]
                if inputs.sweep.description:
                    meta.append(("description", inputs.sweep.description))
            elif args.experiment:
                title = f"DeCo-Diff experiment: {args.experiment}"
                meta = [("tracking URI", uri), ("runs", f"{len(inputs.runs)} with metrics")]
            else:
                title = f"DeCo-Diff comparison of {len(args.run)} runs"
                meta = [("runs", ", ".join(args.run))]
            report = build_comparison_report(
                title,
                meta,
                inputs.runs,
                missing,
                compare_published=compare,
                published_dataset=args.published_dataset,
                sweep=inputs.sweep,
            )
        path = write_report_files(report, args.out)
    html = path.with_name("report.html")
    log(f"report: {path} and {html} ({what})")
    if args.json:
        print_json(
            {
                "report": str(path.resolve()),
                "html": str(html.resolve()),
                "runs": [{"name": r.name, "run_id": r.run_id, "dataset": r.dataset} for r in inputs.runs],
                "missing": [{"what": m[0], "reason": m[2]} for m in inputs.missing],
                "problems": inputs.problems,
            }
        )
    else:
        print(path)
    if not inputs.runs and inputs.problems:
        from decodiff.datasets.imageio import DataError

        raise DataError(f"nothing to report from {what}: {inputs.problems[0]} (wrote {path} with what exists)")
    return 0
