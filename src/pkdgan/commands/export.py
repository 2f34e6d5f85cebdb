"""``pkdgan export RUN_DIR --format onnx``: one graph from image batch to scores, plus a JSON sidecar."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pkdgan.core.config import SCORE_KINDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run's scoring model (ONNX) with a JSON sidecar",
                       description="Write the run's scoring path (E1 -> D -> E2 -> score) as one ONNX "
                                   "graph: input float32 images N x C x S x S in [-1, 1] (dynamic N), "
                                   "output scores N. FILE.json beside it holds the preprocessing and "
                                   "the threshold. Needs the onnx extra: pip install 'pkdgan[onnx]'.")
    p.add_argument("run_dir", type=Path, help="run folder (pkdgan train / distill, or a saved detector)")
    p.add_argument("--format", default="onnx", choices=["onnx", "openvino"],
                   help="onnx, or openvino (IR .xml + .bin of the BatchNorm-folded graph; needs "
                        "pip install 'pkdgan[openvino]')")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="file to write; RUN_DIR/model.onnx (or model.xml) when not given")
    p.add_argument("--score", choices=SCORE_KINDS, default=None,
                   help="anomaly score the graph computes; the run's own when not given (for a run "
                        "trained with auto: the kind it chose; combined builds in the run's held-out "
                        "standardisation)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the runtime-vs-PyTorch parity check")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pkdgan.core import runs
    from pkdgan.deploy.export import sidecar_path
    from pkdgan.deploy.export_run import export_run

    out = export_run(args.run_dir, args.output, args.format, score=args.score, check=not args.no_check)
    sidecar = runs.read_json(sidecar_path(out))
    print(json.dumps({"model": str(out), "sidecar": str(sidecar_path(out)), "score": sidecar["score"],
                      "threshold": sidecar["threshold"], "parity": sidecar.get("parity")}))
    return 0
