"""A study's statistics: paired comparisons of arms over (class, seed) cells, per-class and overall
means with seed spread, the paper's numbers, and which comparisons had too few steps to count."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core import runs
from pkdgan.core.config import steps_per_epoch
from pkdgan.studies.specs import (
    PAPER_STUDENT,
    PAPER_STUDENT_GAIN,
    PAPER_TEACHER,
    RunSpec,
)

Table = dict[str, dict[tuple[int, int], float]]  # column label -> (class, seed) -> AUROC in %
Locate = Callable[[RunSpec], Path]  # where a cell's run folder is

ALPHA = 0.05
PAPER_TOLERANCE = 1.0  # points: a paper mean within our 95% interval widened to this "matches"


@dataclass(frozen=True)
class Column:
    """One table column: runs of ``arm``, read through ``metric`` (and ``npz`` for ROC)."""

    label: str
    arm: str
    metric: str = "auroc"
    npz: str = "scores"


@dataclass(frozen=True)
class Comparison:
    better: str
    worse: str
    n: int
    mean: float
    lo: float
    hi: float
    wins: int
    losses: int
    p_sign: float
    undertrained: str = ""  # why the arms cannot be compared, e.g. an arm of a few steps

    @property
    def verdict(self) -> str:
        if self.undertrained:
            return "not comparable"
        if self.n >= 2 and self.p_sign < ALPHA:
            if self.mean > 0 and self.lo > 0:
                return "supported"
            if self.mean < 0 and self.hi < 0:
                return "contradicted"
        return "inconclusive"

    def line(self) -> str:
        if self.n == 0:
            return f"**{self.better} vs {self.worse}**: no paired runs yet -> inconclusive"
        why = f" ({self.undertrained})" if self.undertrained else ""
        return (f"**{self.better} vs {self.worse}**{why}: mean difference {self.mean:+.2f} points "
                f"(95% CI {self.lo:+.2f} .. {self.hi:+.2f}, n = {self.n} class x seed pairs); "
                f"{self.better} higher in {self.wins}, lower in {self.losses} "
                f"(sign test p = {self.p_sign:.3g}) -> **{self.verdict}**")


def paired(table: Table, better: str, worse: str) -> Comparison:
    """Paired comparison over the (class, seed) keys both columns have."""
    from scipy import stats

    keys = sorted(set(table.get(better, {})) & set(table.get(worse, {})))
    d = np.array([table[better][k] - table[worse][k] for k in keys])
    n = len(d)
    if n == 0:
        return Comparison(better, worse, 0, math.nan, math.nan, math.nan, 0, 0, 1.0)
    mean = float(d.mean())
    if n > 1 and d.std(ddof=1) > 0:
        half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    else:
        half = math.inf if n == 1 else 0.0
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    p = float(stats.binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0
    return Comparison(better, worse, n, mean, mean - half, mean + half, wins, losses, p)


def overall(comparisons: list[Comparison], checks: list[tuple[str, str]]) -> str:
    """The claim's verdict; a study without a paired claim (edegan) is judged on the paper's mean."""
    verdicts = [c.verdict for c in comparisons]
    if not verdicts:
        return "; ".join(v for _, v in checks) or "no paper number to compare with"
    if "not comparable" in verdicts:
        return "not comparable"
    if "contradicted" in verdicts:
        return "contradicted"
    return "supported" if all(v == "supported" for v in verdicts) else "inconclusive"


def class_stats(values: dict[tuple[int, int], float], k: int) -> tuple[float, float, int]:
    v = np.array([x for (c, _), x in values.items() if c == k])
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def mean_stats(values: dict[tuple[int, int], float], classes: list[int]) -> tuple[float, float, int]:
    """Mean over classes; spread = std over seeds of each seed's class mean (complete seeds)."""
    seeds = sorted({s for _, s in values})
    per_seed = [np.mean([values[(k, s)] for k in classes]) for s in seeds
                if all((k, s) in values for k in classes)]
    if not per_seed:
        return math.nan, math.nan, 0
    sd = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
    return float(np.mean(per_seed)), sd, len(per_seed)


def paper_checks(grid: dict[str, Any], table: Table, classes: list[int]) -> list[tuple[str, str]]:
    """(line, verdict) per paper mean we can compare with: ours against the paper's."""
    ds, study = grid["dataset"], grid["study"]
    pairs: list[tuple[str, str, float]] = []
    if study in ("edegan", "score") and ds in PAPER_TEACHER:
        pairs.append(("teacher" if study == "edegan" else "latent", "teacher", PAPER_TEACHER[ds]))
    if study in ("distillation", "main"):
        if ds in PAPER_TEACHER:
            pairs.append(("teacher", "teacher", PAPER_TEACHER[ds]))
        if ds in PAPER_STUDENT:
            pairs.append(("p-kdgan", "P-KDGAN student", PAPER_STUDENT[ds]))
    lines = []
    full = len(classes) == 10
    for col, what, paper in pairs:
        mean, sd, n = mean_stats(table.get(col, {}), classes)
        if n == 0:
            continue
        half = max(PAPER_TOLERANCE, 1.96 * sd / math.sqrt(n) if n > 1 else PAPER_TOLERANCE)
        gap = mean - paper
        if abs(gap) > half:
            verdict = f"{'below' if gap < 0 else 'above'} the paper by {abs(gap):.2f} points"
        elif n > 1:
            verdict = "matches the paper"
        else:  # one seed has no spread: say how close, not that it matches
            verdict = f"within {PAPER_TOLERANCE:g} point of the paper ({gap:+.2f}; one seed)"
        spread = f"± {sd:.2f} (n = {n} seeds)" if n > 1 else "(one seed, no spread over seeds)"
        scope = "" if full else f" (our mean over classes {classes} only; the paper's is over all 10)"
        lines.append((f"**{what} mean AUROC**: ours {mean:.2f} {spread}, paper "
                      f"{paper:.2f} -> **{verdict}**{scope}", verdict))
    if study in ("distillation", "main") and ds in PAPER_STUDENT_GAIN:
        c = paired(table, "p-kdgan", "alone")
        if c.n:
            paper = PAPER_STUDENT_GAIN[ds]
            verdict = ("paper's gain inside our 95% CI" if c.lo <= paper <= c.hi
                       else "paper's gain outside our 95% CI")
            lines.append((f"**student gain from P-KDGAN** (p-kdgan - alone): ours {c.mean:+.2f} "
                          f"(95% CI {c.lo:+.2f} .. {c.hi:+.2f}), paper {paper:+.2f} -> "
                          f"**{verdict}**", verdict))
    return lines


def paper_arm_means(dataset: str) -> dict[str, float]:
    """The paper's mean AUROC (%) per main-table arm it reports; the student trained alone is
    its P-KDGAN student minus the gain it reports for distillation."""
    out: dict[str, float] = {}
    if dataset in PAPER_TEACHER:
        out["teacher"] = PAPER_TEACHER[dataset]
    if dataset in PAPER_STUDENT:
        out["p-kdgan"] = PAPER_STUDENT[dataset]
        if dataset in PAPER_STUDENT_GAIN:
            out["alone"] = round(PAPER_STUDENT[dataset] - PAPER_STUDENT_GAIN[dataset], 2)
    return out


def paper_mean(grid: dict[str, Any]) -> tuple[str, float, str] | None:
    """(what, value, our column it compares with) for the mean row's paper cell."""
    ds, study = grid["dataset"], grid["study"]
    if study in ("distillation", "main") and ds in PAPER_STUDENT:
        return "P-KDGAN student", PAPER_STUDENT[ds], "p-kdgan"
    if study in ("edegan", "score", "batch-size", "latent-constraint") and ds in PAPER_TEACHER:
        col = {"edegan": "teacher", "score": "latent", "batch-size": "bs=1"}.get(study, "")
        return "teacher", PAPER_TEACHER[ds], col
    return None


MIN_COMPARABLE_STEPS = 100


def arm_steps(specs: list[RunSpec], locate: Locate) -> dict[str, int]:
    """Fewest optimiser steps a finished EDE-GAN run of each arm took."""

    out: dict[str, int] = {}
    for s in specs:
        path = locate(s) / runs.METRICS
        if s.kind == "edegan" and path.is_file():
            m, t = runs.read_json(path), s.config["train"]
            n = steps_per_epoch(int(m["n_train"]), int(t["batch_size"]), bool(t.get("drop_last")))
            out[s.arm] = min(out.get(s.arm, n * int(m["epochs"])), n * int(m["epochs"]))
    return out


def undertrained(c: Comparison, steps: dict[str, int]) -> Comparison:
    """A comparison with an arm of fewer than ``MIN_COMPARABLE_STEPS`` steps measures the step
    count, not the arms (the quick batch-size grid gave batch 64 nine steps)."""
    few = [f"{a} took {steps[a]} optimiser steps" for a in (c.better, c.worse)
           if a in steps and steps[a] < MIN_COMPARABLE_STEPS]
    return dataclasses.replace(c, undertrained="; ".join(few)) if few else c
