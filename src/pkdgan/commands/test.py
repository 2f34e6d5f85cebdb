"""``pkdgan test RUN_DIR``: re-evaluate a saved run (teacher or student)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="re-evaluate a saved run folder",
                       description="Re-score the test set with the run's checkpoint and print "
                                   "AUROC; --from-scores only recomputes it from scores.npz.")
    p.add_argument("run_dir", type=Path, help="a finished run folder (train, distill or API save)")
    p.add_argument("--data-root", default=None, help="override the data root saved in the run")
    p.add_argument("--from-scores", action="store_true",
                   help="recompute metrics from the saved scores.npz without the model")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pkdgan.pipeline.evaluate_run import evaluate_run

    metrics = evaluate_run(args.run_dir, data_root=args.data_root, from_scores=args.from_scores)
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        saved = metrics.get("saved_auroc")
        extra = f" (saved {saved:.4f})" if saved is not None else ""
        print(f"{args.run_dir}: AUROC {metrics['auroc']:.4f}{extra}  AUPR {metrics['aupr']:.4f}  "
              f"score={metrics.get('score', 'latent')}")
    return 0
