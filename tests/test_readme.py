"""The README is for users: short, its links resolve, and its headline numbers are the committed
main table's (``docs/results/main/cells.csv``), not typed by hand."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ARMS = ("teacher", "alone", "single-2", "p-kdgan")  # the headline table's column order


def headline_rows() -> list[list[str]]:
    text = README.read_text()
    block = text.split("<!-- headline:start -->")[1].split("<!-- headline:end -->")[0]
    lines = [ln for ln in block.strip().splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def complete_seed_means() -> dict[str, tuple[int, dict[str, float]]]:
    """dataset -> (number of seeds complete in every arm, mean AUROC % per arm over them)."""
    cells: dict = defaultdict(lambda: defaultdict(dict))
    with (REPO / "docs" / "results" / "main" / "cells.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            cells[r["dataset"]][r["arm"]][(int(r["normal_class"]), int(r["seed"]))] = float(r["auroc"])
    out = {}
    for ds, arms in cells.items():
        seeds = sorted({s for a in ARMS for _, s in arms[a]})
        full = [s for s in seeds if all(sum(1 for _, t in arms[a] if t == s) == 10 for a in ARMS)]
        out[ds] = (len(full), {a: 100 * float(np.mean([v for (_, s), v in arms[a].items() if s in full]))
                               for a in ARMS})
    return out


def test_readme_headline_numbers_are_the_committed_tables() -> None:
    rows = headline_rows()
    expected = complete_seed_means()
    assert [r[0] for r in rows] == sorted(expected, key=["mnist", "fmnist", "cifar10"].index)
    for row in rows:
        n_seeds, means = expected[row[0]]
        assert int(row[1]) == n_seeds, row
        assert [float(v) for v in row[2:6]] == [round(means[a], 2) for a in ARMS], row


def test_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links
    missing = [ln for ln in links if not ln.startswith("http") and not (REPO / ln).exists()]
    assert not missing, missing
