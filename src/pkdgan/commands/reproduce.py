"""``pkdgan reproduce STUDY``: run one of the paper's studies as a resumable grid of runs."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path
from typing import Any

from pkdgan.commands._common import parse_classes
from pkdgan.core.config import PRECISIONS
from pkdgan.core.errors import UsageError
from pkdgan.core.presets import Preset
from pkdgan.studies.specs import (
    DEFAULT_BATCH_SIZES,
    PRESETS,
    STUDIES,
    STUDY_DATASETS,
    TRACE_CHOICES,
    GridRequest,
)

INT_OVERRIDES = ("epochs", "width", "nz", "image_size", "max_train", "max_test", "batch_size",
                 "student_epochs", "student_batch_size", "step2_epochs", "average_last",
                 "student_average_last")
OVERRIDE_HELP = {"average_last": "teachers keep the mean of their last N epochs (0: the last epoch's)",
                 "student_average_last": "students keep the mean of their last N epochs (0: the last "
                                         "epoch's)"}
OVERRIDES = (*INT_OVERRIDES, "precision")


def _preset_help() -> str:
    return "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())


def register(sub: argparse._SubParsersAction) -> None:
    studies = "; ".join(f"{k}: {v}" for k, v in STUDIES.items())
    p = sub.add_parser(
        "reproduce", help="run one of the paper's studies (a resumable grid of runs)",
        description=f"Run a study as a grid of independent runs (arms x classes x seeds). "
                    f"Re-running skips finished runs and resumes killed ones. Studies: {studies}. "
                    f"Presets: {_preset_help()}. Then: pkdgan report GRID_DIR.")
    p.add_argument("study", choices=list(STUDIES), help="which study (see above)")
    p.add_argument("--dataset", default="mnist", choices=STUDY_DATASETS, help="dataset of the grid")
    p.add_argument("--data-root", default=None, help="folder with mnist/, fashion-mnist/, cifar-10/")
    p.add_argument("--classes", default="all", help="normal classes: 3, 0-9, 1,3,5 or all")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (seeds 0..N-1)")
    p.add_argument("--preset", default="quick", choices=list(PRESETS),
                   help="training schedule (see above)")
    p.add_argument("--out", required=True, type=Path, help="grid folder (grid.json, report)")
    p.add_argument("--store", type=Path, default=None,
                   help="folder holding the run folders, shareable between grids so identical "
                        "runs are trained once (default: --out)")
    p.add_argument("--results", type=Path, default=None,
                   help="committed results store (e.g. docs/results/main): cells already there "
                        "with the same config hash are skipped, and each run that finishes is "
                        "copied there (small files and raw scores, no checkpoints) with cells.csv")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local processes, or Ray (pip install 'pkdgan[ray]')")
    p.add_argument("--workers", type=int, default=1, help="local executor: parallel processes")
    p.add_argument("--stack", type=int, default=1,
                   help="train up to this many batch-1 runs of a grid together in one "
                        "vectorised pass: EDE-GAN runs (pkdgan.training.multi, about 2x images/s) and "
                        "the frozen-teacher epochs (and alone baselines) of distillation runs of "
                        "different classes "
                        "(pkdgan.training.multi_distill, about 7x); same results as one by one (see "
                        "docs/performance.md); 1 = one run at a time")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: start a local Ray); runs are written to "
                        "--store, which every Ray node must see at the same path")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)),
                   help="batch-size study: the sizes compared")
    p.add_argument("--constraint", default="tanh", choices=["tanh", "l2"],
                   help="latent-constraint study: the constraint compared with none")
    p.add_argument("--trace-test", default="none", choices=TRACE_CHOICES,
                   help="runs that write their test AUROC after every epoch (test_trace.csv, a "
                        "description of the schedule, never a selection; not part of a run's "
                        "identity): students cost little, a teacher about a third of an epoch more")
    g = p.add_argument_group("preset overrides (change the config hash, so the runs too)")
    for name in INT_OVERRIDES:
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                       help=f"override the preset's {name.replace('_', ' ')}"
                            + (f": {OVERRIDE_HELP[name]}" if name in OVERRIDE_HELP else ""))
    g.add_argument("--precision", default=None, choices=list(PRECISIONS),
                   help="override the preset's training precision")
    p.add_argument("--list", action="store_true", help="print the runs and exit")
    p.add_argument("--no-train", action="store_true",
                   help="write the grid and copy finished runs to --results but train nothing "
                        "(then pkdgan report shows what is finished, e.g. cells from other machines)")
    p.set_defaults(func=main)


def rescaled_windows(preset: Preset, overrides: dict[str, Any]) -> dict[str, int]:
    """Averaging windows not given, for overridden epochs: the same fraction of the new epochs
    (presets.scaled), so ``--epochs 3`` does not average a short run's untrained epochs."""
    out = {}
    if "epochs" in overrides and "average_last" not in overrides and preset.average_last:
        out["average_last"] = preset.teacher_window(overrides["epochs"])
    new_total = dataclasses.replace(preset, **overrides).student_schedule()[0]
    if (new_total != preset.student_schedule()[0] and "student_average_last" not in overrides
            and preset.student_average):
        out["student_average_last"] = preset.student_window(new_total)
    return out


def request(args: argparse.Namespace) -> GridRequest:
    preset = PRESETS[args.preset]
    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    if overrides:
        changed = ", ".join(f"{k}={v}" for k, v in overrides.items())
        preset = dataclasses.replace(preset, **overrides, **rescaled_windows(preset, overrides),
                                     description=f"{preset.name} overridden by {changed}")
    try:
        sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    except ValueError:
        raise UsageError(f"bad --batch-sizes {args.batch_sizes!r}; use e.g. 1,8,32,64") from None
    if args.seeds < 1 or any(b < 1 for b in sizes):
        raise UsageError("--seeds and batch sizes must be >= 1")
    return GridRequest(study=args.study, dataset=args.dataset,
                       classes=tuple(parse_classes(args.classes)), seeds=tuple(range(args.seeds)),
                       preset=preset, data_root=args.data_root, device=args.device,
                       batch_sizes=sizes, constraint=args.constraint, trace=args.trace_test)


def canonical_command(args: argparse.Namespace) -> str:
    """The command with every option that shapes the grid spelled out (for the report)."""
    parts = ["pkdgan", "reproduce", args.study, "--dataset", args.dataset, "--classes", args.classes,
             "--seeds", str(args.seeds), "--preset", args.preset]
    for name in OVERRIDES:
        if getattr(args, name) is not None:
            parts += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.study == "batch-size":
        parts += ["--batch-sizes", args.batch_sizes]
    if args.study == "latent-constraint":
        parts += ["--constraint", args.constraint]
    for name in ("data_root", "store", "results", "address"):
        if getattr(args, name):
            parts += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.trace_test != "none":
        parts += ["--trace-test", args.trace_test]
    parts += ["--executor", args.executor, "--workers", str(args.workers), "--stack", str(args.stack),
              "--out", str(args.out)]
    return " ".join(shlex.quote(p) for p in parts)


def main(args: argparse.Namespace) -> int:
    from pkdgan.studies.grid import run_grid
    from pkdgan.studies.specs import build_specs

    req = request(args)
    if args.list:
        for s in build_specs(req):
            print(f"{s.arm:12s} class {s.normal_class} seed {s.seed}  {s.name}")
        return 0
    command = canonical_command(args)
    summary = run_grid(req, args.out, store=args.store, executor=args.executor,
                       workers=args.workers, address=args.address, command=command, stack=args.stack,
                       echo=lambda m: print(m, flush=True), results=args.results,
                       train=not args.no_train)
    return 1 if summary["failed"] else 0
