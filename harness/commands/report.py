"""`decodiff report`: regenerate a run's report from its stored results."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the per-category report of a finished run",
                       description="Rebuild the Markdown and CSV tables of a run folder from its summary.json.")
    p.add_argument("--run", required=True, type=Path, help="run folder (runs/<name>-...)")
    p.add_argument("--out", type=Path, help="output folder (default: the run folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from decodiff.datasets.imageio import DataError
    from decodiff.reports.markdown import write_report

    summary_path = args.run / "summary.json"
    if not summary_path.is_file():
        raise DataError(f"{args.run}: not a finished run folder (no summary.json)")
    summary = json.loads(summary_path.read_text())
    prov = json.loads((args.run / "provenance.json").read_text()) if (args.run / "provenance.json").is_file() else {}
    provenance = {"code version": prov.get("code_version", "?"), "run": str(args.run)}
    samples = None
    path = write_report(args.out or args.run, summary["metrics"], samples, title=f"DeCo-Diff report: {args.run.name}",
                        provenance=provenance)
    print(path)
    return 0
