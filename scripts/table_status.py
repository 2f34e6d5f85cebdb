"""Where a main-table results store stands: per dataset, arm means against the targets, the
paired arm comparisons the issue asks about, each arm against a baseline store, and the cost.

Every number is computed here from the store's ``cells.csv``, each AUROC re-checked against its
committed ``scores.npz`` (``compare_presets.read_arm``), and each cell's training minutes read
from its ``metrics.json`` (``train_seconds``, as ``pkdgan report`` does). Nothing is typed in by
hand, so the status page can be regenerated as cells land:

    python scripts/table_status.py docs/results/main --baseline docs/results/main-cpu-b64 \\
        --baseline-label "cpu-b64 (Kx 1)" > docs/results/main/status.md
"""

from __future__ import annotations

import argparse
import csv
import datetime
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_presets import read_arm  # noqa: E402

from pkdgan.core import runs  # noqa: E402
from pkdgan.studies.cells import INDEX  # noqa: E402
from pkdgan.studies.specs import PAPER_STUDENT, PAPER_STUDENT_GAIN  # noqa: E402
from pkdgan.studies.stats import Comparison, paired  # noqa: E402

DATASETS = ("mnist", "fmnist", "cifar10")
ARMS = ("teacher", "alone", "single-2", "p-kdgan")
# Issue 10's teacher targets (AUROC %); Fashion-MNIST's is the paper's student mean.
TEACHER_TARGET = {"mnist": 97.8, "fmnist": 92.9, "cifar10": 73.8}
# The (class, seed) units the tail-averaging rule was decided on (docs/results/distill-search/).
RULE_UNITS = {(0, 0), (1, 0), (2, 0)}
# (better, worse, what the issue asks of the difference)
PAIRS = (
    ("p-kdgan", "alone", "≥ paper's gain"),
    ("single-2", "alone", "> 0"),
    ("p-kdgan", "single-2", "> 0"),
    ("p-kdgan", "teacher", "≥ −1"),
    ("alone", "teacher", ""),
)


def seed_means(table: dict[tuple[int, int], float]) -> dict[int, tuple[float, int]]:
    """seed -> (mean over the classes that seed has, how many classes)."""
    out = {}
    for seed in sorted({s for _, s in table}):
        values = [v for (_, s), v in table.items() if s == seed]
        out[seed] = (statistics.fmean(values), len(values))
    return out


def complete_mean(table: dict[tuple[int, int], float], classes: set[int]) -> str:
    """Mean over the seeds that have every class, of each such seed's class mean.

    A seed still filling up would otherwise pull the mean towards the classes it has (an easy
    digit 1 weighs more than a hard digit 8), so it is listed per seed but not averaged in.
    """
    full = [m for s, (m, _) in seed_means(table).items()
            if {k for k, t in table if t == s} >= classes]
    return f"{statistics.fmean(full):.2f}" if full else "–"


def seed_spread(table: dict[tuple[int, int], float]) -> list[tuple[int, int, float, float]]:
    """(seed, pairs, mean, sd) of seed s − seed 0 over the classes both have: run-to-run noise."""
    out = []
    for seed in sorted({s for _, s in table} - {0}):
        diffs = [v - table[(k, 0)] for (k, s), v in table.items() if s == seed and (k, 0) in table]
        if len(diffs) >= 2:
            out.append((seed, len(diffs), statistics.fmean(diffs), statistics.stdev(diffs)))
    return out


def indexed_cells(store: Path, dataset: str, arm: str) -> list[tuple[tuple[int, int], Path]]:
    """((class, seed), cell folder) of each scored cell of one arm in the store's index."""
    with open(store / INDEX, newline="") as f:
        return [((int(row["normal_class"]), int(row["seed"])), (store / row["scores"]).parent)
                for row in csv.DictReader(f)
                if row["dataset"] == dataset and row["arm"] == arm and row["auroc"]]


def minutes(store: Path, dataset: str, arm: str) -> list[float]:
    """Training minutes of each indexed cell of one arm: its own ``train_seconds``, as in the report."""
    return [float(runs.read_json(cell / runs.METRICS).get("train_seconds", 0.0)) / 60
            for _, cell in indexed_cells(store, dataset, arm)]


def last_epoch(store: Path, dataset: str, arm: str) -> dict[tuple[int, int], float]:
    """(class, seed) -> latent AUROC % of the last epoch's own weights, read from the last row of
    the cell's test trace, for the cells that keep a tail average (elsewhere the two are one
    model). Averaging only observes training, so this is the model the average replaced."""
    out = {}
    for key, cell in indexed_cells(store, dataset, arm):
        if not (cell / runs.TEST_TRACE).exists() or not (cell / runs.CONFIG).exists():
            continue
        config = runs.read_json(cell / runs.CONFIG)
        settings = config.get("distill") or config.get("train") or {}
        if not settings.get("average_last") or settings.get("score", "latent") != "latent":
            continue
        with open(cell / runs.TEST_TRACE, newline="") as f:
            trace = list(csv.DictReader(f))
        if trace:
            out[key] = 100 * float(trace[-1]["auroc_latent"])
    return out


def described(c: Comparison) -> str:
    """A paired difference as one table cell: mean (n; 95 % CI; higher/lower)."""
    if c.n == 0:
        return "–"
    if c.n == 1:
        return f"{c.mean:+.2f} (1)"
    return f"{c.mean:+.2f} ({c.n}; {c.lo:+.2f} .. {c.hi:+.2f}; {c.wins}/{c.losses})"


def averaging_section(store: Path, dataset: str, arms: dict[str, dict[tuple[int, int], float]]) -> list[str]:
    """Kept mean − last epoch per arm: the averaging rule, decided on classes 0–2 of seed 0, read
    on the cells it was not decided on (a description of the fixed schedule, never a selection)."""
    rows = []
    for arm in ARMS:
        last = last_epoch(store, dataset, arm)
        if not last:
            continue
        kept = {k: v for k, v in arms[arm].items() if k in last}
        groups = ({k: v for k, v in kept.items() if k in RULE_UNITS},
                  {k: v for k, v in kept.items() if k not in RULE_UNITS}, kept)
        cells = [described(paired({"a": group, "b": last}, "a", "b")) for group in groups]
        rows.append(f"| {arm} | {' | '.join(cells)} |")
    if not rows:
        return []
    return [
        "",
        "Tail averaging: kept mean of the last epochs − the last epoch's own weights (its test "
        "trace's last row), points (cells; 95 % CI; higher/lower). The rule to keep the mean was "
        "decided on classes 0–2 of seed 0 (the search's own runs, docs/results/distill-search/); "
        "the other cells read it out of sample:",
        "",
        "| arm | classes 0–2, seed 0 (the rule's) | other cells | all |",
        "|---|---|---|---|",
        *rows,
    ]


def dataset_section(store: Path, dataset: str, baseline: Path | None, baseline_label: str,
                    n_classes: int = 10) -> list[str]:
    arms = {arm: read_arm(store, dataset, arm) for arm in ARMS}
    if not any(arms.values()):
        return [f"## {dataset}\n", "No cells yet.\n"]
    base = {arm: read_arm(baseline, dataset, arm) for arm in ARMS} if baseline else {}
    lines = [f"## {dataset}\n"]
    classes = set(range(n_classes))  # a seed is complete with every class of the dataset
    head = "| arm | cells | mean AUROC (%), complete seeds | target | per seed: mean (classes) |"
    sep = "|---|---:|---:|---|---|"
    if baseline:
        head += f" {baseline_label}: mean (cells) | this − {baseline_label}, paired (95 % CI; higher/lower) |"
        sep += "---:|---|"
    lines += [head, sep]
    targets = {"teacher": f"≥ {TEACHER_TARGET[dataset]}", "p-kdgan": f"paper {PAPER_STUDENT[dataset]}"}
    for arm in ARMS:
        per_seed = ", ".join(f"s{t} {m:.2f} ({n})" for t, (m, n) in seed_means(arms[arm]).items())
        row = (f"| {arm} | {len(arms[arm])} | {complete_mean(arms[arm], classes)} | "
               f"{targets.get(arm, '')} | {per_seed or '–'} |")
        if baseline:
            c = paired({"a": arms[arm], "b": base[arm]}, "a", "b")
            diff = f"{c.mean:+.2f} ({c.lo:+.2f} .. {c.hi:+.2f}; {c.wins}/{c.losses})" if c.n >= 2 else "–"
            row += f" {complete_mean(base[arm], classes)} ({len(base[arm])}) | {diff} |"
        lines.append(row)
    lines += [
        "",
        "| difference | pairs | mean (points) | 95 % CI | higher / lower | sign test p | asked |",
        "|---|---:|---:|---|---|---:|---|",
    ]
    for better, worse, asked in PAIRS:
        c = paired({"a": arms[better], "b": arms[worse]}, "a", "b")
        if c.n < 2:
            continue
        if asked == "≥ paper's gain":
            asked = f"≥ +{PAPER_STUDENT_GAIN[dataset]}"
        lines.append(
            f"| {better} − {worse} | {c.n} | {c.mean:+.2f} | {c.lo:+.2f} .. {c.hi:+.2f} | "
            f"{c.wins} / {c.losses} | {c.p_sign:.3g} | {asked} |"
        )
    lines += averaging_section(store, dataset, arms)
    spread = [(arm, *x) for arm in ARMS for x in seed_spread(arms[arm])]
    if spread:
        lines += [
            "",
            "Seed to seed (the same configuration retrained with another seed, paired by class):",
            "",
            "| arm | seed s − seed 0 | classes | mean (points) | sd (points) |",
            "|---|---|---:|---:|---:|",
            *[f"| {arm} | s{t} − s0 | {n} | {m:+.2f} | {sd:.2f} |" for arm, t, n, m, sd in spread],
        ]
    lines += [
        "",
        "Training minutes per cell (mean; min–max) from each cell's `train_seconds`: "
        + "; ".join(
            f"{arm} {statistics.fmean(m):.1f} ({min(m):.1f}–{max(m):.1f}), {len(m)} cells"
            for arm in ARMS
            if (m := minutes(store, dataset, arm))
        )
        + ".",
        "",
    ]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path, help="results store (holds cells.csv)")
    p.add_argument("--baseline", type=Path, help="another store to pair each arm with (same class, seed)")
    p.add_argument("--baseline-label", default="baseline")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--classes", type=int, default=10,
                   help="classes of a complete seed (0..N-1): a seed missing one is listed, not averaged")
    a = p.parse_args()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python scripts/table_status.py " + shlex.join(sys.argv[1:])
    out = [
        f"# Status of `{a.store}` ({now})\n",
        f"Generated by `{cmd}`; every AUROC re-checked against its `scores.npz`. Pairs are "
        "(class, seed) cells both arms have; the interval is a t-interval over those pairs.\n",
    ]
    for dataset in a.datasets.split(","):
        out += dataset_section(a.store, dataset, a.baseline, a.baseline_label, a.classes)
    print("\n".join(out))


if __name__ == "__main__":
    main()
