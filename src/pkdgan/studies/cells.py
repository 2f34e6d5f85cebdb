"""A committed results store: the small files of finished grid runs, kept under version control.

Long studies (the main table) take days on a CPU and may run on several machines. Each finished
run ("cell") is copied here without its checkpoints, under the same name it has in the run store
(the name ends in its config hash), so ``pkdgan reproduce --results DIR`` recognises committed
cells and skips them, and anyone can recompute every AUROC from the committed raw scores.
``cells.csv`` indexes the store for outside checks.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core import runs
from pkdgan.evaluation.metrics import evaluate_scores
from pkdgan.studies.specs import MAIN_ARMS, RunSpec

CELL_FILES = (runs.CONFIG, runs.METRICS, runs.HISTORY, runs.CALIBRATION, runs.TEST_TRACE)
INDEX = "cells.csv"
CELL_META = "cell.json"  # the grid spec of the cell (arm, class, seed, config hash)
INDEX_COLUMNS = ("dataset", "arm", "normal_class", "seed", "auroc", "scores")
# scores.npz arrays kept in a cell; labels and classes fit in int8
SCORE_ARRAYS = ("scores", "labels", "classes", "latent", "reconstruction",
                "holdout_latent", "holdout_reconstruction")


def cell_dir(results: Path, spec: RunSpec) -> Path:
    return results / spec.name


def is_committed(results: Path, spec: RunSpec) -> bool:
    """The cell's files are there (metrics last) and were made by a config with this hash."""
    path = cell_dir(results, spec)
    if not runs.is_finished(path) or not (path / CELL_META).is_file():
        return False
    return runs.read_json(path / CELL_META).get("config_hash") == spec.config_hash


def export_cell(run_dir: Path, results: Path, spec: RunSpec, dataset: str) -> Path:
    """Copy a finished run's small files (scores lean, no checkpoints) into the results store."""
    out = cell_dir(results, spec)
    out.mkdir(parents=True, exist_ok=True)
    for name in CELL_FILES:
        if name != runs.METRICS and (run_dir / name).is_file():
            runs.atomic_write_bytes(out / name, (run_dir / name).read_bytes())
    write_lean_scores(run_dir / runs.SCORES, out / runs.SCORES)
    runs.write_json(out / CELL_META, {"dataset": dataset, **spec.to_dict()})
    # metrics last: a cell is committed-complete only once metrics.json is there
    runs.atomic_write_bytes(out / runs.METRICS, (run_dir / runs.METRICS).read_bytes())
    write_index(results)
    return out


def write_lean_scores(src: Path, dst: Path) -> None:
    """A run's ``scores.npz`` as committed: float32 scores, int8 labels and classes."""
    z = runs.read_npz(src)
    lean = {k: (z[k].astype(np.int8) if k in ("labels", "classes") else z[k].astype(np.float32))
            for k in SCORE_ARRAYS if k in z}
    runs.write_npz(dst, **lean)


def read_cells(results: Path) -> list[dict[str, Any]]:
    """One row per finished cell under ``results``, AUROC as stored in its metrics."""
    rows = []
    for meta_path in sorted(results.rglob(CELL_META)):
        path = meta_path.parent
        if not runs.is_finished(path):
            continue
        meta, m = runs.read_json(meta_path), runs.read_json(path / runs.METRICS)
        rows.append({"dataset": meta["dataset"], "arm": meta["arm"],
                     "normal_class": int(meta["normal_class"]), "seed": int(meta["seed"]),
                     "auroc": m.get("auroc"),
                     "scores": (path / runs.SCORES).relative_to(results).as_posix()})
    order = {arm: i for i, arm in enumerate(("teacher", *MAIN_ARMS))}
    rows.sort(key=lambda r: (r["dataset"], order.get(r["arm"], len(order)), r["normal_class"], r["seed"]))
    return rows


def write_index(results: Path) -> None:
    """Rewrite ``cells.csv`` from the cell folders (never edited by hand)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(INDEX_COLUMNS)
    for r in read_cells(results):
        w.writerow([r["dataset"], r["arm"], r["normal_class"], r["seed"],
                    "" if r["auroc"] is None else repr(float(r["auroc"])), r["scores"]])
    runs.atomic_write_bytes(results / INDEX, buf.getvalue().encode())


def recompute_auroc(results: Path, scores_path: str) -> float:
    """AUROC from a cell's committed raw scores, for checks against ``cells.csv``."""

    z = runs.read_npz(results / scores_path)
    return float(evaluate_scores(z["scores"], z["labels"].astype(np.int64))["auroc"])
