"""scripts/distill_search_table.py: a unit's search arms sit beside its table cells, every AUROC
is recomputed from its scores (a mismatch stops the table), and paired differences are exact."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from pkdgan.core import runs
from pkdgan.evaluation.metrics import evaluate_scores

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "distill_search_table.py"
LABELS = np.array([0] * 10 + [1] * 10)


def finished(d: Path, separation: float, window: int = 0, **metrics: object) -> float:
    """A run folder whose scores give an AUROC set by ``separation``; returns that AUROC.
    ``window``: the student's ``average_last`` in its config."""
    d.mkdir(parents=True)
    runs.write_json(d / runs.CONFIG, {"distill": {"average_last": window} if window else {}})
    scores = np.r_[np.linspace(0, 1, 10), np.linspace(0, 1, 10) + separation].astype(np.float32)
    auroc = float(evaluate_scores(scores, LABELS)["auroc"])
    runs.write_npz(d / runs.SCORES, scores=scores, labels=LABELS, classes=LABELS)
    runs.write_json(d / runs.METRICS, {"auroc": auroc, **metrics})
    return auroc


def cell(results: Path, arm: str, cls: int, separation: float) -> float:
    d = results / f"{arm}-c{cls}"
    auroc = finished(d, separation, teacher_auroc_after=0.9)
    runs.write_json(d / "cell.json", {"dataset": "mnist", "arm": arm, "normal_class": cls, "seed": 0})
    return auroc


def test_units_arms_and_paired_differences(tmp_path: Path) -> None:
    results, search = tmp_path / "cells", tmp_path / "search"
    got = {}
    for cls in (0, 1):
        for arm, sep in (("teacher", 0.5), ("alone", 0.1 * cls), ("p-kdgan", 0.2)):
            got[arm, cls] = cell(results, arm, cls, sep)
        got["pk-safe", cls] = finished(search / f"bs64-s0-t{cls}-pk-safe", 0.3, dataset="mnist",
                                       normal_class=cls, seed=0, teacher_auroc_after=0.95)
    out = subprocess.run([sys.executable, str(SCRIPT), str(search), "--cells", str(results),
                          "--commit", str(tmp_path / "runs")],
                         capture_output=True, text=True, check=True).stdout
    row0 = (f"| mnist | 0 | 0 | {100 * got['teacher', 0]:.2f} | {100 * got['alone', 0]:.2f} | "
            f"{100 * got['p-kdgan', 0]:.2f} | {100 * got['pk-safe', 0]:.2f} | 90.00, 95.00 |")
    assert row0 in out
    diff = np.mean([got["pk-safe", k] - got["alone", k] for k in (0, 1)]) * 100
    assert f"| mnist | pk-safe − alone | 2 | {diff:+.2f} |" in out
    assert (tmp_path / "runs" / "mnist" / "c1" / "s0-pk-safe" / runs.SCORES).is_file()


def test_an_auroc_its_scores_do_not_give_stops_the_table(tmp_path: Path) -> None:
    results, search = tmp_path / "cells", tmp_path / "search"
    cell(results, "alone", 0, 0.1)
    d = search / "t-pk-safe"
    finished(d, 0.3, dataset="mnist", normal_class=0, seed=0)
    runs.write_json(d / runs.METRICS, {"auroc": 0.99, "dataset": "mnist", "normal_class": 0, "seed": 0})
    r = subprocess.run([sys.executable, str(SCRIPT), str(search), "--cells", str(results)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "but its scores give" in r.stderr


def test_averaged_arms_are_paired_with_their_own_last_epoch(tmp_path: Path) -> None:
    results, search = tmp_path / "cells", tmp_path / "search"
    kept = {}
    for cls, last in ((0, 0.70), (1, 0.80)):
        cell(results, "alone", cls, 0.1)
        d = search / f"bs64-s0-t{cls}-alone-avg"
        kept[cls] = finished(d, 0.4 + 0.1 * cls, window=2, dataset="mnist", normal_class=cls, seed=0)
        runs.write_json(d / runs.METRICS, runs.read_json(d / runs.METRICS)
                        | {"auroc_latent": kept[cls]})
        for epoch, auroc in ((1, 0.5), (2, last)):
            runs.append_history(d / runs.TEST_TRACE, {"epoch": epoch, "auroc_latent": auroc})
    out = subprocess.run([sys.executable, str(SCRIPT), str(search), "--cells", str(results)],
                         capture_output=True, text=True, check=True).stdout
    row = f"| mnist | 0 | 0 | alone-avg | 70.00 | 2 | {100 * kept[0]:.2f} | {100 * kept[0] - 70:+.2f} |"
    assert row in out
    diff = np.mean([100 * kept[0] - 70, 100 * kept[1] - 80])
    assert f"| mnist | alone-avg | 2 | {diff:+.2f} |" in out


def test_the_schedule_rule_is_applied_by_code(tmp_path: Path) -> None:
    """README "The student schedule": a variant passes only if it is ahead of p-kdgan on every
    dataset and by +0.5 pooled; a split must also leave the teacher within 1 point."""
    results, search = tmp_path / "cells", tmp_path / "search"
    for cls in (0, 1):
        cell(results, "teacher", cls, 0.5)  # teacher_auroc_after is 0.9 in every cell()
        cell(results, "alone", cls, 0.1)
        cell(results, "p-kdgan", cls, 0.1)
        unit = {"dataset": "mnist", "normal_class": cls, "seed": 0}
        finished(search / f"t{cls}-pk-b32", 0.3, **unit, teacher_auroc_after=0.9)  # ahead
        finished(search / f"t{cls}-alone-b32", 0.0, **unit)  # behind alone
        # ahead, but the joint step costs the teacher 20 points
        finished(search / f"t{cls}-pk-split5", 0.3, **unit, teacher_auroc_after=0.7)
    out = subprocess.run([sys.executable, str(SCRIPT), str(search), "--cells", str(results)],
                         capture_output=True, text=True, check=True).stdout
    rule = {line.split(" | ")[0].strip("| "): line for line in out.splitlines()
            if line.startswith("| pk-") or line.startswith("| alone-b")}
    assert rule["pk-b32"].endswith("| passes |")
    assert "fails (mnist -" in rule["alone-b32"] and "pooled -" in rule["alone-b32"]
    teacher = 100 * (0.7 - runs.read_json(results / "teacher-c0" / runs.METRICS)["auroc"])
    assert f"teacher {teacher:+.2f} in step 3" in rule["pk-split5"]


def test_the_safety_rule_for_a_joint_step_that_spares_the_teacher() -> None:
    """README "The teacher's step 3": pk-tlr may cost the student a little (-0.25 pooled, -0.5
    a dataset) where p-kdgan damages its teacher by more than a point; otherwise the ordinary rule."""
    spec = importlib.util.spec_from_file_location("distill_search_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    damaged, intact = [-3.0, -2.5], [-0.5, 0.2]
    level = {"cifar10": [-0.2, 0.1], "mnist": [-0.1, -0.2]}
    assert table.safety_verdict(level, [0.1, -0.4], damaged) == "passes (safety rule)"
    assert "teacher -2.00" in table.safety_verdict(level, [-2.0, -2.0], damaged)
    assert "mnist -0.60" in table.safety_verdict({"mnist": [-0.6, -0.6]}, [0.0], damaged)
    assert "pooled -0.30" in table.safety_verdict({"a": [-0.3], "b": [-0.3]}, [0.0], damaged)
    # p-kdgan's teacher within a point: pk-tlr must beat it like any variant
    assert table.safety_verdict(level, [0.0], intact).startswith("fails (cifar10 -0.05; mnist -0.15")
    assert table.safety_verdict({"a": [1.0]}, [0.0], intact).startswith("passes")


def test_a_unit_pairs_with_the_cells_store_of_its_own_teacher(tmp_path: Path) -> None:
    """A unit retrained on another machine has another teacher: its search arms pair with the
    cells of the teacher they started from, never with the first store that has the unit."""
    old, new, search = tmp_path / "old", tmp_path / "new", tmp_path / "search"
    cell(old, "teacher", 0, 0.5)
    cell(old, "p-kdgan", 0, 0.0)
    teacher = cell(new, "teacher", 0, 0.6)
    kd = cell(new, "p-kdgan", 0, 0.2)
    unit = {"dataset": "mnist", "normal_class": 0, "seed": 0}
    arm = finished(search / "t0-pk-b32", 0.3, **unit, teacher_auroc_before=teacher)
    out = subprocess.run([sys.executable, str(SCRIPT), str(search), "--cells", str(old),
                          "--cells", str(new)], capture_output=True, text=True, check=True).stdout
    assert f"| mnist | 0 | 0 | {100 * teacher:.2f} | {100 * kd:.2f} | {100 * arm:.2f} |" in out
    r = subprocess.run([sys.executable, str(SCRIPT), str(search), "--cells", str(old)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "no --cells store has the teacher" in r.stderr


def test_after_the_decision_the_tables_p_kdgan_is_pk_tlr_and_pk_before_is_p_kdgan(tmp_path: Path) -> None:
    """From seed 1 on, the table's p-kdgan cell is the decided recipe (the teacher at lr 2e-5 in
    step 3, the search's pk-tlr) and the search runs P-KDGAN as it was (pk-before): the table
    shows them under the seed-0 names, so the safety rule reads the same comparison."""
    results, search = tmp_path / "cells", tmp_path / "search"
    for cls in (0, 1):
        cell(results, "teacher", cls, 0.5)
        cell(results, "alone", cls, 0.1)
        new = cell(results, "p-kdgan", cls, 0.3)
        runs.write_json(results / f"p-kdgan-c{cls}" / runs.CONFIG, {"distill": {"teacher_lr": 2e-5}})
        old = finished(search / f"t{cls}-pk-before", 0.2, dataset="mnist", normal_class=cls, seed=0,
                       teacher_auroc_after=0.8)
    out = subprocess.run([sys.executable, str(SCRIPT), str(search), "--cells", str(results),
                          "--commit", str(tmp_path / "runs")],
                         capture_output=True, text=True, check=True).stdout
    header = next(line for line in out.splitlines() if line.startswith("| dataset | class |"))
    row = next(line for line in out.splitlines() if line.startswith("| mnist | 1 | 0 |"))
    shown = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    assert (shown["p-kdgan"], shown["pk-tlr"]) == (f"{100 * old:.2f}", f"{100 * new:.2f}")
    assert next(line for line in out.splitlines() if line.startswith("| pk-tlr | p-kdgan |"))
    assert (tmp_path / "runs" / "mnist" / "c1" / "s0-pk-before" / runs.METRICS).is_file()
    # two table cells that both read as pk-tlr are refused, not silently one of them
    d = results / "p-kdgan-again-c1"
    finished(d, 0.25)
    runs.write_json(d / runs.CONFIG, {"distill": {"teacher_lr": 2e-5}})
    runs.write_json(d / "cell.json", {"dataset": "mnist", "arm": "p-kdgan", "normal_class": 1, "seed": 0})
    r = subprocess.run([sys.executable, str(SCRIPT), str(search), "--cells", str(results)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "two pk-tlr cells" in r.stderr
