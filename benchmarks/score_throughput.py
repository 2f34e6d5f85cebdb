"""Scoring throughput at batch 256: teacher vs student, PyTorch vs ONNX Runtime.

For each registered model (``pkdgan.core.registry``) prints images/s of ``edegan.score_both`` (the
eval-mode training modules, the baseline), ``scoring.TorchScorer`` (folded BatchNorm, sub-pixel
transposed convolutions, no autograd) and ``deploy.scores.exported_runner`` (ONNX Runtime's
deploy runner, when installed), then the student/teacher speed ratio per dataset and backend.
Random weights and images: the speed does not depend on their values. Settings are measured in
alternating rounds; the median round is reported.

    python benchmarks/score_throughput.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch

from pkdgan.core.registry import get_config
from pkdgan.deploy.bench import rate
from pkdgan.deploy.scores import exported_runner
from pkdgan.inference.scoring import TorchScorer
from pkdgan.models.edegan import score_both
from pkdgan.models.nets import build_generator

# dataset -> (teacher config, student config)
PAIRS = {"mnist": ("teacher", "student-mnist"), "fmnist": ("teacher", "student-fmnist"),
         "cifar10": ("teacher-cifar10", "student-cifar10")}


def backends(name: str, batch: int, use_ort: bool, compile_: bool = False
             ) -> dict[str, Callable[[], object]]:
    cfg = get_config(name)
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    x = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
    fast = TorchScorer(g, batch)
    out: dict[str, Callable[[], object]] = {
        "torch_baseline": lambda: score_both(g, x, batch), "torch": lambda: fast.scores(x)}
    if compile_:  # the fast path's network under torch.compile (compiled here, before timing)
        compiled = TorchScorer(g, batch)
        compiled.net = torch.compile(compiled.net)
        compiled.scores(x)
        out["torch_compiled"] = lambda: compiled.scores(x)
    if use_ort:
        ort, xn = exported_runner(g, cfg, "onnxruntime"), x.numpy()
        out["onnxruntime"] = lambda: ort(xn)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=float, default=3.0, help="seconds per setting per round")
    p.add_argument("--quick", action="store_true", help="1 round of 1.5 s windows (about a minute)")
    p.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime threads (default: all)")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    p.add_argument("--compile", action="store_true",
                   help="also time the fast path under torch.compile (compiles first, minutes)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.window = 1, 1.5
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import onnxruntime  # noqa: F401
        use_ort = not args.no_onnx
    except ImportError:
        use_ort = False
    names = sorted({n for pair in PAIRS.values() for n in pair})
    fns = {(n, b): fn for n in names for b, fn in backends(n, args.batch, use_ort, args.compile).items()}
    samples: dict[tuple[str, str], list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds):
        for key, fn in fns.items():
            samples[key].append(rate(fn, args.batch, args.window))
    med = {k: statistics.median(v) for k, v in samples.items()}
    out: dict[str, object] = {}
    ratios: dict[str, float] = {}
    for dataset, (teacher, student) in PAIRS.items():
        for backend in sorted({b for _, b in fns}):
            out[f"{dataset}_teacher_{backend}"] = round(med[(teacher, backend)], 1)
            out[f"{dataset}_student_{backend}"] = round(med[(student, backend)], 1)
            ratios[f"{dataset}_{backend}"] = round(med[(student, backend)] / med[(teacher, backend)], 2)
    out["student_over_teacher"] = ratios
    out["settings"] = {"batch": args.batch, "threads": torch.get_num_threads(), "rounds": args.rounds,
                       "window_s": args.window, "torch": torch.__version__, "models": dict(PAIRS)}
    if args.json:
        print(json.dumps(out))
        return
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, median of {args.rounds} x "
          f"{args.window:g} s windows; images/s")
    for dataset, (teacher, student) in PAIRS.items():
        for backend in sorted({b for _, b in fns}):
            print(f"{dataset:8s} {backend:15s} teacher {med[(teacher, backend)]:9.0f}   "
                  f"student {med[(student, backend)]:9.0f}   ratio {ratios[f'{dataset}_{backend}']:7.1f}")


if __name__ == "__main__":
    main()
