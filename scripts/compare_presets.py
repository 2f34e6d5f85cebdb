"""One arm of the main table under two presets, class by class, from two results stores.

Reads each store's ``cells.csv`` (written by ``pkdgan.studies.cells``), re-checks every AUROC it
uses against the cell's committed ``scores.npz``, and prints a markdown table: the new store's
AUROC per class and seed, the old store's, and the paired difference on the (class, seed) cells
both have (mean, 95 % CI, wins; ``studies.stats.paired``). Test labels only describe the two
presets here; nothing chooses a run from them.

    python scripts/compare_presets.py docs/results/main docs/results/main-cpu-b64 \\
        --dataset mnist --arm teacher --new-label "batch 256" --old-label "batch 64"
    python scripts/compare_presets.py docs/results/k-search/table-kx1 docs/results/main \
        --dataset mnist --arm p-kdgan --old-arm alone     # two arms, two stores
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from pkdgan.studies.cells import INDEX, recompute_auroc
from pkdgan.studies.stats import Table, paired


def read_arm(results: Path, dataset: str, arm: str) -> dict[tuple[int, int], float]:
    """(class, seed) -> AUROC in %, each recomputed from its scores and checked against the index."""
    out = {}
    with open(results / INDEX, newline="") as f:
        for row in csv.DictReader(f):
            if row["dataset"] != dataset or row["arm"] != arm or not row["auroc"]:
                continue
            auroc = recompute_auroc(results, row["scores"])
            if not math.isclose(auroc, float(row["auroc"]), abs_tol=1e-9):
                raise SystemExit(f"{results / row['scores']}: AUROC {auroc} != cells.csv {row['auroc']}")
            out[(int(row["normal_class"]), int(row["seed"]))] = 100 * auroc
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("new", type=Path, help="results store of the new preset")
    p.add_argument("old", type=Path, help="results store of the old preset")
    p.add_argument("--dataset", required=True)
    p.add_argument("--arm", default="teacher")
    p.add_argument("--old-arm", help="the old store's arm, when it is another (default: --arm)")
    p.add_argument("--new-label", default="new")
    p.add_argument("--old-label", default="old")
    a = p.parse_args()
    old_arm = a.old_arm or a.arm
    new, old = read_arm(a.new, a.dataset, a.arm), read_arm(a.old, a.dataset, old_arm)
    seeds_new = sorted({s for _, s in new})
    seeds_old = sorted({s for _, s in old})
    classes = sorted({k for k, _ in new} | {k for k, _ in old})
    cols = [f"{a.new_label} s{s}" for s in seeds_new] + [f"{a.old_label} s{s}" for s in seeds_old]
    arms = a.arm if old_arm == a.arm else f"{a.arm} vs {old_arm}"
    print(f"### {a.dataset}, {arms}: AUROC (%) per class\n")
    print("| class | " + " | ".join(cols) + " | new − old (same seed) |")
    print("|---|" + "---:|" * (len(cols) + 1))

    def cell(table: dict[tuple[int, int], float], key: tuple[int, int]) -> str:
        return f"{table[key]:.2f}" if key in table else ""

    for k in classes:
        diffs = [new[(k, s)] - old[(k, s)] for s in seeds_new if (k, s) in old and (k, s) in new]
        d = " / ".join(f"{x:+.2f}" for x in diffs)
        print(f"| {k} | " + " | ".join([cell(new, (k, s)) for s in seeds_new]
                                       + [cell(old, (k, s)) for s in seeds_old]) + f" | {d} |")
    both = sorted({k for k, _ in new})
    means = []
    for table, seeds in ((new, seeds_new), (old, seeds_old)):
        for s in seeds:
            vals = [table[(k, s)] for k in both if (k, s) in table]
            means.append(f"{sum(vals) / len(vals):.2f} ({len(vals)})" if vals else "")
    print("| mean over the new store's classes (n) | " + " | ".join(means) + " | |\n")
    table: Table = {"new": new, "old": old}
    c = paired(table, "new", "old")
    print(f"Paired over {c.n} (class, seed) cells: {a.new_label} − {a.old_label} = {c.mean:+.2f} points "
          f"(95 % CI {c.lo:+.2f} .. {c.hi:+.2f}); higher in {c.wins}, lower in {c.losses} "
          f"(sign test p = {c.p_sign:.3g}).")


if __name__ == "__main__":
    main()
