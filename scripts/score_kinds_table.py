"""Test AUROC of every score kind (latent, reconstruction, combined, auto) for saved run folders.

latent / reconstruction / combined come from each run's ``scores.npz`` alone (both raw scores of
the test set and of the held-out normal images are saved), so no run is retrained. ``auto`` is
the run's recorded choice when it was trained with ``--score auto``; otherwise it is made now as
training would have made it: the checkpoint scores synthetic anomalies of the run's held-out
normal images, which are re-read from the run's data config (``--data-root`` overrides its
root) and checked against the saved held-out scores. Test labels only grade the kinds.

Usage: ``python scripts/score_kinds_table.py RUN_OR_FOLDER... [--data-root DIR] [--per-run]
[--json FILE]``; folders are searched for run folders (those with ``metrics.json``). Rows are
grouped by dataset (a folder dataset by its root's name); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, from_dict
from pkdgan.core.errors import PkdganError
from pkdgan.data.datasets import one_class_split
from pkdgan.evaluation.score_kinds import (
    AUTO,
    BASE_KINDS,
    KINDS,
    kind_aurocs,
    pick,
    resolve,
    standardization,
    with_combined,
)
from pkdgan.models.edegan import score_both
from pkdgan.training.checkpoints import load_run_generator

COLUMNS = (*KINDS, AUTO)


def _tie_to_combined(aurocs: dict[str, float]) -> str:
    """auto's first rule: the best kind, near-ties (0.005) to combined, then reconstruction."""
    best = max(aurocs.values())
    return next(k for k in ("combined", "reconstruction", "latent") if aurocs[k] >= best - 0.005)


# ``--rules``: auto's test AUROC under each rule, from the same recorded synthetic AUROCs
RULES = {"tie-to-combined": _tie_to_combined, "argmax": lambda a: max(a, key=a.get),
         "drop-inverted (now)": pick}
SUM = "sum"  # the rejected alternative to combined's max: z_latent + z_reconstruction


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders given, or found (recursively) under the folders given; sorted, no duplicates."""
    found: set[Path] = set()
    for p in paths:
        if (p / runs.METRICS).is_file():
            found.add(p)
        else:
            found |= {m.parent for m in p.rglob(runs.METRICS)}
    return sorted(found)


def auto_choice(run_dir: Path, held: dict[str, np.ndarray], data_root: str | None) -> dict[str, Any]:
    """The run's recorded ``auto`` choice, or the one training would have made."""
    cal_path = run_dir / runs.CALIBRATION
    cal = runs.read_json(cal_path) if cal_path.is_file() else {}
    if cal.get("requested") == AUTO and "synthetic_auroc" in cal:
        return cal
    cfg, generator = load_run_generator(run_dir)
    data = dict(cfg["data"]) | ({"data_root": data_root} if data_root else {})
    seed = int(cfg.get("split_seed", cfg.get("train", {}).get("seed", 0)))
    model = cfg["model"]
    split = one_class_split(from_dict(DataConfig, data), model["image_size"], model["channels"], seed)
    holdout = split.holdout
    choice = resolve(AUTO, generator, holdout, held)
    again = score_both(generator, holdout)[0].numpy()
    if again.shape != held["latent"].shape or not np.allclose(again, held["latent"], rtol=1e-3, atol=1e-6):
        raise PkdganError(f"{run_dir}: the re-read held-out images do not score as saved "
                          "(wrong --data-root or data changed)")
    return choice


def evaluate(run_dir: Path, data_root: str | None) -> dict[str, Any]:
    """One row: dataset, every kind's test AUROC, auto's pick and its AUROC."""
    z = runs.read_npz(run_dir / runs.SCORES)
    held = {k: z[f"holdout_{k}"] for k in BASE_KINDS}
    stats = standardization(held)
    scores = with_combined({k: z[k] for k in BASE_KINDS}, stats)
    aurocs = {k.removeprefix("auroc_"): v for k, v in kind_aurocs(scores, z["labels"]).items()}
    z_sum = sum((z[k] - stats[k]["mean"]) / stats[k]["std"] for k in BASE_KINDS)
    aurocs[SUM] = float(roc_auc_score(z["labels"], z_sum))
    choice = auto_choice(run_dir, held, data_root)
    auto_pick = pick(choice["synthetic_auroc"])  # today's rule, also for runs that chose by an older one
    cfg = runs.read_json(run_dir / runs.CONFIG)
    data = cfg.get("data", {})
    dataset = data.get("dataset", "?")
    if dataset == "folder":
        dataset = Path(str(data.get("data_root", "folder"))).name
    return {"run": str(run_dir), "dataset": dataset, **aurocs, AUTO: aurocs[auto_pick],
            "auto_pick": auto_pick, "recorded_pick": choice["score"],
            "synthetic_auroc": choice["synthetic_auroc"],
            **{f"rule:{name}": aurocs[rule(choice["synthetic_auroc"])] for name, rule in RULES.items()}}


def fmt(values: list[float]) -> str:
    m = float(np.mean(values))
    return f"{m:.3f}" if len(values) == 1 else f"{m:.3f} ± {float(np.std(values)):.3f}"


def table(rows: list[dict[str, Any]], per_run: bool, columns: tuple[str, ...] = COLUMNS) -> str:
    """Markdown: mean (± std over runs) per dataset; with ``per_run``, one line per run too."""
    out = ["| dataset | runs | " + " | ".join(columns) + " | auto picked |",
           "|---|---:|" + "---:|" * len(columns) + "---|"]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["dataset"]].append(r)
    for name, rs in groups.items():
        picks = ", ".join(f"{k} {n}" for k, n in Counter(r["auto_pick"] for r in rs).most_common())
        out.append(f"| {name} | {len(rs)} | " + " | ".join(fmt([r[k] for r in rs]) for k in columns)
                   + f" | {picks} |")
    if len(groups) > 1:
        means = {k: [float(np.mean([r[k] for r in rs])) for rs in groups.values()] for k in columns}
        out.append(f"| **mean of datasets** | {len(rows)} | "
                   + " | ".join(f"**{np.mean(means[k]):.3f}**" for k in columns) + " | |")
    if per_run:
        out += ["", "| run | " + " | ".join(columns) + " | auto picked | synthetic AUROC (l / r / c) |",
                "|---|" + "---:|" * len(columns) + "---|---|"]
        for r in rows:
            syn = " / ".join(f"{r['synthetic_auroc'][k]:.3f}" for k in KINDS)
            out.append(f"| {r['run']} | " + " | ".join(f"{r[k]:.3f}" for k in columns)
                       + f" | {r['auto_pick']} | {syn} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", type=Path, help="run folders, or folders holding them")
    p.add_argument("--data-root", default=None, help="override the runs' data root (auto only)")
    p.add_argument("--per-run", action="store_true", help="also one line per run")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    p.add_argument("--rules", action="store_true",
                   help="add auto's test AUROC under each pick rule (rule:NAME columns)")
    p.add_argument("--sum", action="store_true",
                   help="add a column for the sum of the two z-scores (combined takes their max)")
    args = p.parse_args()
    found = find_runs(args.paths)
    if not found:
        sys.stderr.write("score_kinds_table: no run folders (with metrics.json) found\n")
        return 1
    try:
        rows = [evaluate(r, args.data_root) for r in found]
    except PkdganError as e:
        sys.stderr.write(f"score_kinds_table: error: {e}\n")
        return 1
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    columns = (*COLUMNS, SUM) if args.sum else COLUMNS
    print(table(rows, args.per_run, columns + (tuple(f"rule:{r}" for r in RULES) if args.rules else ())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
