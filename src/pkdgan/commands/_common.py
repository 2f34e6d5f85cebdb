"""Argument groups shared by several commands, and their translation into configs."""

from __future__ import annotations

import argparse
import re
from typing import Any

from pkdgan.core.config import (
    DATASETS,
    LATENT_CONSTRAINTS,
    LAYOUTS,
    NORMS,
    PRECISIONS,
    SCORE_KINDS,
    DataConfig,
    LossWeights,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from pkdgan.core.errors import UsageError
from pkdgan.core.presets import (
    DEFAULT_PRESET,
    FOLDER_NORM,
    PRESETS,
    SCHEDULE_PRESETS,
    preset_schedule_help,
)

SCORE_HELP = ("anomaly score: latent distance (the paper's), image reconstruction error, "
              "combined (both standardised on held-out normal images, the larger counts) or auto "
              "(the kind that best separates synthetic anomalies made from held-out normal "
              "images; no labels); default: auto for --dataset folder, latent otherwise")


def add_data_args(p: argparse.ArgumentParser, dataset_default: str = "mnist") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=dataset_default, choices=DATASETS,
                   help="dataset (digits = bundled sklearn 8x8 digits, no download)")
    g.add_argument("--data-root", default=None,
                   help="folder with mnist/, fashion-mnist/, cifar-10/ (or a folder dataset); "
                        "default $PKDGAN_DATA")
    g.add_argument("--download", action="store_true",
                   help="fetch the dataset from its official location (checksums verified)")
    g.add_argument("--resize", default="pad", choices=["pad", "bilinear"],
                   help="28x28 -> 32x32 by padding (exact pixels) or bilinear resizing")
    g.add_argument("--holdout-fraction", type=float, default=0.05,
                   help="normal training images held out for threshold/statistics")
    g.add_argument("--max-train", type=int, default=None, help="cap on normal training images")
    g.add_argument("--max-test", type=int, default=None, help="cap on test images (first N)")
    g.add_argument("--layout", default="auto", choices=list(LAYOUTS),
                   help="folder datasets: plain (train/, test/normal|abnormal/), mvtec (train/good/, "
                        "test/<defect>/, ground_truth/<defect>/<name>_mask.png) or auto (mvtec when "
                        "train/good/ exists)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--image-size", type=int, default=32, help="power of two, 16..64")
    g.add_argument("--channels", type=int, default=None, help="default: the dataset's")
    g.add_argument("--nz", type=int, default=100, help="latent size")
    g.add_argument("--width", type=int, default=64, help="base channel width")
    g.add_argument("--latent-constraint", default="none", choices=LATENT_CONSTRAINTS,
                   help="latent-space constraint: tanh bound on z, or L2 penalty toward 0")
    g.add_argument("--constraint-weight", type=float, default=1.0, help="weight of the l2 latent penalty")
    add_norm_arg(g)
    g.add_argument("--w-adv", type=float, default=1.0, help="adversarial (feature matching) weight")
    g.add_argument("--w-con", type=float, default=50.0, help="contextual (L1) weight")
    g.add_argument("--w-lat", type=float, default=1.0, help="latent (L2) weight")


NORM_HELP = ("normalisation layers, the same in training and scoring: batch (BatchNorm, scored with "
             "its running statistics), batch-per-image (BatchNorm, each image scored with its "
             "own statistics: GANomaly's protocol at batch 1) or instance (affine InstanceNorm); "
             "a score never depends on the other images of a batch")


def add_norm_arg(g: argparse._ActionsContainer,
                 default_help: str = f"the preset's; {FOLDER_NORM} for --dataset folder") -> None:
    g.add_argument("--norm", default=None, choices=NORMS, help=f"{NORM_HELP} (default: {default_help})")


def add_tracking_args(p: argparse._ActionsContainer) -> None:
    p.add_argument("--logger", default=None, choices=["tensorboard", "mlflow"],
                   help="mirror each finished run into TensorBoard (RUN/tensorboard) or MLflow "
                        "(config, per-epoch losses, test metrics, figures; MLflow also metrics.json, "
                        "the report and the ONNX model); pip install 'pkdgan[tracking]'")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: a local file store, mlruns/ beside the run folder)")


def add_trace_arg(p: argparse._ActionsContainer) -> None:
    p.add_argument("--trace-test", action="store_true",
                   help="after every epoch, write the test AUROC to RUN/test_trace.csv: a "
                        "description of the schedule, never used to choose anything (it scores "
                        "the live weights; the model kept is the last epoch's or, with "
                        "--average-last, their mean); costs a scoring pass of the test set per epoch")


def add_preset_arg(g: argparse._ArgumentGroup, student: bool = False) -> None:
    g.add_argument("--preset", default=DEFAULT_PRESET, choices=list(SCHEDULE_PRESETS),
                   help="schedule that the epoch, batch-size, precision and drop-last options "
                        "default to (default: cpu, measured on a 2-core CPU; paper = the paper's "
                        "batch-1 schedule, for a GPU): "
                        + preset_schedule_help(student))


def add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    add_preset_arg(g)
    g.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="images per step (default: the preset's; the paper's best: 1)")
    g.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    g.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    g.add_argument("--seed", type=int, default=0, help="random seed (init, shuffling, held-out split)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--score", default=None, choices=SCORE_KINDS, help=SCORE_HELP)
    add_schedule_flags(g)
    g.add_argument("--on-divergence", default="stop", choices=["stop", "reinit"],
                   help="on NaN/Inf losses: stop, or restore the last epoch and re-initialise D")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_schedule_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--precision", default=None, choices=list(PRECISIONS),
                   help="training arithmetic (default: the preset's): fp32, or bf16 autocast "
                        "(AMX / tensor cores) for the forward passes; weights and scores stay fp32")
    g.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=None,
                   help="skip each epoch's final partial batch: a batch of a few images gives "
                        "batch norm noisy statistics (on Fashion-MNIST's 4-image last batches it "
                        "cost the teacher 10-17 AUROC points) (default: the preset's)")
    g.add_argument("--average-last", type=int, default=None, metavar="N",
                   help="keep the mean of the weights at the ends of the last N epochs instead "
                        "of the last epoch's (stochastic weight averaging; 0 = off; default: the "
                        "preset's): a GAN's AUROC swings from epoch to epoch, and no test label "
                        "may choose the epoch")


def from_preset(args: argparse.Namespace, name: str, preset_field: str | None = None) -> Any:
    """An option's value, or the chosen preset's when the option was not given."""
    value = getattr(args, name)
    return value if value is not None else getattr(PRESETS[args.preset], preset_field or name)


def parse_classes(text: str, n_classes: int = 10) -> list[int]:
    """'3', '0-9', '1,3,5', 'all' -> sorted class list."""
    text = text.strip().lower()
    if text == "all":
        return list(range(n_classes))
    out: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise UsageError(f"bad class list {text!r}; use e.g. 3, 0-9, 1,3,5 or all")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo > hi:
            raise UsageError(f"bad class range {part.strip()!r}")
        out.update(range(lo, hi + 1))
    bad = sorted(k for k in out if not 0 <= k < n_classes)
    if bad:  # checked up front: a long multi-class run must not fail at its last class
        raise UsageError(f"unknown class {bad[0]}; classes are 0..{n_classes - 1}")
    return sorted(out)


def config_from_args(args: argparse.Namespace, normal_class: int, channels: int) -> RunConfig:
    """Namespace -> validated RunConfig (validation errors are UsageErrors)."""
    from pkdgan.evaluation.score_kinds import default_score

    return RunConfig(
        model=ModelConfig(
            image_size=args.image_size, channels=channels, nz=args.nz, width=args.width,
            latent_constraint=args.latent_constraint, constraint_weight=args.constraint_weight,
            norm=args.norm or (FOLDER_NORM if args.dataset == "folder" else PRESETS[args.preset].norm),
        ),
        loss=LossWeights(adversarial=args.w_adv, contextual=args.w_con, latent=args.w_lat),
        data=DataConfig(
            dataset=args.dataset, data_root=args.data_root, normal_class=normal_class,
            resize=args.resize, holdout_fraction=args.holdout_fraction,
            max_train=args.max_train, max_test=args.max_test, layout=args.layout,
        ),
        train=TrainConfig(
            epochs=from_preset(args, "epochs"), batch_size=from_preset(args, "batch_size"),
            lr=args.lr, beta1=args.beta1, seed=args.seed, device=args.device,
            score=args.score or default_score(args.dataset), on_divergence=args.on_divergence,
            precision=from_preset(args, "precision"), drop_last=from_preset(args, "drop_last"),
            average_last=(args.average_last if args.average_last is not None
                          else PRESETS[args.preset].teacher_window(from_preset(args, "epochs"))),
        ),
    )
