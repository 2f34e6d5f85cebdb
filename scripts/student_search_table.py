"""Table of distilled-student runs by shape (width, nz) and K weights, raw scores committed.

The student search (docs/results/student-search/README.md) trains students of other shapes
from the main table's teachers with ``pkdgan distill --width W --nz N`` (see
``scripts/student_search.sh``). This script reads finished distillation run folders, checks
that each AUROC recomputes from its scores, copies the small files (config, metrics, history,
calibration, lean scores; no checkpoints) of folders outside ``docs/`` into ``--commit``, and
prints one Markdown row per run plus the mean per (dataset, arm, shape, K weights w1/wx/w2)
over the classes given. The K-weight search (``scripts/k_search.sh``) uses it as well.

    python scripts/student_search_table.py /work/grids/fm_students/* \\
        docs/results/student-search/registered-* docs/results/main-cpu-b64/distill/mnist/c[237] \\
        --commit docs/results/student-search/runs
"""

from __future__ import annotations

import argparse
import shutil
from collections import defaultdict
from pathlib import Path

from pkdgan.core import runs
from pkdgan.core.presets import LEGACY_DISTILL_WEIGHTS
from pkdgan.evaluation.metrics import evaluate_scores
from pkdgan.studies import cells

DOCS = (Path(__file__).resolve().parents[1] / "docs").resolve()  # committed already
ARM = {("alone", None): "alone", ("single", 2): "single-2", ("progressive", None): "p-kdgan"}


def arm_of(distill: dict) -> str:
    mode = distill["mode"]
    return ARM.get((mode, distill["structure"] if mode == "single" else None), mode)


def k_weights(distill: dict) -> str:
    """``w1/wx/w2`` of a run's distillation loss; ``-`` for the student alone (no K)."""
    if distill["mode"] == "alone":
        return "-"
    return "/".join(f"{distill[k]:g}" for k in ("w1", "wx", "w2"))


# the K every run had before presets named it: such folders keep their old names
LEGACY_K = k_weights({"mode": "single", **LEGACY_DISTILL_WEIGHTS})


def run_folders(paths: list[Path]) -> list[Path]:
    """Finished distillation run folders at or one/two levels under the given paths."""
    found = []
    for p in paths:
        for d in [p, *sorted(p.glob("*")), *sorted(p.glob("*/*"))]:
            if d.is_dir() and runs.is_finished(d) and (d / runs.CONFIG).is_file():
                if runs.read_json(d / runs.CONFIG).get("kind") == "distill":
                    found.append(d)
    return list(dict.fromkeys(found))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders, or folders holding them")
    ap.add_argument("--commit", type=Path, help="copy folders outside docs/ here (small files)")
    args = ap.parse_args()
    rows = []
    for d in run_folders(args.runs):
        c, m = runs.read_json(d / runs.CONFIG), runs.read_json(d / runs.METRICS)
        z = runs.read_npz(d / runs.SCORES)
        recomputed = evaluate_scores(z["scores"], z["labels"].astype("int64"))["auroc"]
        if abs(recomputed - m["auroc"]) > 1e-6:
            raise SystemExit(f"{d}: metrics.json auroc {m['auroc']} but the scores give {recomputed}")
        data, model = c["data"], c["model"]
        row = {"dataset": data["dataset"], "class": data["normal_class"], "arm": arm_of(c["distill"]),
               "width": model["width"], "nz": model["nz"], "ratio": m["flops_ratio"],
               "k": k_weights(c["distill"]), "teacher": m["teacher_auroc_before"],
               "auroc": m["auroc"], "dir": d}
        rows.append(row)
        if args.commit and not d.resolve().is_relative_to(DOCS):
            k = "" if row["k"] in ("-", LEGACY_K) else "-k" + row["k"].replace("/", "-")
            out = args.commit / data["dataset"] / f"c{data['normal_class']}" / (
                f"{row['arm']}-w{model['width']}-nz{model['nz']}{k}-s{c['distill']['seed']}")
            out.mkdir(parents=True, exist_ok=True)
            for name in cells.CELL_FILES:
                if (d / name).is_file():
                    shutil.copyfile(d / name, out / name)
            cells.write_lean_scores(d / runs.SCORES, out / runs.SCORES)
    rows.sort(key=lambda r: (r["dataset"], r["class"], r["arm"], r["width"], r["nz"], r["k"]))
    print("| dataset | class | arm | width | nz | K w1/wx/w2 | FLOPs ratio | teacher | student AUROC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['class']} | {r['arm']} | {r['width']} | {r['nz']} | {r['k']} | "
              f"{r['ratio']:.1f} : 1 | {100 * r['teacher']:.2f} | {100 * r['auroc']:.2f} |")
    groups: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["arm"], r["width"], r["nz"], r["k"])].append((r["class"], r["auroc"]))
    print("\n| dataset | arm | width | nz | K w1/wx/w2 | classes | mean AUROC |")
    print("|---|---|---|---|---|---|---|")
    for (ds, arm, w, nz, kw), v in sorted(groups.items()):
        ks = ", ".join(str(k) for k, _ in sorted(v))
        print(f"| {ds} | {arm} | {w} | {nz} | {kw} | {ks} | {100 * sum(a for _, a in v) / len(v):.2f} |")


if __name__ == "__main__":
    main()
