"""``pkdgan predict RUN_DIR PATH...``: score image files with a trained run, write path,score,label."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pkdgan.core.config import SCORE_KINDS
from pkdgan.deploy import backends


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="score new images with a trained run (CSV/JSON of path,score,label)",
                       description="Score image files or folders (any Pillow format, grayscale or RGB, "
                                   "any size: converted as at training) with a run folder's model. "
                                   "label 1 = anomalous (score above the run's threshold, fitted on "
                                   "held-out normal images).")
    p.add_argument("run_dir", type=Path, help="run folder (pkdgan train / distill, or a saved detector)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="file to write (.csv or .json); without it, CSV goes to stdout")
    p.add_argument("--format", choices=["csv", "json"], default=None,
                   help="output format; without it, taken from the --output suffix (csv otherwise)")
    p.add_argument("--save-reconstructions", type=Path, default=None, metavar="DIR",
                   help="write one image | reconstruction | difference PNG per input into DIR")
    p.add_argument("--save-maps", type=Path, default=None, metavar="DIR",
                   help="write each input with its anomaly map as a heat-map overlay, at the "
                        "input's own size (NAME_map.png), and the map itself (NAME_map.npy)")
    g = p.add_argument_group("threshold",
                             "default: the run's own, at 5% false positives on held-out normal images")
    g.add_argument("--fpr", type=float, default=None,
                   help="refit the threshold for this false-positive rate on the held-out normal scores")
    g.add_argument("--contamination", type=float, default=None,
                   help="refit it for this expected anomaly fraction (PyOD's name; overrides --fpr)")
    g.add_argument("--threshold", type=float, default=None,
                   help="use this threshold, in the units of the scores written")
    p.add_argument("--score", choices=SCORE_KINDS, default=None,
                   help="anomaly score; the run's own when not given (for a run trained with auto: the "
                        "kind it chose; combined uses the run's held-out standardisation)")
    p.add_argument("--normalize", action="store_true",
                   help="standardise scores with the held-out normal mean and std")
    p.add_argument("--batch-size", type=int, default=64, help="images read and scored at a time")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--backend", default="auto", choices=[backends.AUTO, *backends.names()],
                   help=f"scoring runtime ({backends.choices_help()}). auto: an exported model cached in "
                        "RUN_DIR/deploy (made once, keyed by the checkpoint's hash) scored by the "
                        "fastest parity-checked runtime installed, without importing torch; torch "
                        "when the request needs it "
                        "(--save-reconstructions, --save-maps, --fpr, --contamination, bilinear "
                        "resizing, CUDA)")
    p.set_defaults(func=main, defer_omp_policy=True)


def main(args: argparse.Namespace) -> int:
    from pkdgan.deploy.lean import Fallback, predict_command

    try:
        # no torch: a cached export, ONNX Runtime or OpenVINO
        return predict_command(args, build_cache=_build_cache)
    except Fallback as why:
        if args.backend not in ("auto", "torch"):
            sys.stderr.write(f"pkdgan predict: note: scoring with torch, not {args.backend} ({why})\n")
    return torch_main(args)


def _build_cache(run_dir: Path, score: str | None) -> Path:
    """The run's deploy cache, made once (imports torch): handed to the lean path, which cannot."""
    from pkdgan.deploy.build import build

    return build(run_dir, score)


def torch_main(args: argparse.Namespace) -> int:
    from pkdgan.core.cpu import choose_omp_wait_policy

    if "torch" not in sys.modules:  # cli.main leaves this to the command (torch may not be needed)
        choose_omp_wait_policy()
    from pkdgan.api import load
    from pkdgan.core.device import resolve_device
    from pkdgan.data.image_files import expand_paths
    from pkdgan.deploy.lean import write_predictions
    from pkdgan.inference.predict import predict_files

    detector = load(args.run_dir, score=args.score, fpr=args.fpr, contamination=args.contamination,
                    normalize=args.normalize, device=str(resolve_device(args.device)), backend="torch")
    if args.threshold is not None:
        detector.set_threshold(args.threshold)
    rows = predict_files(detector, expand_paths(args.paths), args.batch_size, args.save_reconstructions,
                         args.save_maps)
    write_predictions(args, rows, detector.score_, detector.threshold_)
    return 0
