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
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core import runs
from pkdgan.core.config import ModelConfig, from_dict, steps_per_epoch
from pkdgan.data.datasets import CLASS_NAMES
from pkdgan.models.flops import model_cost
from pkdgan.studies import cells
from pkdgan.studies.grid import LOG_FILE, read_grid
from pkdgan.studies.specs import (
    STUDIES,
    Preset,
    RunSpec,
)
from pkdgan.studies.stats import (
    Column,
    Comparison,
    Locate,
    Table,
    arm_steps,
    class_stats,
    mean_stats,
    overall,
    paired,
    paper_arm_means,
    paper_checks,
    paper_mean,
    undertrained,
)
from pkdgan.studies.study_plots import plot_batch_curve, plot_per_class, plot_roc


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


def finished_path(spec: RunSpec, store: Path, results: Path | None = None) -> Path:
    """Where a finished run's files are: the run store, else the committed results store."""
    path = store / spec.name
    if results is not None and not runs.is_finished(path) and cells.is_committed(results, spec):
        return cells.cell_dir(results, spec)
    return path


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


def _cell(m: float, sd: float, n: int) -> str:
    return "–" if n == 0 else f"{m:.2f} ± {sd:.2f} ({n})"


def render_tables(grid: dict[str, Any], table: Table, cols: list[Column], classes: list[int],
                  class_names: list[str]) -> tuple[str, str]:
    """(Markdown table, CSV text) of per-class and mean AUROC."""
    labels = [c.label for c in cols]
    paper = paper_mean(grid)
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


def _invocations(grid_dir: Path) -> list[dict[str, Any]]:

    path = grid_dir / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _steps_note(specs: list[RunSpec], locate: Locate) -> str:
    """Optimizer steps per run by batch size: at a fixed epoch budget, large batches take few."""

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
        return paper_mean(self.grid)


def load_study(grid_dir: Path) -> Study:
    """Read a grid folder and its finished runs into a ``Study``."""

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
