"""``pkdgan demo``: the whole story in a few minutes on a CPU.

Per normal class: train the EDE-GAN teacher (registry ``teacher``: width 64, nz 100), train the
student alone (baseline), then distil the same student with P-KDGAN (step 1 structure 2, step 2
structure 3); print one table with AUROC, parameters, FLOPs and scoring speed of each. The
default dataset is scikit-learn's bundled 8x8 digits at 16x16, so nothing is downloaded.
Everything goes through the real run folders (``train_run``, ``distill_run``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pkdgan.core.errors import UsageError

# dataset -> (image size, student, normal classes, train cap, test cap): small enough for a CPU
DEMOS: dict[str, tuple[int, str, str, int | None, int | None]] = {
    "digits": (16, "student-mnist", "0,1,3", None, None),
    "mnist": (32, "student-mnist", "0", 600, 2000),
    "fmnist": (32, "student-fmnist", "0", 600, 2000),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="teacher -> student alone -> P-KDGAN student, one table",
                       description="Train a teacher, the student alone, and the P-KDGAN student on "
                                   "a few normal classes and compare AUROC, size, FLOPs and scoring "
                                   "speed. Default: sklearn's digits (no download).")
    p.add_argument("--dataset", default="digits", choices=sorted(DEMOS),
                   help="digits needs no download; mnist/fmnist need --data-root")
    p.add_argument("--data-root", default=None, help="folder with mnist/ or fashion-mnist/")
    p.add_argument("--classes", default=None, help="normal classes (default per dataset)")
    p.add_argument("--student", default=None, help="registry student (default per dataset)")
    p.add_argument("--teacher-epochs", type=int, default=4, help="teacher epochs (batch size 1)")
    p.add_argument("--step1-epochs", type=int, default=6, help="P-KDGAN step 1 (frozen teacher)")
    p.add_argument("--step2-epochs", type=int, default=2, help="P-KDGAN step 2 (joint)")
    p.add_argument("--max-train", type=int, default=None, help="cap on normal training images")
    p.add_argument("--max-test", type=int, default=None, help="cap on test images")
    p.add_argument("--seed", type=int, default=0, help="seed of every model and split")
    p.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=main)


def run_demo(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train every arm for every class under ``out``; returns per-arm results."""
    import dataclasses

    import torch

    from pkdgan.commands._common import parse_classes
    from pkdgan.core.config import DataConfig, DistillConfig, RunConfig, TrainConfig
    from pkdgan.core.registry import for_teacher, get_config
    from pkdgan.models.flops import model_cost, scoring_speed
    from pkdgan.pipeline.distill_run import distill_run, load_teacher
    from pkdgan.pipeline.train_run import train_run
    from pkdgan.training.checkpoints import load_run_generator

    size, student_name, classes_default, max_train, max_test = DEMOS[args.dataset]
    student_name = args.student or student_name
    classes = parse_classes(args.classes or classes_default)
    teacher_cfg = dataclasses.replace(get_config("teacher"), image_size=size)
    student_cfg = for_teacher(get_config(student_name), teacher_cfg)
    arms: dict[str, dict[str, Any]] = {
        "teacher": {"config": teacher_cfg, "auroc": []},
        "student alone": {"config": student_cfg, "auroc": []},
        "P-KDGAN student": {"config": student_cfg, "auroc": []},
        "teacher after step 2": {"config": teacher_cfg, "auroc": []},
    }
    student_epochs = args.step1_epochs + args.step2_epochs
    alone = DistillConfig(mode="alone", epochs=student_epochs, seed=args.seed)
    pkd = DistillConfig(mode="progressive", step1_epochs=args.step1_epochs,
                        step2_epochs=args.step2_epochs, seed=args.seed)
    t0 = time.perf_counter()
    for k in classes:
        base = out / f"class_{k}"
        data = DataConfig(dataset=args.dataset, data_root=args.data_root, normal_class=k,
                          max_train=args.max_train or max_train, max_test=args.max_test or max_test)
        cfg = RunConfig(model=teacher_cfg, data=data,
                        train=TrainConfig(epochs=args.teacher_epochs, batch_size=1, seed=args.seed))
        m = train_run(cfg, base / "teacher", progress=False)
        arms["teacher"]["auroc"].append(m["auroc"])
        m = distill_run(base / "teacher", student_name, alone, base / "alone", progress=False)
        arms["student alone"]["auroc"].append(m["auroc"])
        m = distill_run(base / "teacher", student_name, pkd, base / "pkdgan", progress=False)
        arms["P-KDGAN student"]["auroc"].append(m["auroc"])
        arms["teacher after step 2"]["auroc"].append(m["teacher_auroc_after"])
    seconds = time.perf_counter() - t0
    last = out / f"class_{classes[-1]}"
    teacher, _ = load_teacher(last / "teacher")
    _, student = load_run_generator(last / "pkdgan")
    speed = {"teacher": scoring_speed(teacher.generator, teacher_cfg.channels, size, 256, 0.5),
             "student": scoring_speed(student, student_cfg.channels, size, 256, 0.5)}
    rows = []
    for name, arm in arms.items():
        cost = model_cost(arm["config"])
        is_teacher = arm["config"] == teacher_cfg
        rows.append({"model": name, "auroc_per_class": arm["auroc"],
                     "auroc_mean": sum(arm["auroc"]) / len(arm["auroc"]),
                     "width": arm["config"].width, "nz": arm["config"].nz, "params": cost.params,
                     "flops": cost.flops,
                     "images_per_second": speed["teacher" if is_teacher else "student"]})
    return {"dataset": args.dataset, "image_size": size, "classes": classes, "student": student_name,
            "schedule": {"teacher_epochs": args.teacher_epochs, "student_alone_epochs": student_epochs,
                         "step1": [2, args.step1_epochs], "step2": [3, args.step2_epochs],
                         "batch_size": 1, "seed": args.seed},
            "train_seconds": seconds, "threads": torch.get_num_threads(), "rows": rows}


def format_result(r: dict[str, Any]) -> str:
    classes = r["classes"]
    head = (f"{'model':<22}" + "".join(f"{'AUROC c' + str(k):>10}" for k in classes)
            + f"{'mean':>8}{'width':>6}{'nz':>5}{'params':>11}{'FLOPs':>13}{'images/s':>10}")
    lines = [f"pkdgan demo: {r['dataset']} at {r['image_size']}x{r['image_size']}, normal classes "
             f"{','.join(map(str, classes))}, student {r['student']}", head, "-" * len(head)]
    for row in r["rows"]:
        lines.append(f"{row['model']:<22}" + "".join(f"{a:>10.3f}" for a in row["auroc_per_class"])
                     + f"{row['auroc_mean']:>8.3f}{row['width']:>6}{row['nz']:>5}{row['params']:>11,}"
                     f"{row['flops']:>13,}{row['images_per_second']:>10.0f}")
    s = r["schedule"]
    lines.append(f"schedule: teacher {s['teacher_epochs']} epochs; student alone "
                 f"{s['student_alone_epochs']} epochs; P-KDGAN step 1 (structure 2) {s['step1'][1]} + "
                 f"step 2 (structure 3) {s['step2'][1]} epochs; batch 1, seed {s['seed']}")
    lines.append(f"training {r['train_seconds']:.0f} s on {r['threads']} thread(s); FLOPs of the "
                 "scoring path per image; images/s = scoring at batch 256 in this process")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    for name in ("teacher_epochs", "step1_epochs", "step2_epochs"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if args.out is not None:
        result = run_demo(args, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="pkdgan-demo-") as tmp:
            result = run_demo(args, Path(tmp))
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0
