"""A study's HTML page (``GRID_DIR/report.html``): the table beside the paper's numbers, verdicts,
plots and every cell linked to its run page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pkdgan.core import runs
from pkdgan.reports.html_report import METRIC, REPORT, data_uri, render, write_run_html
from pkdgan.studies.specs import STUDIES, Preset
from pkdgan.studies.stats import class_stats, mean_stats, paper_arm_means


def _cell_text(m: float, sd: float, n: int) -> dict[str, Any]:
    return {"text": "–" if n == 0 else f"{m:.2f} ± {sd:.2f} ({n})", "value": "" if n == 0 else f"{m:.4f}"}


def _run_row(study: Any, spec: Any, grid_dir: Path) -> dict[str, Any]:
    """One cell of the grid: its numbers, and a link to its run page or why there is none."""
    path = study.locate(spec)
    row: dict[str, Any] = {"name": spec.name, "arm": spec.arm, "cls": spec.normal_class,
                           "seed": spec.seed, "finished": runs.is_finished(path), "metrics": {},
                           "link": None, "why": ""}
    if not row["finished"]:
        row["why"] = "unfinished"
        return row
    metrics = runs.read_json(path / runs.METRICS)
    row["metrics"] = {k: v for k, v in metrics.items()
                      if METRIC.match(k) or k in ("train_seconds", "images_per_second", "epochs")}
    row["auroc"] = metrics.get("auroc")
    row["aupr"] = metrics.get("aupr")
    row["seconds"] = metrics.get("train_seconds")
    if (path / REPORT).is_file():
        row["link"] = os.path.relpath(path / REPORT, grid_dir)
    elif (path / runs.CHECKPOINT).is_file():
        row["why"] = f"no run page yet: pkdgan report {path}"
    else:
        row["why"] = "checkpoint not kept: summary only"
    return row


def study_context(study: Any) -> dict[str, Any]:
    """Everything ``study.html.j2`` shows, from a ``report.Study`` and the PNGs beside it."""

    grid_dir = study.grid_dir
    labels, classes = study.labels, study.classes
    rows = []
    for k in classes:
        rows.append({"cls": k, "name": study.names[k] if study.names[k] != str(k) else "",
                     "cells": [_cell_text(*class_stats(study.table[lab], k)) for lab in labels]})
    paper = study.paper_mean
    plots = [{"src": data_uri((grid_dir / name).read_bytes()), "alt": alt}
             for name, alt in (("per_class.png", "per-class AUROC, mean and seed spread"),
                               ("batch_size.png", "AUROC against batch size"),
                               ("roc.png", "ROC curves per class"))
             if (grid_dir / name).is_file()]
    p = study.grid["preset"]
    return {
        "title": f"{study.grid['study']} study on {study.grid['dataset']}",
        "claim": STUDIES.get(study.grid["study"], ""),
        "preset": f"{p['name']} ({p['description']}): {Preset(**p).summary()}",
        "capped": p.get("max_test") is not None,
        "classes": classes, "seeds": study.seeds, "n_runs": len(study.specs),
        "n_done": len(study.specs) - len(study.missing),
        "command": study.grid.get("command") or f"pkdgan reproduce {study.grid['study']}",
        "verdict": study.verdict,
        "lines": [c.line() for c in study.comparisons] + [line for line, _ in study.checks],
        "labels": labels, "rows": rows,
        "means": [_cell_text(*mean_stats(study.table[lab], classes)) for lab in labels],
        "paper": {"what": paper[0], "value": f"{paper[1]:.2f}"} if paper else None,
        "paper_arms": ([f"{arms[lab]:.2f}" if lab in arms else "–" for lab in labels]
                       if study.grid["study"] == "main" and (arms := paper_arm_means(study.grid["dataset"]))
                       else None),
        "plots": plots,
        "runs": sorted((_run_row(study, s, grid_dir) for s in study.specs),
                       key=lambda r: (r["cls"], labels.index(r["arm"]) if r["arm"] in labels else 99,
                                      r["seed"])),
        "notes": study.notes, "missing": study.missing,
    }


def write_study_html(study: Any, run_pages: bool = False, data_root: str | None = None,
                     galleries: bool = True) -> Path:
    """``GRID_DIR/report.html``; with ``run_pages`` first the run page of each finished cell that
    keeps its checkpoint and has none yet (a finished run never changes). Cells without a
    checkpoint (e.g. in a committed results store) get an embedded summary instead."""
    if run_pages:
        for spec in study.specs:
            path = study.locate(spec)
            if ((path / runs.CHECKPOINT).is_file() and runs.is_finished(path)
                    and not (path / REPORT).is_file()):
                write_run_html(path, data_root, galleries)
    page = render("study.html.j2", **study_context(study))
    runs.atomic_write_bytes(study.grid_dir / REPORT, page.encode())
    return study.grid_dir / REPORT
