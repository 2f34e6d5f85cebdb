"""Frozen-teacher distillation throughput at batch size 1: one student at a time vs K stacked.

Prints images/s of (a) ``distill.distill_step`` for one student at batch 1 (structure 2: the
student's GAN loss + K against the frozen teacher; what ``distill`` runs in progressive step 1)
and (b) ``multi_distill``'s stacked step for K students at batch 1 each, and the ratio b/a. The
teacher's outputs are precomputed in both (``distill`` computes them once per frozen step), so
only the student's training is timed. The two are timed in alternating windows and the median
window is reported, so a load change on a shared machine hits both alike. Synthetic images: the
speed does not depend on pixel values. Defaults: MNIST size, the paper's teacher (width 64,
nz 100) and ``student-mnist`` (width 3, nz 32, so the student-side projection runs too).

    python benchmarks/distill_throughput.py --quick --json --threads 1    # ~30 s
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable

import torch
from train_throughput import (  # the script's folder is on sys.path
    add_timing_args,
    alternate,
    apply_timing_args,
)

from pkdgan.core.config import DistillConfig, ModelConfig, RunConfig
from pkdgan.core.registry import for_teacher, get_config
from pkdgan.models.edegan import EDEGANModel
from pkdgan.training.distill import STRUCTURES, distill_step, make_pair, teacher_outputs
from pkdgan.training.multi_distill import stack_pairs

DEVICE = torch.device("cpu")


def _teacher(cfg: ModelConfig) -> EDEGANModel:
    torch.manual_seed(1234)
    return EDEGANModel(cfg).eval().requires_grad_(False)


def sequential(teacher: EDEGANModel, student: ModelConfig, dcfg: DistillConfig
               ) -> tuple[Callable[[], None], int]:
    """One student, ``distill_step`` on one image: (step, images per step)."""
    pair, _ = make_pair(teacher, student, dcfg, DEVICE)
    pair.set_structure(STRUCTURES[2])
    cfg = teacher.cfg
    x = torch.rand(1, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
    target = teacher_outputs(teacher.generator, x)
    return (lambda: distill_step(pair, x, STRUCTURES[2], dcfg, target)), 1


def stacked(teacher: EDEGANModel, student: ModelConfig, dcfg: DistillConfig, k: int
            ) -> tuple[Callable[[], None], int]:
    """K students stacked (``multi_distill``), one image each per step."""
    pairs = [make_pair(teacher, student, dataclasses.replace(dcfg, seed=s), DEVICE)[0]
             for s in range(k)]
    for p in pairs:
        p.set_structure(STRUCTURES[2])
    stack, kloss, extra = stack_pairs(pairs, EDEGANModel(student), dcfg)
    cfg = teacher.cfg
    x = torch.rand(k, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
    kloss.target = tuple(t.unsqueeze(1) for t in teacher_outputs(teacher.generator, x))  # type: ignore[assignment]
    run = RunConfig(model=student, loss=dcfg.gan)
    return (lambda: stack.step(x, run, extra)), k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=1, help="1 = MNIST-size (32x32), 3 = CIFAR-size")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--width", type=int, default=64, help="teacher width")
    p.add_argument("--nz", type=int, default=100, help="teacher latent size")
    p.add_argument("--student", default="student-mnist", help="registry name of the student")
    p.add_argument("--models", type=int, default=10, help="K students in the stacked path")
    add_timing_args(p, 6.0, "about 30 s")
    args = p.parse_args()
    apply_timing_args(args)
    tcfg = ModelConfig(image_size=args.image_size, channels=args.channels, nz=args.nz, width=args.width)
    scfg = for_teacher(get_config(args.student), tcfg)
    dcfg = DistillConfig(mode="single", structure=2, batch_size=1, device="cpu")
    teacher = _teacher(tcfg)
    settings = {"sequential_bs1": sequential(teacher, scfg, dcfg),
                "stacked_bs1": stacked(teacher, scfg, dcfg, args.models)}
    med, med_cpu, _ = alternate(settings, args.rounds, args.window)
    out = {
        **{k: round(v, 2) for k, v in med.items()},
        "ratio": round(med["stacked_bs1"] / med["sequential_bs1"], 3),
        "per_cpu_second": {k: round(v, 2) for k, v in med_cpu.items()},
        "cpu_ratio": round(med_cpu["stacked_bs1"] / med_cpu["sequential_bs1"], 3),
        "settings": {"teacher": {"image_size": args.image_size, "channels": args.channels,
                                 "width": args.width, "nz": args.nz},
                     "student": args.student, "student_width": scfg.width, "student_nz": scfg.nz,
                     "models": args.models, "threads": torch.get_num_threads(),
                     "rounds": args.rounds, "window_s": args.window, "time": time.strftime("%F %T")},
    }
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
