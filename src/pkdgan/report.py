"""Aggregate a grid's finished run folders into Markdown, CSV and plots, with computed verdicts.

Numbers come only from the run folders (``metrics.json``, ``scores.npz``); ``grid.json`` says
which run belongs to which arm. AUROC is shown in percent, like the paper. A claim "A beats B"
is judged on the paired differences A - B over every (class, seed) where both finished:

* **supported**: mean difference > 0, its 95% t-interval excludes 0 *and* the two-sided sign
  test gives p < 0.05;
* **contradicted**: the same with the difference < 0;
* **inconclusive**: anything else (too few pairs, or differences that change sign).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan import cells, runs
from pkdgan.studies import (
    PAPER_STUDENT,
    PAPER_STUDENT_GAIN,
    PAPER_TEACHER,
    STUDIES,
    Preset,
    RunSpec,
)

ALPHA = 0.05
PAPER_TOLERANCE = 1.0  # points: a paper mean within our 95% interval widened to this "matches"


@dataclass(frozen=True)
class Column:
    """One table column: runs of ``arm``, read through ``metric`` (and ``npz`` for ROC)."""

    label: str
    arm: str
    metric: str = "auroc"
    npz: str = "scores"


def columns_for(grid: dict[str, Any], specs: list[RunSpec]) -> list[Column]:
    if grid["study"] == "score":
        return [Column("latent", "teacher", "auroc_latent", "latent"),
                Column("reconstruction", "teacher", "auroc_reconstruction", "reconstruction")]
    arms = list(dict.fromkeys(s.arm for s in specs))
    return [Column(a, a) for a in arms]


def best_single_step(table: Table, classes: list[int]) -> str | None:
    """The single-step arm with the highest mean AUROC: the paper's "best single-step" comparator
    (a ranking of reported results, not a model choice: nothing is trained differently)."""
    singles = [lab for lab in table if lab.startswith("single-") and table[lab]]
    if not singles:
        return None
    return max(singles, key=lambda lab: np.mean(list(table[lab].values())))


def claims_for(grid: dict[str, Any], cols: list[Column], table: Table,
               classes: list[int]) -> list[tuple[str, str]]:
    """(better, worse) column pairs the paper claims, for this study."""
    study = grid["study"]
    labels = [c.label for c in cols]
    if study == "score":
        return [("latent", "reconstruction")]
    if study == "latent-constraint":
        return [(labels[1], labels[0])]
    if study == "batch-size":
        return [("bs=1", lab) for lab in labels if lab != "bs=1"] if "bs=1" in labels else []
    if study in ("distillation", "main"):
        best = best_single_step(table, classes)
        return [("p-kdgan", best), (best, "alone")] if best else []
    return []


Table = dict[str, dict[tuple[int, int], float]]


def finished_path(spec: RunSpec, store: Path, results: Path | None = None) -> Path:
    """Where a finished run's files are: the run store, else the committed results store."""
    path = store / spec.name
    if results is not None and not runs.is_finished(path) and cells.is_committed(results, spec):
        return cells.cell_dir(results, spec)
    return path


Locate = Callable[[RunSpec], Path]


def collect(specs: list[RunSpec], locate: Locate, cols: list[Column]
            ) -> tuple[Table, list[str], list[str]]:
    """Column label -> {(class, seed): AUROC %}; also unfinished run names and split notes."""
    table: Table = {c.label: {} for c in cols}
    missing: list[str] = []
    notes: set[str] = set()
    for spec in specs:
        path = locate(spec)
        if not runs.is_finished(path):
            missing.append(spec.name)
            continue
        m = runs.read_json(path / runs.METRICS)
        if m.get("note"):
            notes.add(m["note"])
        for c in cols:
            if c.arm == spec.arm and m.get(c.metric) is not None:
                table[c.label][(spec.normal_class, spec.seed)] = 100.0 * float(m[c.metric])
    return table, sorted(set(missing)), sorted(notes)


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
        verdict = "matches the paper" if abs(gap) <= half else (
            f"{'below' if gap < 0 else 'above'} the paper by {abs(gap):.2f} points")
        scope = "" if full else f" (our mean over classes {classes} only; the paper's is over all 10)"
        lines.append((f"**{what} mean AUROC**: ours {mean:.2f} ± {sd:.2f} (n = {n} seeds), paper "
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


def _cell(m: float, sd: float, n: int) -> str:
    return "–" if n == 0 else f"{m:.2f} ± {sd:.2f} ({n})"


def render_tables(grid: dict[str, Any], table: Table, cols: list[Column], classes: list[int],
                  class_names: list[str]) -> tuple[str, str]:
    """(Markdown table, CSV text) of per-class and mean AUROC."""
    labels = [c.label for c in cols]
    paper = _paper_mean(grid)
    md = ["| class | " + " | ".join(labels) + " | paper |",
          "|---|" + "---|" * (len(labels) + 1)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["study", "dataset", "class", "class_name", "column", "n_seeds", "auroc_mean",
                "auroc_std", "paper_auroc"])
    for k in classes:
        cells = [class_stats(table[lab], k) for lab in labels]
        name = "" if class_names[k] == str(k) else f" {class_names[k]}"
        md.append(f"| {k}{name} | " + " | ".join(_cell(*c) for c in cells) + " | – |")
        for lab, (m, sd, n) in zip(labels, cells, strict=True):
            w.writerow([grid["study"], grid["dataset"], k, class_names[k], lab, n,
                        f"{m:.4f}", f"{sd:.4f}", ""])
    means = [mean_stats(table[lab], classes) for lab in labels]
    paper_cell = f"{paper[1]:.2f} ({paper[0]})" if paper else "–"
    md.append("| **mean** | " + " | ".join(f"**{_cell(*c)}**" for c in means) + f" | {paper_cell} |")
    if grid["study"] == "main":  # the paper's layout: its mean for each arm it reports
        per_arm = paper_arm_means(grid["dataset"])
        md.append("| *paper mean* | " + " | ".join(
            f"*{per_arm[lab]:.2f}*" if lab in per_arm else "–" for lab in labels) + " | |")
    for lab, (m, sd, n) in zip(labels, means, strict=True):
        p = f"{paper[1]:.2f}" if paper and lab == paper[2] and len(classes) == 10 else ""
        w.writerow([grid["study"], grid["dataset"], "mean", "", lab, n, f"{m:.4f}", f"{sd:.4f}", p])
    return "\n".join(md), buf.getvalue()


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


def _paper_mean(grid: dict[str, Any]) -> tuple[str, float, str] | None:
    """(what, value, our column it compares with) for the mean row's paper cell."""
    ds, study = grid["dataset"], grid["study"]
    if study in ("distillation", "main") and ds in PAPER_STUDENT:
        return "P-KDGAN student", PAPER_STUDENT[ds], "p-kdgan"
    if study in ("edegan", "score", "batch-size", "latent-constraint") and ds in PAPER_TEACHER:
        col = {"edegan": "teacher", "score": "latent", "batch-size": "bs=1"}.get(study, "")
        return "teacher", PAPER_TEACHER[ds], col
    return None


def plot_per_class(path: Path, table: Table, labels: list[str], classes: list[int]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(classes) + 2), 3.4))
    width = 0.8 / len(labels)
    for i, lab in enumerate(labels):
        st = [class_stats(table[lab], k) for k in classes]
        x = np.arange(len(classes)) + (i - (len(labels) - 1) / 2) * width
        ax.bar(x, [s[0] for s in st], width, yerr=[s[1] for s in st], label=lab, capsize=2)
    ax.set_xticks(np.arange(len(classes)), [str(k) for k in classes])
    ax.set_xlabel("normal class")
    ax.set_ylabel("AUROC (%)")
    lo = min((v for lab in labels for v in table[lab].values()), default=50.0)
    ax.set_ylim(max(0.0, lo - 5), 100)
    ax.legend(fontsize=7, ncol=min(4, len(labels)))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_batch_curve(path: Path, table: Table, labels: list[str], classes: list[int]) -> None:
    import matplotlib.pyplot as plt

    sizes = [int(lab.split("=")[1]) for lab in labels]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for k in classes:
        ax.plot(sizes, [class_stats(table[lab], k)[0] for lab in labels], alpha=0.35, lw=1,
                label=f"class {k}")
    st = [mean_stats(table[lab], classes) for lab in labels]
    ax.errorbar(sizes, [s[0] for s in st], yerr=[s[1] for s in st], color="k", lw=2, capsize=3,
                label="mean")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("AUROC (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_roc(path: Path, specs: list[RunSpec], locate: Locate, cols: list[Column],
             classes: list[int]) -> None:
    """ROC curves of each column for each class, from the lowest finished seed."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    ncol = min(5, len(classes))
    nrow = math.ceil(len(classes) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol, 2.3 * nrow), squeeze=False)
    for ax, k in zip(axes.flat, classes, strict=False):
        for c in cols:
            runs_k = sorted((s for s in specs if s.arm == c.arm and s.normal_class == k
                             and runs.is_finished(locate(s))), key=lambda s: s.seed)
            if not runs_k:
                continue
            z = runs.read_npz(locate(runs_k[0]) / runs.SCORES)
            fpr, tpr, _ = roc_curve(z["labels"], z[c.npz])
            ax.plot(fpr, tpr, lw=1, label=c.label)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_title(f"class {k}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(classes):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("ROC curves (lowest finished seed of each class)", fontsize=9)
    fig.supxlabel("false positive rate", fontsize=8)
    fig.supylabel("true positive rate", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _invocations(grid_dir: Path) -> list[dict[str, Any]]:
    from pkdgan.grid import LOG_FILE

    path = grid_dir / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


MIN_COMPARABLE_STEPS = 100


def arm_steps(specs: list[RunSpec], locate: Locate) -> dict[str, int]:
    """Fewest optimiser steps a finished EDE-GAN run of each arm took."""
    from pkdgan.config import steps_per_epoch

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


def _steps_note(specs: list[RunSpec], locate: Locate) -> str:
    """Optimizer steps per run by batch size: at a fixed epoch budget, large batches take few."""
    from pkdgan.config import steps_per_epoch

    steps: dict[int, set[int]] = {}
    for s in specs:
        path = locate(s) / runs.METRICS
        if s.kind == "edegan" and path.is_file():
            m, t = runs.read_json(path), s.config["train"]
            b = int(t["batch_size"])
            steps.setdefault(b, set()).add(
                steps_per_epoch(int(m["n_train"]), b, bool(t.get("drop_last"))) * int(m["epochs"]))
    if len(steps) < 2:
        return ""
    parts = [f"bs={b}: {min(v)}" + (f"-{max(v)}" if max(v) != min(v) else "")
             for b, v in sorted(steps.items())]
    return ("Optimizer steps per run (same epochs for every batch size): " + ", ".join(parts)
            + ". An arm with very few steps is barely trained; read its AUROC in that light.")


def _run_seconds(specs: list[RunSpec], locate: Locate) -> float:
    """Training + scoring compute of the finished runs, from their own records."""
    total = 0.0
    for s in specs:
        path = locate(s) / runs.METRICS
        if path.is_file():
            total += float(runs.read_json(path).get("train_seconds", 0.0))
    return total


def cost_lines(specs: list[RunSpec], locate: Locate, labels: list[str]) -> list[str]:
    """Markdown rows: each arm's model size and cost, and the training time its cells recorded."""
    from pkdgan.config import ModelConfig, from_dict
    from pkdgan.flops import model_cost

    rows = ["| arm | params | MFLOPs / image | cells | training minutes per cell (mean) | total hours |",
            "|---|---|---|---|---|---|"]
    for arm in labels:
        done = [locate(s) for s in specs if s.arm == arm and runs.is_finished(locate(s))]
        if not done:
            continue
        cost = model_cost(from_dict(ModelConfig, runs.read_json(done[0] / runs.CONFIG)["model"]))
        secs = [float(runs.read_json(p / runs.METRICS).get("train_seconds", 0.0)) for p in done]
        rows.append(f"| {arm} | {cost.params:,} | {cost.flops / 1e6:.2f} | {len(done)} | "
                    f"{np.mean(secs) / 60:.1f} | {sum(secs) / 3600:.2f} |")
    return rows


@dataclass(frozen=True)
class Study:
    """Everything a grid's reports show, read once from its run folders (Markdown and HTML alike)."""

    grid_dir: Path
    grid: dict[str, Any]
    specs: list[RunSpec]
    store: Path
    results: Path | None  # the committed results store, where finished cells may live instead
    cols: list[Column]
    classes: list[int]
    seeds: list[int]
    names: list[str]
    table: Table
    missing: list[str]
    notes: list[str]
    comparisons: list[Comparison]
    checks: list[tuple[str, str]]

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.cols]

    def locate(self, spec: RunSpec) -> Path:
        """The folder holding ``spec``'s files: the run store, else the committed results store."""
        return finished_path(spec, self.store, self.results)

    @property
    def verdict(self) -> str:
        return overall(self.comparisons, self.checks)

    @property
    def paper_mean(self) -> tuple[str, float, str] | None:
        return _paper_mean(self.grid)


def load_study(grid_dir: Path) -> Study:
    """Read a grid folder and its finished runs into a ``Study``."""
    from pkdgan.data import CLASS_NAMES
    from pkdgan.grid import read_grid

    grid_dir = Path(grid_dir)
    grid, specs, store = read_grid(grid_dir)
    results = (grid_dir / grid["results"]).resolve() if grid.get("results") else None

    def locate(spec: RunSpec) -> Path:
        return finished_path(spec, store, results)

    cols = columns_for(grid, specs)
    classes = sorted({s.normal_class for s in specs})
    names = CLASS_NAMES.get(grid["dataset"], [str(i) for i in range(max(classes) + 1)])
    table, missing, notes = collect(specs, locate, cols)
    steps = arm_steps(specs, locate)
    comparisons = [undertrained(paired(table, a, b), steps)
                   for a, b in claims_for(grid, cols, table, classes)]
    return Study(grid_dir, grid, specs, store, results, cols, classes, sorted({s.seed for s in specs}),
                 names, table, missing, notes, comparisons, paper_checks(grid, table, classes))


def write_report(grid_dir: Path, echo: Callable[[str], None] = print,
                 study: Study | None = None) -> dict[str, Any]:
    """Write report.md, report.csv and PNG plots into ``grid_dir``; returns the verdicts."""
    st = study or load_study(grid_dir)
    grid_dir, grid, specs, cols, locate = st.grid_dir, st.grid, st.specs, st.cols, st.locate
    labels, classes, seeds, table, missing, notes = (st.labels, st.classes, st.seeds, st.table,
                                                     st.missing, st.notes)
    comparisons, checks = st.comparisons, st.checks
    md_table, csv_text = render_tables(grid, table, cols, classes, st.names)

    plot_per_class(grid_dir / "per_class.png", table, labels, classes)
    plots = ["per_class.png"]
    if grid["study"] == "batch-size":
        plot_batch_curve(grid_dir / "batch_size.png", table, labels, classes)
        plots.append("batch_size.png")
    plot_roc(grid_dir / "roc.png", specs, locate, cols, classes)
    plots.append("roc.png")

    p = grid["preset"]
    inv = _invocations(grid_dir)
    wall = sum(i["wall_seconds"] for i in inv)
    mach = inv[-1]["machine"] if inv else {}
    preset = Preset(**p)
    verdict = st.verdict
    lines = [
        f"# {grid['study']} study on {grid['dataset']}", "",
        f"Claim: {STUDIES[grid['study']]}.", "",
        f"- Preset **{p['name']}** ({p['description']}): {preset.summary()}"
        + ("" if p.get("max_test") is None else " -- **test set capped, AUROC not comparable "
           "with the paper's full test set**") + ".",
        f"- Classes {classes}, seeds {seeds}; {len(specs) - len(missing)} of {len(specs)} runs "
        f"finished" + (f" (**unfinished: {len(missing)}**)" if missing else "") + ".",
        f"- Command: `{grid.get('command') or 'pkdgan reproduce ' + grid['study']}`",
        f"- Wall time of this grid's invocations: {wall:.0f} s (runs reused from a shared store "
        f"cost nothing here); training time recorded by its runs: {_run_seconds(specs, locate):.0f} s.",
        f"- Machine: {mach.get('processor', '?')}, {mach.get('cpus', '?')} CPUs, "
        f"OMP_NUM_THREADS={mach.get('omp_num_threads')}, torch {mach.get('torch', '?')}, "
        f"{mach.get('platform', '?')}.",
        *[f"- Note: {n}" for n in notes],
        *([f"- {note}"] if (note := _steps_note(specs, locate)) else []), "",
        "## Verdict", "",
        f"Overall: **{verdict}**" + ("" if p["name"] == "paper" else
                                     f" (at the {p['name']} preset, not the paper's schedule)"),
        "", *[f"- {c.line()}" for c in comparisons], *[f"- {line}" for line, _ in checks], "",
        "Rule: a claim \"A beats B\" is *supported* when the mean paired difference over (class, "
        "seed) is positive, its 95% t-interval excludes 0 and the two-sided sign test has "
        "p < 0.05; *contradicted* when the same holds with the opposite sign; otherwise "
        "*inconclusive*. Pairs from one class share data, so the interval is optimistic.", "",
        "## AUROC (%) per normal class: mean ± std over seeds (n)", "",
        md_table, "",
        "The paper reports class means only, so the paper column is filled on the mean row; its "
        "value is comparable only when all 10 classes are run. The mean row's spread is the "
        "std over seeds of the class-averaged AUROC.", "",
        *[f"![{pl}]({pl})" for pl in plots], "",
        "## Model size and training time per arm", "",
        "Training time is each cell's own record (`train_seconds`: training epochs only, "
        "without data loading and scoring); a student's includes only its own epochs, not its "
        "teacher's.", "",
        *cost_lines(specs, locate, labels), "",
    ]
    if missing:
        lines += ["## Unfinished runs", "", *[f"- `{m}`" for m in missing], ""]
    runs.atomic_write_bytes(grid_dir / "report.md", "\n".join(lines).encode())
    runs.atomic_write_bytes(grid_dir / "report.csv", csv_text.encode())
    echo(f"{grid_dir / 'report.md'}: {grid['study']} on {grid['dataset']} -> {verdict}")
    for c in comparisons:
        echo(f"  {c.better} vs {c.worse}: {c.mean:+.2f} points, {c.verdict}")
    return {"verdict": verdict, "comparisons": [c.__dict__ | {"verdict": c.verdict}
                                                for c in comparisons],
            "paper": [line for line, _ in checks], "missing": missing}
