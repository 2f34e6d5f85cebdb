"""The committed results stores are evidence: every AUROC in a ``cells.csv`` must recompute from
the scores committed beside it, with an implementation independent of the one that wrote it."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
SCRIPTS = RESULTS.parents[1] / "scripts"
INDEXES = sorted(RESULTS.rglob("cells.csv"))
ARMS = {"teacher", "alone", "single-2", "p-kdgan"}
COLUMNS = ["dataset", "arm", "normal_class", "seed", "auroc", "scores"]


def mann_whitney_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC as P(anomalous score > normal score), ties counting one half (average ranks)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # ties share their mean rank
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_the_rank_auroc_is_right_on_a_hand_example():
    # anomalies 0.9, 0.5; normals 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.5=0.5 -> 1/2, 0.5>0.1)
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    assert mann_whitney_auroc(scores, np.array([1, 1, 0, 0])) == pytest.approx(3.5 / 4)


def test_there_is_a_main_table_to_check():
    assert (RESULTS / "main" / "cells.csv") in INDEXES


@pytest.mark.parametrize("index", INDEXES, ids=lambda p: str(p.parent.relative_to(RESULTS)))
def test_every_committed_auroc_recomputes_from_its_scores(index: Path):
    with index.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert rows, f"{index} has no cells"
    keys = [(r["dataset"], r["arm"], r["normal_class"], r["seed"]) for r in rows]
    assert len(set(keys)) == len(keys), f"{index}: a cell is listed twice"
    for r in rows:
        where = f"{index.parent.name}: {r['dataset']} {r['arm']} class {r['normal_class']}"
        assert r["arm"] in ARMS, where
        path = index.parent / r["scores"]
        with np.load(path, allow_pickle=False) as z:
            scores, labels, classes = z["scores"], z["labels"], z["classes"]
        k = int(r["normal_class"])
        assert np.array_equal(labels, (classes != k).astype(labels.dtype)), f"{where}: 1 = anomalous"
        assert mann_whitney_auroc(scores, labels) == pytest.approx(float(r["auroc"]), abs=1e-9), where
        cell = json.loads((path.parent / "cell.json").read_text())
        assert (cell["arm"], cell["normal_class"], cell["seed"]) == (r["arm"], k, int(r["seed"])), where
        if r["dataset"] == "cifar10":  # only the first 1,000 CIFAR-10 test images are here
            assert len(labels) == 1000, where
            note = json.loads((path.parent / "metrics.json").read_text()).get("note", "")
            assert "first 1000 test images" in note, where


# every recipe's search runs: runs/ (teachers at batch 64) and schedule/runs/ (batch 16)
SEARCH_RUNS = sorted((RESULTS / "distill-search").rglob("metrics.json"))


def test_the_distillation_search_commits_its_runs():
    assert len(SEARCH_RUNS) >= 20, "docs/results/distill-search/runs lost its raw scores"


@pytest.mark.parametrize("metrics", SEARCH_RUNS,
                         ids=lambda p: str(p.parent.relative_to(RESULTS / "distill-search")))
def test_every_search_run_auroc_recomputes_from_its_scores(metrics: Path):
    m = json.loads(metrics.read_text())
    with np.load(metrics.parent / "scores.npz", allow_pickle=False) as z:
        labels, classes = z["labels"], z["classes"]
        k = int(m["normal_class"])
        assert np.array_equal(labels, (classes != k).astype(labels.dtype))
        for key, auroc in (("latent", "auroc_latent"), ("reconstruction", "auroc_reconstruction"),
                           ("scores", "auroc")):
            assert mann_whitney_auroc(z[key], labels) == pytest.approx(m[auroc], abs=1e-9), key
    if m["dataset"] == "cifar10":
        assert len(labels) == 1000 and "first 1000 test images" in m["note"]


def search_table_script():  # noqa: ANN201 - a module
    """scripts/distill_search_table.py, whose own lists and arm names the checks below use (so
    that a new search arm is checked without being named twice)."""
    spec = importlib.util.spec_from_file_location("distill_search_table", SCRIPTS / "distill_search_table.py")
    assert spec is not None and spec.loader is not None
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    return table


SEARCH_TABLE = search_table_script()
# A search table's arms that exist only as search runs (the table's own arms come from a cells store)
SEARCH_ONLY_ARMS = set(SEARCH_TABLE.ORDER) - ARMS


def cells_as_search_arms() -> dict[tuple[str, str, str, str], set[str]]:
    """Committed table cells that a search table shows under a search arm's name (since the
    schedule decision the table's p-kdgan is the search's pk-tlr), by (dataset, class, seed,
    arm): their AUROCs as the table prints them."""
    out: dict[tuple[str, str, str, str], set[str]] = {}
    for meta_path in RESULTS.rglob("cell.json"):
        meta = json.loads(meta_path.read_text())
        arm = SEARCH_TABLE.search_arm(meta_path.parent, meta["arm"])
        if arm in SEARCH_ONLY_ARMS and (meta_path.parent / "metrics.json").is_file():
            auroc = json.loads((meta_path.parent / "metrics.json").read_text())["auroc"]
            key = (meta["dataset"], str(meta["normal_class"]), str(meta["seed"]), arm)
            out.setdefault(key, set()).add(f"{100 * auroc:.2f}")
    return out
SEARCH_TABLES = sorted((RESULTS / "distill-search").rglob("tables.md"))


def test_there_are_search_tables_to_check():
    assert RESULTS / "distill-search" / "tables.md" in SEARCH_TABLES


@pytest.mark.parametrize("table", SEARCH_TABLES,
                         ids=lambda p: str(p.parent.relative_to(RESULTS / "distill-search")))
def test_every_search_table_number_has_its_raw_scores_committed(table: Path):
    """A printed AUROC of a search arm must come from a run committed beside its table
    (``runs/DATASET/cCLASS/sSEED-ARM``): a number whose scores were never committed (or were
    ignored by git) is not evidence. The first table block is the per-unit one."""
    lines = table.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| dataset | class | seed |")), None)
    if start is None:
        return  # no unit has a search run yet
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    checked = rows = 0
    from_cells = cells_as_search_arms()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows += 1
        row = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=False))
        for arm in SEARCH_ONLY_ARMS & set(header):
            if row[arm] == "–":
                continue
            run = table.parent / "runs" / row["dataset"] / f"c{row['class']}" / f"s{row['seed']}-{arm}"
            where = f"{table.relative_to(RESULTS)}: {row['dataset']} c{row['class']} s{row['seed']} {arm}"
            if not (run / "metrics.json").is_file():  # a committed table cell under the arm's name
                cell = from_cells.get((row["dataset"], row["class"], row["seed"], arm), set())
                assert row[arm] in cell, f"{where}: no committed run at {run} nor a table cell"
                checked += 1
                continue
            auroc = json.loads((run / "metrics.json").read_text())["auroc"]
            assert f"{100 * auroc:.2f}" == row[arm], where
            checked += 1
    assert checked or not rows, f"{table}: unit rows but no search arm in them"
