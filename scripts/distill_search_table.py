"""Issue 31's search table: every student arm of a (dataset, class, seed) beside its teacher.

Reads the main table's cells (``--cells``, e.g. docs/results/main-in64-last: teacher, alone, single-2,
P-KDGAN at the preset's recipe) and the search's extra arms (folders written by
``scripts/distill_search.sh``, named ``TEACHER-ARM``, or their committed copies). Checks that each
AUROC recomputes from its scores, copies search runs from outside ``docs/`` into ``--commit``
(small files and lean scores, no checkpoints), and prints Markdown: one row per unit with every
arm, the teacher's AUROC before and after the joint step of each P-KDGAN arm, and per dataset
each arm's paired difference against ``alone`` and against ``p-kdgan`` with its 95 % interval.
Test AUROCs describe a fixed schedule; nothing here selects an epoch.

    python scripts/distill_search_table.py --cells docs/results/main-in64-last /work/grids/search \\
        --commit docs/results/distill-search/runs

``--cells`` may be repeated (a unit retrained elsewhere commits its own cells); each unit's arms
are paired only with the cells of the teacher its search runs started from.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core import runs
from pkdgan.evaluation.metrics import evaluate_scores
from pkdgan.studies import cells
from pkdgan.studies.stats import paired

DOCS = (Path(__file__).resolve().parents[1] / "docs").resolve()
SCHEDULE_ARMS = ("alone-b128", "pk-b128", "alone-b32", "pk-b32", "pk-split5", "pk-split13", "pk-tlr")
# P-KDGAN before the schedule decision (the teacher at the student's lr in step 3), run beside the
# table's new p-kdgan cells from seed 1 on; in the table it plays p-kdgan, the new cell pk-tlr
BEFORE_ARM = "pk-before"
SEARCH_ARMS = ("alone", "single2", "pkdgan", "pk-rel", "pk-safe", "pk-samenz", "alone-avg",
               "pk-avg", "teacher-avg", *SCHEDULE_ARMS, BEFORE_ARM)  # distill_search.sh, teacher_average.sh
TABLE_ARM = {"single2": "single-2", "pkdgan": "p-kdgan", BEFORE_ARM: "p-kdgan"}  # its names in the main table
ORDER = ("alone", "single-2", "p-kdgan", "pk-rel", "pk-safe", "pk-samenz", "alone-avg", "pk-avg",
         "teacher-avg", *SCHEDULE_ARMS)
RECIPE = {"p-kdgan": "Kx 50, teacher joins step 3", "pk-rel": "+ K1, K2 relative (1 each)",
          "pk-safe": "+ no K gradient into the teacher", "pk-samenz": "+ student nz = teacher nz",
          "pk-avg": "p-kdgan keeping the mean of the student's last 5 epochs",
          "pk-b128": "p-kdgan at batch 128, 20 + 10 epochs", "pk-b32": "p-kdgan at batch 32, 5 + 3",
          "pk-split5": "p-kdgan 5 + 10", "pk-split13": "p-kdgan 13 + 2",
          "pk-tlr": "p-kdgan, the teacher's lr 2e-5 (x0.1) in step 3"}
Unit = tuple[str, int, int]  # dataset, class, seed
TLR = 2e-5  # pk-tlr's teacher lr in step 3 (distill_search.sh)


def checked(d: Path) -> dict[str, Any]:
    """metrics.json of a finished run whose AUROC recomputes from its own scores, with its
    averaging window (``window``: the config's ``average_last``, 0 = the last epoch kept) and
    its per-epoch test trace (``trace``) where it wrote one."""
    m = runs.read_json(d / runs.METRICS)
    z = runs.read_npz(d / runs.SCORES)
    got = evaluate_scores(z["scores"], z["labels"].astype("int64"))["auroc"]
    if abs(got - m["auroc"]) > 1e-6:
        raise SystemExit(f"{d}: metrics.json auroc {m['auroc']} but its scores give {got}")
    cfg = runs.read_json(d / runs.CONFIG)
    m = m | {"window": int(cfg.get("distill", cfg.get("train", {})).get("average_last", 0))}
    if (d / runs.TEST_TRACE).is_file():
        m = m | {"trace": runs.read_history(d / runs.TEST_TRACE)}
    return m


def search_arm(d: Path, arm: str) -> str:
    """A table cell's arm as the search names it: since 2026-12-08 the preset's P-KDGAN is the
    search's pk-tlr (the teacher at lr 2e-5 in step 3), and p-kdgan is the recipe before it."""
    if arm == "p-kdgan" and runs.read_json(d / runs.CONFIG)["distill"].get("teacher_lr") == TLR:
        return "pk-tlr"
    return arm


def table_cells(results: Path) -> dict[Unit, dict[str, dict[str, Any]]]:
    out: dict[Unit, dict[str, dict[str, Any]]] = {}
    for meta_path in sorted(results.rglob(cells.CELL_META)):
        d = meta_path.parent
        if runs.is_finished(d):
            meta = runs.read_json(meta_path)
            unit = (meta["dataset"], int(meta["normal_class"]), int(meta["seed"]))
            arm = search_arm(d, meta["arm"])
            if arm in out.get(unit, {}):
                raise SystemExit(f"{results}: two {arm} cells of {unit}")
            out.setdefault(unit, {})[arm] = checked(d)
    return out


def search_runs(paths: list[Path], commit: Path | None) -> dict[Unit, dict[str, dict[str, Any]]]:
    out: dict[Unit, dict[str, dict[str, Any]]] = {}
    for p in paths:
        for d in [p, *sorted(p.rglob("*"))]:
            arm = next((a for a in SEARCH_ARMS if d.name.endswith("-" + a) or d.name == a), None)
            if arm is None or not d.is_dir() or not runs.is_finished(d):
                continue
            m = checked(d)
            unit = (m["dataset"], int(m["normal_class"]), int(m["seed"]))
            out.setdefault(unit, {})[TABLE_ARM.get(arm, arm)] = m
            if commit is not None and not d.resolve().is_relative_to(DOCS):
                dst = commit / unit[0] / f"c{unit[1]}" / f"s{unit[2]}-{arm}"
                dst.mkdir(parents=True, exist_ok=True)
                for name in cells.CELL_FILES:
                    if (d / name).is_file():
                        shutil.copyfile(d / name, dst / name)
                cells.write_lean_scores(d / runs.SCORES, dst / runs.SCORES)
                shutil.copyfile(d / runs.METRICS, dst / runs.METRICS)
    return out


def same_teacher_cells(unit: Unit, search: dict[str, dict[str, Any]],
                       stores: list[dict[Unit, dict[str, dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """The table's cells of ``unit`` from the first store whose teacher is the one the unit's
    search runs started from (``teacher_auroc_before``, exact), so that an arm is only ever
    paired with cells of the same teacher checkpoint: a unit retrained on another machine has
    its own teacher and its own cells. Search runs of one unit from two teachers are an error."""
    before = {m["teacher_auroc_before"] for m in search.values()
              if m.get("teacher_auroc_before") is not None}
    if len(before) > 1:
        raise SystemExit(f"{unit}: its search runs started from {len(before)} different teachers")
    for store in stores:
        c = store.get(unit, {})
        if "teacher" in c and all(abs(c["teacher"]["auroc"] - b) < 1e-12 for b in before):
            return c
    if before:
        raise SystemExit(f"{unit}: no --cells store has the teacher its search runs started from "
                         f"(AUROC {before.pop():.6f})")
    return next((s[unit] for s in stores if unit in s), {})


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def averaging_table(units: list[Unit], cell: dict[Unit, dict[str, dict[str, Any]]],
                    arms: list[str]) -> None:
    """Runs that kept a tail average: the kept mean against the live last epoch of the same run
    (the trace's last row, identical to the run without averaging), paired per dataset."""
    rows = [(u, a, cell[u][a]) for u in units for a in ["teacher", *arms]
            if cell[u].get(a, {}).get("window") and "trace" in cell[u][a]]
    if not rows:
        return
    print("Tail averaging, within each run (`--average-last N`; the trajectory is the same as "
          "without it, so its last live epoch is the plain arm's model; latent-score AUROC %):\n")
    print("| dataset | class | seed | arm | last epoch (live) | N | mean of the last N (kept) "
          "| kept − last |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    cols: dict[tuple[str, str], dict[str, dict[tuple[int, int], float]]] = {}
    for u, a, m in rows:
        last, kept = 100 * float(m["trace"][-1]["auroc_latent"]), 100 * m["auroc_latent"]
        print(f"| {u[0]} | {u[1]} | {u[2]} | {a} | {last:.2f} | {m['window']} | {kept:.2f} "
              f"| {kept - last:+.2f} |")
        c = cols.setdefault((u[0], a), {"kept": {}, "last": {}})
        c["kept"][(u[1], u[2])], c["last"][(u[1], u[2])] = kept, last
    print("\n| dataset | arm | n | kept − last, mean | 95 % CI | higher / lower |")
    print("|---|---|---:|---:|---|---|")
    for (ds, a), c in sorted(cols.items()):
        d = paired(c, "kept", "last")
        print(f"| {ds} | {a} | {d.n} | {d.mean:+.2f} | {d.lo:+.2f} .. {d.hi:+.2f} | {d.wins} / {d.losses} |")
    print()


VARIANT_POOLED_MIN = 0.5  # points: README "How the recipe is chosen"
TEACHER_LOSS_MAX = 1.0  # points a variant's joint step may cost the teacher on average
BATCH_ARMS = ("pk-b128", "pk-b32")  # with alone-b128, alone-b32: one batch serves every student
SPLIT_ARMS = ("pk-split5", "pk-split13")
SAFETY_ARMS = ("pk-tlr",)  # a joint step meant to spare the teacher: the safety rule
NON_INFERIOR_POOLED = -0.25  # points: a safety arm may cost the student this much pooled
NON_INFERIOR_DATASET = -0.5  # ... and this much on any dataset


def rule_verdict(diffs: dict[str, list[float]], teacher_change: list[float] | None = None) -> str:
    """The search's variant rule on paired differences (points) per dataset: the mean is
    positive on every dataset with units and the pooled mean is at least +0.5; with
    ``teacher_change``, the teacher also loses at most 1 point in step 3 on average."""
    pooled = [d for ds in diffs.values() for d in ds]
    if not pooled:
        return "no units"
    fails = [f"{ds} {np.mean(d):+.2f}" for ds, d in sorted(diffs.items()) if np.mean(d) <= 0]
    if np.mean(pooled) < VARIANT_POOLED_MIN:
        fails.append(f"pooled {np.mean(pooled):+.2f} < +{VARIANT_POOLED_MIN}")
    if teacher_change and np.mean(teacher_change) < -TEACHER_LOSS_MAX:
        fails.append(f"teacher {np.mean(teacher_change):+.2f} in step 3")
    return "fails (" + "; ".join(fails) + ")" if fails else "passes"


def safety_verdict(diffs: dict[str, list[float]], teacher_change: list[float],
                   base_teacher_change: list[float]) -> str:
    """README "The teacher's step 3": an arm that spares the teacher replaces p-kdgan where
    p-kdgan's joint step costs its teacher more than 1 point on average, if the student stays
    within -0.25 pooled (-0.5 on every dataset) and the teacher within 1 point; where p-kdgan's
    teacher is not damaged, the ordinary variant rule applies."""
    if not base_teacher_change or np.mean(base_teacher_change) >= -TEACHER_LOSS_MAX:
        return rule_verdict(diffs, teacher_change) + " (p-kdgan's teacher is not damaged: variant rule)"
    pooled = [d for ds in diffs.values() for d in ds]
    fails = [f"{ds} {np.mean(d):+.2f}" for ds, d in sorted(diffs.items())
             if np.mean(d) < NON_INFERIOR_DATASET]
    if np.mean(pooled) < NON_INFERIOR_POOLED:
        fails.append(f"pooled {np.mean(pooled):+.2f} < {NON_INFERIOR_POOLED}")
    if not teacher_change or np.mean(teacher_change) < -TEACHER_LOSS_MAX:
        fails.append("teacher " + (f"{np.mean(teacher_change):+.2f}" if teacher_change else "unknown")
                     + " in step 3")
    return ("fails (" + "; ".join(fails) + ")" if fails else "passes") + " (safety rule)"


def teacher_changes(units: list[Unit], cell: dict[Unit, dict[str, dict[str, Any]]],
                    arm: str) -> list[float]:
    """The teacher's AUROC after step 3 minus before (points), over the units that have ``arm``."""
    return [100 * (cell[u][arm]["teacher_auroc_after"] - cell[u]["teacher"]["auroc"])
            for u in units if arm in cell[u] and "teacher" in cell[u]
            and cell[u][arm].get("teacher_auroc_after") is not None]


def schedule_rule(units: list[Unit], cell: dict[Unit, dict[str, dict[str, Any]]]) -> None:
    """README "The student schedule": each schedule arm against today's arm of the same unit
    (same teacher checkpoint and seed), the rule applied by code rather than by reading."""
    rows = [(a, "p-kdgan") for a in (*BATCH_ARMS, *SPLIT_ARMS, *SAFETY_ARMS)] + [
        ("alone-" + a[3:], "alone") for a in BATCH_ARMS]
    rows = [(a, b) for a, b in rows if any(a in cell[u] and b in cell[u] for u in units)]
    if not rows:
        return
    base = teacher_changes(units, cell, "p-kdgan")
    print("The student schedule's rule (README): each arm − today's arm of the same unit, "
          "points; per dataset mean (n), pooled mean, the teacher's change in step 3 (today's "
          "p-kdgan: " + (f"{np.mean(base):+.2f} over {len(base)} units" if base else "–") + "):\n")
    print("| arm | against | " + " | ".join(sorted({u[0] for u in units})) + " | pooled (n) "
          "| teacher in step 3 | rule |")
    print("|---|---|" + "---:|" * len({u[0] for u in units}) + "---:|---:|---|")
    for arm, base in rows:
        both = [u for u in units if arm in cell[u] and base in cell[u]]
        diffs: dict[str, list[float]] = {}
        for u in both:
            diffs.setdefault(u[0], []).append(100 * (cell[u][arm]["auroc"] - cell[u][base]["auroc"]))
        change = teacher_changes(both, cell, arm) if arm.startswith("pk-") else []
        per_ds = " | ".join(f"{np.mean(diffs[ds]):+.2f} ({len(diffs[ds])})" if ds in diffs else "–"
                            for ds in sorted({u[0] for u in units}))
        pooled = [d for ds in diffs.values() for d in ds]
        teacher = f"{np.mean(change):+.2f} ({len(change)})" if change else "–"
        verdict = (safety_verdict(diffs, change, teacher_changes(both, cell, base))
                   if arm in SAFETY_ARMS else rule_verdict(diffs, change if arm in SPLIT_ARMS else None))
        print(f"| {arm} | {base} | {per_ds} | {np.mean(pooled):+.2f} ({len(pooled)}) | {teacher} "
              f"| {verdict} |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="search run folders, or folders holding them")
    ap.add_argument("--cells", type=Path, required=True, action="append",
                    help="a results store with the table's cells (repeat: each unit takes the "
                         "store whose teacher its search runs distilled from)")
    ap.add_argument("--commit", type=Path, help="copy search runs from outside docs/ here")
    args = ap.parse_args()
    found = search_runs(args.runs, args.commit)
    stores = [table_cells(c) for c in args.cells]
    units = sorted(found)  # the search's units; the table's cells fill in their other arms
    cell = {u: same_teacher_cells(u, found[u], stores) | found[u] for u in units}
    arms = [a for a in ORDER if any(a in cell[u] for u in units)]
    print("| dataset | class | seed | teacher | " + " | ".join(arms) + " | teacher after step 3 ("
          + ", ".join(a for a in arms if a in RECIPE) + ") | P-KDGAN code agreement |")
    print("|---|---:|---:|---:|" + "---:|" * len(arms) + "---|---|")
    for u in units:
        c = cell[u]
        teacher = c.get("teacher", next(iter(c.values())))
        t0 = c["teacher"]["auroc"] if "teacher" in c else teacher.get("teacher_auroc_before")
        after = ", ".join(pct(c[a].get("teacher_auroc_after")) if a in c else "–"
                          for a in arms if a in RECIPE)
        agree = pct(c["p-kdgan"].get("latent_view_aurocs", {}).get("agreement")) if "p-kdgan" in c else "–"
        print(f"| {u[0]} | {u[1]} | {u[2]} | {pct(t0)} | "
              + " | ".join(pct(c[a]["auroc"]) if a in c else "–" for a in arms)
              + f" | {after} | {agree} |")
    print("\n" + "; ".join(f"**{a}**: {r}" for a, r in RECIPE.items() if a in arms) + ".\n")
    traced = [(u, a, cell[u][a]["trace"]) for u in units for a in arms if "trace" in cell[u].get(a, {})]
    if traced:
        print("Test AUROC after every epoch of the runs that traced it (`test_trace.csv`; a "
              "description of the fixed schedule, never a selection):\n")
        print("| dataset | class | seed | arm | student, epochs 1–15 | teacher in the joint epochs |")
        print("|---|---:|---:|---|---|---|")
        for u, a, rows in traced:
            student = " ".join(f"{100 * float(r['auroc_latent']):.1f}" for r in rows)
            teacher = " ".join(f"{100 * float(r['teacher_auroc_latent']):.1f}"
                               for r in rows if r.get("teacher_auroc_latent"))
            print(f"| {u[0]} | {u[1]} | {u[2]} | {a} | {student} | {teacher or '–'} |")
        print()
    averaging_table(units, cell, arms)
    schedule_rule(units, cell)
    print("| dataset | comparison | n | mean difference | 95 % CI | higher / lower |")
    print("|---|---|---:|---:|---|---|")
    for ds in sorted({u[0] for u in units}):
        cols = {a: {(u[1], u[2]): 100 * cell[u][a]["auroc"] for u in units if u[0] == ds and a in cell[u]}
                for a in arms}
        cols["teacher"] = {(u[1], u[2]): 100 * cell[u]["teacher"]["auroc"]
                           for u in units if u[0] == ds and "teacher" in cell[u]}
        pairs = [(a, "alone") for a in arms if a not in ("alone", "teacher-avg")] + [
            (a, "p-kdgan") for a in arms if a in RECIPE and a != "p-kdgan"] + [
            (a, "teacher") for a in arms if a in RECIPE] + [
            (a, "alone-" + a[3:]) for a in arms if a.startswith("pk-") and "alone-" + a[3:] in arms]
        for better, worse in pairs:
            c = paired(cols, better, worse)
            if c.n:
                print(f"| {ds} | {better} − {worse} | {c.n} | {c.mean:+.2f} | {c.lo:+.2f} .. {c.hi:+.2f} "
                      f"| {c.wins} / {c.losses} |")


if __name__ == "__main__":
    main()
