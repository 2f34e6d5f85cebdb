"""scripts/table_status.py: the status page of a results store is computed from its cells, and
refuses a cells.csv whose AUROC disagrees with the committed scores."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pkdgan.core import runs
from pkdgan.studies.cells import INDEX, INDEX_COLUMNS, recompute_auroc

pytestmark = pytest.mark.slow  # end-to-end (make test-fast leaves it out)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "table_status.py"
# (arm, class) -> how far the anomalies' scores are shifted up: a larger shift, a higher AUROC
SHIFT = {"teacher": 2.0, "alone": 0.5, "single-2": 1.0, "p-kdgan": 1.5}


def make_store(root: Path, *, corrupt: bool = False,
               seeds: dict[int, tuple[int, ...]] | None = None) -> Path:
    """Three classes of seed 0 by default; ``seeds`` maps each seed to the classes it has."""
    rng = np.random.default_rng(0)
    rows = []
    for seed, classes in (seeds or {0: (0, 1, 2)}).items():
        for arm, shift in SHIFT.items():
            for k in classes:
                labels = np.r_[np.zeros(50), np.ones(50)].astype(np.int64)
                scores = rng.normal(size=100) + shift * labels
                kind = "edegan" if arm == "teacher" else "distill"
                rel = f"{kind}/mnist/c{k}/{arm}-s{seed}/scores.npz"
                (root / rel).parent.mkdir(parents=True)
                runs.write_npz(root / rel, scores=scores, labels=labels)
                runs.write_json((root / rel).parent / runs.METRICS, {"train_seconds": 180.0})
                auroc = recompute_auroc(root, rel) + (0.01 if corrupt and arm == "alone" else 0.0)
                rows.append(dict(zip(INDEX_COLUMNS, ("mnist", arm, k, seed, auroc, rel), strict=True)))
    with open(root / INDEX, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return root


def run(*args: str, classes: int = 3) -> subprocess.CompletedProcess[str]:
    """The script on a store whose complete seeds have ``classes`` classes (the fixtures' 3)."""
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--classes", str(classes)],
                          capture_output=True, text=True)


def test_status_pairs_the_arms_and_sums_the_cost(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    r = run(str(store), "--datasets", "mnist,cifar10")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    teacher = next(x for x in lines if x.startswith("| teacher | 3 |"))
    assert "≥ 97.8" in teacher
    # the teacher's scores are shifted most, so every arm is lower on every class
    alone_vs_teacher = next(x for x in lines if x.startswith("| alone − teacher | 3 |"))
    assert "| 0 / 3 |" in alone_vs_teacher and "| -" in alone_vs_teacher
    assert "≥ +1.77" in next(x for x in lines if x.startswith("| p-kdgan − alone |"))
    assert "teacher 3.0 (3.0–3.0), 3 cells" in r.stdout  # 180 s per cell
    assert "## cifar10" in r.stdout and "No cells yet." in r.stdout


def test_status_with_a_baseline_pairs_the_same_cells(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    r = run(str(store), "--baseline", str(store), "--baseline-label", "same", "--datasets", "mnist")
    assert r.returncode == 0, r.stderr
    alone = next(x for x in r.stdout.splitlines() if x.startswith("| alone |"))
    assert "+0.00 (+0.00 .. +0.00; 0/0)" in alone


def test_status_refuses_an_index_that_disagrees_with_its_scores(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", corrupt=True)
    r = run(str(store), "--datasets", "mnist")
    assert r.returncode != 0
    assert "cells.csv" in r.stderr and "Traceback" not in r.stderr


def test_a_seed_still_filling_up_is_listed_but_not_averaged_in(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", seeds={0: (0, 1, 2), 1: (0, 2)})
    r = run(str(store), "--datasets", "mnist")
    assert r.returncode == 0, r.stderr
    teacher = next(x for x in r.stdout.splitlines() if x.startswith("| teacher | 5 |"))
    cells = [c.strip() for c in teacher.split("|")]
    auroc = {(int(row["normal_class"]), int(row["seed"])): 100 * float(row["auroc"])
             for row in csv.DictReader(open(store / INDEX)) if row["arm"] == "teacher"}
    seed0 = np.mean([auroc[(k, 0)] for k in (0, 1, 2)])
    seed1 = np.mean([auroc[(k, 1)] for k in (0, 2)])
    assert cells[3] == f"{seed0:.2f}"  # seed 1 lacks class 1: not in the mean
    assert cells[5] == f"s0 {seed0:.2f} (3), s1 {seed1:.2f} (2)"
    # with the datasets' 10 classes, no seed of this store is complete: no mean at all
    ten = run(str(store), "--datasets", "mnist", classes=10).stdout
    assert next(x for x in ten.splitlines() if x.startswith("| teacher | 5 |")).split("|")[3].strip() == "–"
    spread = next(x for x in r.stdout.splitlines() if x.startswith("| teacher | s1 − s0 |"))
    diffs = [auroc[(k, 1)] - auroc[(k, 0)] for k in (0, 2)]
    assert f"| 2 | {np.mean(diffs):+.2f} | {np.std(diffs, ddof=1):.2f} |" in spread


def test_tail_averaging_is_read_against_each_cells_last_epoch(tmp_path: Path) -> None:
    """Kept − last epoch comes from each averaged cell's test trace, split into the units the rule
    was decided on (classes 0–2 of seed 0) and the rest; cells without an average are left out."""
    store = make_store(tmp_path / "store", seeds={0: (0, 1, 2, 3), 1: (0,)})
    offsets = {(0, 0): 1.0, (1, 0): 2.0, (2, 0): 3.0, (3, 0): -1.0, (0, 1): -3.0}  # points
    with open(store / INDEX, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        cell = (store / row["scores"]).parent
        key = (int(row["normal_class"]), int(row["seed"]))
        average = 5 if row["arm"] == "teacher" else 0  # only the teacher keeps a mean here
        runs.write_json(cell / runs.CONFIG, {"train": {"average_last": average, "score": "latent"}})
        last = float(row["auroc"]) - offsets[key] / 100
        (cell / runs.TEST_TRACE).write_text(f"epoch,auroc_latent\n1,0.5\n15,{last:.10f}\n")
    r = run(str(store), "--datasets", "mnist", classes=4)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    start = lines.index("| arm | classes 0–2, seed 0 (the rule's) | other cells | all |") + 2
    table = list(itertools.takewhile(lambda x: x.startswith("|"), lines[start:]))
    assert len(table) == 1 and table[0].startswith("| teacher |")  # no other arm keeps a mean
    rule, other, both = (c.strip() for c in table[0].strip("|").split("|")[1:])
    assert rule.startswith("+2.00 (3; ") and rule.endswith("; 3/0)")
    assert other.startswith("-2.00 (2; ") and other.endswith("; 0/2)")
    assert both.startswith("+0.40 (5; ") and both.endswith("; 3/2)")
