"""``pkdgan distill``: a trained teacher run -> a student run folder (P-KDGAN or a baseline)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from pkdgan.commands._common import (
    add_norm_arg,
    add_preset_arg,
    add_schedule_flags,
    add_trace_arg,
    add_tracking_args,
    from_preset,
)
from pkdgan.core.config import DISTILL_MODES, SCORE_KINDS, DistillConfig, LossWeights
from pkdgan.core.errors import UsageError
from pkdgan.core.presets import PRESETS, SCHEDULE_PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill", help="distil a trained teacher run into a small student",
        description="Train a registered student config from a finished teacher run folder on the "
                    "teacher's data and split. Structures: 1 teacher frozen, student K only; "
                    "2 frozen, K + student GAN loss; 3 joint (teacher GAN loss + K), K + student "
                    "GAN loss; 4 joint, K only. progressive = step 1 (frozen) then step 2 (joint); "
                    "alone = the same student trained without the teacher (baseline).")
    p.add_argument("--teacher", required=True, type=Path,
                   help="finished teacher run folder, or a folder of class_K run folders")
    p.add_argument("--student", default=None,
                   help="registry name (see `pkdgan flops`); default: the teacher's dataset's")
    p.add_argument("--width", type=int, default=None, help="override the student's width")
    p.add_argument("--nz", type=int, default=None, help="override the student's latent size")
    add_norm_arg(p, "the teacher's, for the student")
    p.add_argument("--mode", default="progressive", choices=DISTILL_MODES,
                   help="progressive = P-KDGAN (two steps); single = one structure; alone = baseline")
    p.add_argument("--structure", type=int, default=2, choices=[1, 2, 3, 4],
                   help="single mode's structure")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of single and alone modes (default: the preset's)")
    p.add_argument("--step1-structure", type=int, default=2, choices=[1, 2],
                   help="progressive step 1 (frozen teacher)")
    p.add_argument("--step2-structure", type=int, default=3, choices=[3, 4],
                   help="progressive step 2 (teacher and student jointly)")
    p.add_argument("--step1-epochs", type=int, default=None,
                   help="epochs of progressive step 1 (default: the preset's)")
    p.add_argument("--step2-epochs", type=int, default=None,
                   help="epochs of progressive step 2 (default: the preset's)")
    g = p.add_argument_group("distillation loss K = w1*K1 + wx*Kx + w2*K2")
    weights = "; ".join(f"{n}: {PRESETS[n].k_w1:g}/{PRESETS[n].k_wx:g}/{PRESETS[n].k_w2:g}"
                        for n in SCHEDULE_PRESETS)
    g.add_argument("--w1", type=float, default=None,
                   help=f"K1: L2 between z's (default: the preset's w1/wx/w2 - {weights})")
    g.add_argument("--wx", type=float, default=None, help="Kx: L1 between reconstructions")
    g.add_argument("--w2", type=float, default=None, help="K2: L2 between z_hat's")
    g.add_argument("--k-scale", default="raw", choices=["raw", "relative"],
                   help="K1/K2 in the teacher code's units (raw) or relative to its mean square, "
                        "so their weights do not depend on how large the teacher's codes grew")
    g = p.add_argument_group("GAN losses and optimisation (student, and teacher when trained)")
    g.add_argument("--w-adv", type=float, default=1.0, help="adversarial (feature matching) weight")
    g.add_argument("--w-con", type=float, default=50.0, help="contextual (L1 image) weight")
    g.add_argument("--w-lat", type=float, default=1.0, help="latent (L2 z vs z_hat) weight")
    add_preset_arg(g, student=True)
    g.add_argument("--batch-size", type=int, default=None,
                   help="images per step (default: the preset's; the paper: 1)")
    add_schedule_flags(g)
    g.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    g.add_argument("--teacher-lr", type=float, default=None,
                   help="teacher's lr in joint steps (default: the preset's; cpu: 2e-5, a tenth "
                        "of the student's); unused, and left out of the config, where no step "
                        "trains the teacher")
    g.add_argument("--teacher-k-grad", action=argparse.BooleanOptionalAction, default=True,
                   help="in joint steps, let K pull on the teacher too (--no-teacher-k-grad: the "
                        "teacher is refined by its own GAN loss only; metrics.json records its "
                        "AUROC before and after)")
    g.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (beta2 0.999)")
    g.add_argument("--seed", type=int, default=0, help="student init and data order")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--score", default="latent", choices=SCORE_KINDS,
                   help="anomaly score reported and thresholded")
    g.add_argument("--on-divergence", default="stop", choices=["stop", "reinit"],
                   help="on NaN/Inf losses: stop, or restore the last epoch and re-initialise D")
    p.add_argument("--data-root", default=None, help="override the teacher run's data root")
    p.add_argument("--out", required=True, type=Path, help="run folder to write (or parent folder)")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted runs; finished ones (same config) are read back")
    p.add_argument("--no-stack", action="store_true",
                   help="distil several teacher runs' students one by one; without it, at batch "
                        "size 1 their frozen-teacher epochs (structure 1 or 2, progressive step 1) "
                        "or alone baselines train together in one vectorised pass, with the same "
                        "results")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_trace_arg(p)
    add_tracking_args(p)
    p.set_defaults(func=main)


def distill_config(args: argparse.Namespace) -> DistillConfig:
    preset = PRESETS[args.preset]
    total, step2 = preset.student_schedule()
    cfg = DistillConfig(
        mode=args.mode, structure=args.structure,
        epochs=args.epochs if args.epochs is not None else total,
        step1_structure=args.step1_structure, step2_structure=args.step2_structure,
        step1_epochs=args.step1_epochs if args.step1_epochs is not None else total - step2,
        step2_epochs=args.step2_epochs if args.step2_epochs is not None else step2,
        w1=from_preset(args, "w1", "k_w1"), wx=from_preset(args, "wx", "k_wx"),
        w2=from_preset(args, "w2", "k_w2"),
        gan=LossWeights(adversarial=args.w_adv, contextual=args.w_con, latent=args.w_lat),
        batch_size=from_preset(args, "batch_size", "student_batch_size"), lr=args.lr,
        teacher_lr=args.teacher_lr, beta1=args.beta1, seed=args.seed, device=args.device,
        score=args.score, precision=from_preset(args, "precision"),
        drop_last=from_preset(args, "drop_last"), on_divergence=args.on_divergence,
        k_scale=args.k_scale, teacher_k_grad=args.teacher_k_grad,
    )
    window = (args.average_last if args.average_last is not None
              else preset.student_window(cfg.total_epochs()))
    lr = args.teacher_lr if args.teacher_lr is not None else preset.teacher_lr
    return dataclasses.replace(cfg, average_last=window).with_teacher_lr(lr)


def teacher_runs(teacher: Path, out: Path) -> list[tuple[Path, Path]]:
    """(teacher run, student run) pairs: one run, or every class_K run inside a folder."""
    if (teacher / "config.json").is_file():
        return [(teacher, out)]
    found = sorted(p for p in teacher.glob("class_*") if (p / "config.json").is_file())
    if not found:
        raise UsageError(f"{teacher} is neither a run folder nor a folder of class_K runs")
    return [(p, out / p.name) for p in found]


def student_spec(args: argparse.Namespace, teacher_dir: Path):  # noqa: ANN201 - str | ModelConfig
    """Registry name, or the registry config with --width/--nz overrides applied."""
    from pkdgan.core import runs
    from pkdgan.core.registry import DEFAULT_STUDENT, get_config

    name = args.student
    if name is None:
        dataset = runs.read_json(teacher_dir / runs.CONFIG).get("data", {}).get("dataset")
        if dataset not in DEFAULT_STUDENT:
            raise UsageError(f"no default student for dataset {dataset!r}; pass --student")
        name = DEFAULT_STUDENT[dataset]
    if args.width is None and args.nz is None and args.norm is None:
        return name
    from pkdgan.core.config import ModelConfig, from_dict
    from pkdgan.core.registry import for_teacher

    cfg = get_config(name)
    teacher_cfg = from_dict(ModelConfig, runs.read_json(teacher_dir / runs.CONFIG)["model"])
    cfg = dataclasses.replace(cfg, width=args.width or cfg.width, nz=args.nz or cfg.nz)
    return for_teacher(cfg, teacher_cfg, args.norm)


def main(args: argparse.Namespace) -> int:
    from pkdgan.pipeline import tracking
    from pkdgan.pipeline.distill_run import distill_runs

    tracking.check(args.logger, args.tracking_uri)
    dcfg = distill_config(args)
    pairs = teacher_runs(args.teacher, args.out)
    metrics = distill_runs([t for t, _ in pairs], [student_spec(args, t) for t, _ in pairs], dcfg,
                           [out for _, out in pairs], data_root=args.data_root,
                           progress=not args.no_progress, resume=args.resume, stack=not args.no_stack,
                           trace=args.trace_test)
    for (_, out), m in zip(pairs, metrics, strict=True):
        tracking.log_run(args.logger, out, args.tracking_uri)
        keys = ("auroc", "teacher_auroc_before", "teacher_auroc_after")
        line = {"run": str(out), "normal_class": m["normal_class"], "mode": dcfg.mode}
        line |= {k: None if m.get(k) is None else round(m[k], 4) for k in keys}
        print(json.dumps(line | {"train_seconds": round(m["train_seconds"], 1)}))
    return 0
