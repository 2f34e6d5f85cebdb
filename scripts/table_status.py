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
from pkdgan.studies.stats import paired  # noqa: E402

DATASETS = ("mnist", "fmnist", "cifar10")
ARMS = ("teacher", "alone", "single-2", "p-kdgan")
# Issue 10's teacher targets (AUROC %); Fashion-MNIST's is the paper's student mean.
TEACHER_TARGET = {"mnist": 97.8, "fmnist": 92.9, "cifar10": 73.8}
# (better, worse, what the issue asks of the difference)
PAIRS = (
    ("p-kdgan", "alone", "≥ paper's gain"),
    ("single-2", "alone", "> 0"),
    ("p-kdgan", "single-2", "> 0"),
    ("p-kdgan", "teacher", "≥ −1"),
    ("alone", "teacher", ""),
)


def mean(table: dict[tuple[int, int], float]) -> str:
    return f"{statistics.fmean(table.values()):.2f}" if table else "–"


def minutes(store: Path, dataset: str, arm: str) -> list[float]:
    """Training minutes of each indexed cell of one arm: its own ``train_seconds``, as in the report."""
    out = []
    with open(store / INDEX, newline="") as f:
        for row in csv.DictReader(f):
            if row["dataset"] == dataset and row["arm"] == arm and row["auroc"]:
                metrics = runs.read_json((store / row["scores"]).parent / runs.METRICS)
                out.append(float(metrics.get("train_seconds", 0.0)) / 60)
    return out


def dataset_section(store: Path, dataset: str, baseline: Path | None, baseline_label: str) -> list[str]:
    arms = {arm: read_arm(store, dataset, arm) for arm in ARMS}
    if not any(arms.values()):
        return [f"## {dataset}\n", "No cells yet.\n"]
    base = {arm: read_arm(baseline, dataset, arm) for arm in ARMS} if baseline else {}
    lines = [f"## {dataset}\n"]
    head = "| arm | cells | mean AUROC (%) | target |"
    sep = "|---|---:|---:|---|"
    if baseline:
        head += f" {baseline_label}: mean (cells) | this − {baseline_label}, paired (95 % CI; higher/lower) |"
        sep += "---:|---|"
    lines += [head, sep]
    targets = {"teacher": f"≥ {TEACHER_TARGET[dataset]}", "p-kdgan": f"paper {PAPER_STUDENT[dataset]}"}
    for arm in ARMS:
        row = f"| {arm} | {len(arms[arm])} | {mean(arms[arm])} | {targets.get(arm, '')} |"
        if baseline:
            c = paired({"a": arms[arm], "b": base[arm]}, "a", "b")
            diff = f"{c.mean:+.2f} ({c.lo:+.2f} .. {c.hi:+.2f}; {c.wins}/{c.losses})" if c.n >= 2 else "–"
            row += f" {mean(base[arm])} ({len(base[arm])}) | {diff} |"
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
    a = p.parse_args()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python scripts/table_status.py " + shlex.join(sys.argv[1:])
    out = [
        f"# Status of `{a.store}` ({now})\n",
        f"Generated by `{cmd}`; every AUROC re-checked against its `scores.npz`. Pairs are "
        "(class, seed) cells both arms have; the interval is a t-interval over those pairs.\n",
    ]
    for dataset in a.datasets.split(","):
        out += dataset_section(a.store, dataset, a.baseline, a.baseline_label)
    print("\n".join(out))


if __name__ == "__main__":
    main()
