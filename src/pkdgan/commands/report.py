"""``pkdgan report RUN_DIR | GRID_DIR``: a run's or a study's self-contained HTML report.

For a grid also the Markdown/CSV tables, plots and computed verdicts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pkdgan.core.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="report.html for a run folder, or report.html/.md/.csv and plots for a grid",
        description="For a run folder: RUN_DIR/report.html with the model card, AUROC/AUPR of every "
                    "score kind, ROC curve, score histograms with the threshold, loss curves and "
                    "galleries of the most anomalous images, false alarms and misses (teacher beside "
                    "student for a distilled run). For a grid written by pkdgan reproduce: "
                    "GRID_DIR/report.html, report.md, report.csv, per_class.png, roc.png (and "
                    "batch_size.png): per-class AUROC mean ± std over seeds, the paper's means beside "
                    "ours, and the verdict on the study's claim computed from paired (class, seed) "
                    "differences; each finished cell gets its run page. Unfinished runs are listed, "
                    "not guessed. Every page is one self-contained file that opens offline.")
    p.add_argument("path", type=Path, metavar="RUN_DIR|GRID_DIR",
                   help="a run folder, or the --out folder of pkdgan reproduce")
    p.add_argument("--data-root", default=None,
                   help="where the runs' test images are (for the galleries), if not where they say")
    p.add_argument("--no-galleries", action="store_true",
                   help="run page without galleries (needs neither checkpoint nor data)")
    p.add_argument("--no-run-pages", action="store_true",
                   help="grid: do not write the cells' run pages (cells show a summary instead)")
    p.add_argument("--json", action="store_true", help="grid: also print the verdicts as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pkdgan.core import runs
    from pkdgan.reports import html_report
    from pkdgan.studies.grid import GRID_FILE
    from pkdgan.studies.report import load_study, write_report
    from pkdgan.studies.study_page import write_study_html

    path: Path = args.path
    if (path / GRID_FILE).is_file():
        study = load_study(path)
        out = write_report(path, study=study)
        page = write_study_html(study, run_pages=not args.no_run_pages, data_root=args.data_root,
                                galleries=not args.no_galleries)
        print(page)
        if args.json:
            print(json.dumps(out, indent=2, default=float))
        return 0
    if (path / runs.CONFIG).is_file():
        print(html_report.write_run_html(path, args.data_root, galleries=not args.no_galleries))
        return 0
    raise UsageError(f"{path} is not a grid folder (no {GRID_FILE}) nor a run folder "
                     f"(no {runs.CONFIG}); give pkdgan reproduce's --out or a run folder")
