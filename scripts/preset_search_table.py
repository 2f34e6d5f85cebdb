"""Tables of issue 10's schedule search from the probes' JSONL lines (``preset_probe.py``).

For each dataset, each schedule (batch size, precision) and each class: latent AUROC after
chosen epochs and the probe's own cumulative training minutes, then the mean over the classes
every schedule of that dataset has, so each comparison is paired (same classes, same seed).
Minutes are shown only for the first log's lines: those probes ran under one load (two
one-thread workers on the two cores); the other logs' probes ran beside other jobs, so only
their AUROCs are comparable. Test labels here only describe the search; nothing inside a run
reads them.

    python scripts/preset_search_table.py docs/results/main/preset_search/probes.jsonl \\
        docs/results/partial-batch/probes.jsonl > docs/results/main/preset_search/tables.md
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

# the paper's networks and losses; other probes (constraints, latent sizes) are other searches
PRESET = {"width": 64, "nz": 100, "lr": 0.0002, "latent_constraint": "none", "w_con": 50.0,
          "w_lat": 1.0, "w_adv": 1.0, "drop_last": True, "batch_size": 64, "precision": "fp32"}
# the schedule tables keep the paper's networks and losses and vary batch size and precision;
# other probes (constraints, latent sizes, loss weights) belong to the screen
BASE = {k: v for k, v in PRESET.items() if k not in ("batch_size", "precision")}
EPOCHS = (1, 2, 3, 5, 8, 10, 15)
Key = tuple[str, int, str, int]  # dataset, batch size, precision, seed


def read_lines(paths: list[Path]) -> list[tuple[int, dict]]:
    """(index of its log, line) of every probe line in ``paths``."""
    return [(i, json.loads(line)) for i, path in enumerate(paths)
            for line in path.read_text().splitlines() if line.strip()]


def load(paths: list[Path], cells: Path | None = None) -> dict[Key, dict[int, dict[int, dict]]]:
    """{(dataset, batch, precision, seed): {class: {epoch: line}}} of the base networks.

    ``cells`` (the main table's ``cells.csv``) adds each committed teacher cell as the epoch-15
    point of batch 64 / fp32, the preset (no timing: those cells ran under other loads); a probe
    of the same configuration takes precedence (a re-run differs from its cell by float noise,
    e.g. MNIST 2: 93.79 against 93.09).
    """
    out: dict[Key, dict[int, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for i, r in read_lines(paths):
        if i > 0:
            r["train_seconds"] = None
        if all(r.get(k, PRESET.get(k)) == v for k, v in BASE.items()):
            key = (r["dataset"], r["batch_size"], r["precision"], r["seed"])
            out[key][r["normal_class"]][r["epoch"]] = r
    probed = {(k[0], c) for k, v in out.items() for c in v}
    if cells is not None:  # only for the classes a probe looked at
        with cells.open(newline="") as f:
            for row in csv.DictReader(f):
                d, c, seed = row["dataset"], int(row["normal_class"]), int(row["seed"])
                if row["arm"] == "teacher" and (d, c) in probed:
                    point = {"auroc_latent": float(row["auroc"]), "train_seconds": None}
                    out[(d, 64, "fp32", seed)][c].setdefault(15, point)
    return out


def fmt(x: float | None, scale: float = 100.0, digits: int = 1) -> str:
    return "–" if x is None else f"{x * scale:.{digits}f}"


def minutes(lines: list[dict]) -> str:
    """" (mean training minutes)" when every line was timed under the search's load."""
    t = [r["train_seconds"] for r in lines]
    return "" if any(x is None for x in t) else f" ({mean(t) / 60:.1f})"


def dataset_tables(dataset: str, runs: dict[Key, dict[int, dict[int, dict]]], kind: str) -> list[str]:
    keys = sorted(k for k in runs if k[0] == dataset)
    if not keys:
        return []
    lines = [f"### {dataset}, {kind} AUROC (%) after each epoch; training minutes in brackets", ""]
    head = "| batch | precision | seed | class | " + " | ".join(f"ep {e}" for e in EPOCHS) + " |"
    lines += [head, "|" + "---|" * (4 + len(EPOCHS))]
    for key in keys:
        for k, curve in sorted(runs[key].items()):
            cells = []
            for e in EPOCHS:
                r = curve.get(e)
                cells.append("" if r is None else f"{fmt(r[f'auroc_{kind}'])}{minutes([r])}")
            lines.append(f"| {key[1]} | {key[2]} | {key[3]} | {k} | " + " | ".join(cells) + " |")
    lines += ["", *paired_means(keys, runs, kind), ""]
    return lines


def paired_means(keys: list[Key], runs: dict[Key, dict[int, dict[int, dict]]], kind: str) -> list[str]:
    """Mean over the classes (and seeds) that every schedule of the dataset has, per epoch."""
    schedules = sorted({(k[1], k[2]) for k in keys})
    cells = {s: {(c, k[3]) for k in keys if (k[1], k[2]) == s for c in runs[k]} for s in schedules}
    common = set.intersection(*cells.values())
    if not common or len(schedules) < 2:
        return []
    names = ", ".join(f"class {c} seed {s}" for c, s in sorted(common))
    out = [f"Mean over the cells every schedule has ({names}):", "",
           "| batch | precision | " + " | ".join(f"ep {e}" for e in EPOCHS) + " |",
           "|" + "---|" * (2 + len(EPOCHS))]
    for b, prec in schedules:
        row = []
        for e in EPOCHS:
            got = [runs[(keys[0][0], b, prec, s)][c].get(e) for c, s in sorted(common)]
            if any(g is None for g in got):
                row.append("")
                continue
            a = mean(g[f"auroc_{kind}"] for g in got)
            row.append(f"{fmt(a)}{minutes(got)}")
        out.append(f"| {b} | {prec} | " + " | ".join(row) + " |")
    return out


def seed_spread(cells: Path) -> list[float]:
    """fp32 teacher AUROC (%) seed 0 − seed 1 for every committed class that has both."""
    with cells.open(newline="") as f:
        t = {(r["dataset"], r["normal_class"], r["seed"]): float(r["auroc"]) * 100
             for r in csv.DictReader(f) if r["arm"] == "teacher"}
    return [v - t[(d, c, "1")] for (d, c, s), v in sorted(t.items()) if s == "0" and (d, c, "1") in t]


def precision_pairs(runs: dict[Key, dict[int, dict[int, dict]]], seeds: list[float],
                    epoch: int = 15) -> list[str]:
    """bf16 − fp32 at batch 64 on the same class and seed, beside the seed-to-seed spread of
    fp32 itself (seed 0 − seed 1, same class): "within seed noise" made a number."""
    def at(d: str, prec: str, seed: int, c: int) -> float | None:
        r = runs.get((d, 64, prec, seed), {}).get(c, {}).get(epoch)
        return None if r is None else r["auroc_latent"] * 100

    pairs = []
    for d, b, prec, seed in sorted(runs):
        for c in sorted(runs[(d, b, prec, seed)]):
            if b == 64 and prec == "bf16" and (f := at(d, "fp32", seed, c)) is not None:
                if (h := at(d, "bf16", seed, c)) is not None:
                    pairs.append((d, c, seed, h, f))
    if not pairs:
        return []
    diffs = [h - f for *_, h, f in pairs]
    out = [f"### bf16 vs fp32 (batch 64), latent AUROC (%) at epoch {epoch}", "",
           "| dataset | class | seed | bf16 | fp32 | bf16 − fp32 |", "|---|---|---|---|---|---|"]
    out += [f"| {d} | {c} | {seed} | {h:.2f} | {f:.2f} | {h - f:+.2f} |" for d, c, seed, h, f in pairs]
    out += ["", f"bf16 − fp32 over {len(diffs)} pairs: mean {mean(diffs):+.2f}, "
                f"sd {stdev(diffs):.2f}, mean |·| {mean(map(abs, diffs)):.2f} points."]
    if len(seeds) > 1:
        out.append(f"fp32 teacher cells, seed 0 − seed 1 over {len(seeds)} classes: mean {mean(seeds):+.2f}, "
                   f"sd {stdev(seeds):.2f}, mean |·| {mean(map(abs, seeds)):.2f} points.")
    return out + [""]


SCREENED = ("nz", "latent_constraint", "w_con", "w_lat", "w_adv", "batch_size", "precision")


def screen(paths: list[Path], dataset: str, epoch: int) -> list[str]:
    """Every configuration's latent / reconstruction / combined AUROC at ``epoch`` per class and
    seed, and the mean over classes where a configuration has them all (a short screen)."""
    rows: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for _, r in read_lines(paths):
        if r["dataset"] == dataset and r["epoch"] == epoch and r.get("drop_last"):
            label = tuple((k, r.get(k, PRESET[k])) for k in SCREENED) + (("seed", r["seed"]),)
            rows[label][r["normal_class"]] = r
    classes = sorted({k for v in rows.values() for k in v})
    out = [f"### {dataset} screen: AUROC (%) latent / reconstruction / combined at epoch {epoch}", "",
           "| configuration | seed | " + " | ".join(f"class {k}" for k in classes) + " | mean latent |",
           "|" + "---|" * (3 + len(classes))]
    for label, per in sorted(rows.items(), key=lambda kv: str(kv[0])):
        d = dict(label)
        name = ", ".join(f"{k} {v}" for k, v in label[:-1] if v != PRESET[k]) or "preset"
        cells = [" / ".join(fmt(per[k][f"auroc_{x}"], digits=1)
                            for x in ("latent", "reconstruction", "combined")) if k in per else ""
                 for k in classes]
        m = fmt(mean(per[k]["auroc_latent"] for k in classes)) if all(k in per for k in classes) else ""
        out.append(f"| {name} | {d['seed']} | " + " | ".join(cells) + f" | {m} |")
    return out + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("logs", type=Path, nargs="+")
    p.add_argument("--kind", default="latent", choices=("latent", "reconstruction", "combined"))
    p.add_argument("--cells", type=Path, default=None,
                   help="the main table's cells.csv: its teachers as the preset's epoch-15 points "
                        "(latent kind only)")
    p.add_argument("--screen", type=int, metavar="EPOCH", default=None,
                   help="CIFAR-10 screen: every configuration at this epoch instead")
    a = p.parse_args()
    if a.screen is not None:
        print("\n".join(screen(a.logs, "cifar10", a.screen)))
        return
    runs = load(a.logs, a.cells if a.kind == "latent" else None)
    for dataset in ("mnist", "fmnist", "cifar10"):
        print("\n".join(dataset_tables(dataset, runs, a.kind)))
    if a.kind == "latent":
        print("\n".join(precision_pairs(runs, seed_spread(a.cells) if a.cells else [])))


if __name__ == "__main__":
    main()
