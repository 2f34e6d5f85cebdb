"""``pkdgan plot RUN_DIR...``: (re)draw a run's ROC, score histograms, reconstructions and losses."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="(re)draw a run folder's plots into RUN_DIR/plots/",
                       description="ROC curve, score histograms (normal vs anomalous, with the "
                                   "threshold), a reconstruction grid and the loss curves.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders to plot")
    p.add_argument("--data-root", default=None,
                   help="where the run's test images are (for the reconstruction grid), if not where it says")
    p.add_argument("--no-reconstructions", action="store_true",
                   help="skip the reconstruction grid (needs no data)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pkdgan.reports.plots import replot_run

    for run_dir in args.run_dirs:
        for path in replot_run(run_dir, args.data_root, reconstructions=not args.no_reconstructions):
            print(path)
    return 0
