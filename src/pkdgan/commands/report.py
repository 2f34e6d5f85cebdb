"""``pkdgan report GRID_DIR``: tables, plots and computed verdicts for a study's grid."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="aggregate a study grid into report.md, report.csv and plots",
        description="Read the finished run folders of a grid written by pkdgan reproduce and "
                    "write GRID_DIR/report.md, report.csv, per_class.png, roc.png (and "
                    "batch_size.png): per-class AUROC mean ± std over seeds, the paper's means "
                    "beside ours, and the verdict on the study's claim computed from paired "
                    "(class, seed) differences. Unfinished runs are listed, not guessed.")
    p.add_argument("grid_dir", type=Path, help="the --out folder of pkdgan reproduce")
    p.add_argument("--json", action="store_true", help="also print the verdicts as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pkdgan.report import write_report

    out = write_report(args.grid_dir)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
    return 0
