"""Markdown table of finished run folders, with AUROC recomputed from each ``scores.npz``.

Usage: python scripts/runs_table.py RUN_DIR [RUN_DIR ...]

The "AUROC (npz)" column is scikit-learn's roc_auc_score on the saved raw scores and labels,
so anyone can check it matches the AUROC the run reported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score


def row(run: Path) -> str:
    m = json.loads((run / "metrics.json").read_text())
    z = np.load(run / "scores.npz")
    recomputed = roc_auc_score(z["labels"], z["scores"])
    return (
        f"| {run} | {m.get('dataset')} | {m.get('normal_class')} | {m.get('batch_size')} | "
        f"{m.get('width')} | {m.get('epochs')} | {m['auroc']:.4f} | {recomputed:.4f} | "
        f"{m['aupr']:.4f} | {m['auroc_reconstruction']:.4f} | {m['seconds_per_epoch']:.0f} | "
        f"{m['images_per_second']:.1f} |"
    )


def main(argv: list[str]) -> int:
    print("| run | dataset | normal class | batch | width | epochs | AUROC (latent) | AUROC (npz) "
          "| AUPR | AUROC (recon.) | s/epoch | train img/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for a in argv:
        print(row(Path(a)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
