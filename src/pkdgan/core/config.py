"""Configuration dataclasses, validated on construction and saved with every run.

A run folder's ``config.json`` holds everything needed to reproduce it; ``config_hash``
identifies a run inside a grid so finished runs are recognised and skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeVar

from pkdgan.core.errors import UsageError

LatentConstraint = Literal["none", "tanh", "l2"]
LATENT_CONSTRAINTS = ("none", "tanh", "l2")
DATASETS = ("mnist", "fmnist", "cifar10", "folder", "digits")
# anomaly score kinds (pkdgan.evaluation.score_kinds): "combined" and "auto" were added later; runs that
# use the older two keep their config hashes, and the paper's studies keep "latent"
SCORE_KINDS = ("latent", "reconstruction", "combined", "auto")
Score = Literal["latent", "reconstruction", "combined", "auto"]
PRECISIONS = ("fp32", "bf16")
# Normalisation layers (pkdgan.models.nets): "batch" scores with BatchNorm's running statistics;
# "batch-per-image" trains BatchNorm and scores each image with its own statistics (GANomaly's
# protocol: its models are never put in eval mode, so at batch 1 an image is its own batch);
# "instance" is affine InstanceNorm in training and scoring.
NORMS = ("batch", "batch-per-image", "instance")
Norm = Literal["batch", "batch-per-image", "instance"]

# Fields added after results were committed, with the value every earlier run implicitly had.
# A config hash leaves such a field out while it holds that value, so the hashes (and folder
# names) of committed runs stay valid; any other value makes it part of the run's identity.
LEGACY_DEFAULTS: dict[str, object] = {"drop_last": False, "precision": "fp32", "norm": "batch",
                                      "layout": "auto", "k_scale": "raw", "teacher_k_grad": True,
                                      "average_last": 0}
K_SCALES = ("raw", "relative")
LAYOUTS = ("auto", "plain", "mvtec")


def drop_legacy(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without the fields of ``LEGACY_DEFAULTS`` that hold their legacy value."""
    return {k: v for k, v in d.items() if not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])}


def _is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class ModelConfig:
    """Shape of one EDE-GAN (generator E1 -> D -> E2 plus discriminator).

    ``latent_constraint`` is the paper's open "constraint on the latent space":
    ``tanh`` bounds z and z_hat to (-1, 1) so the encoders cannot inflate or collapse the code's
    scale to game the latent loss; ``l2`` adds ``constraint_weight * mean(z**2)``, pulling z
    toward the origin like the mean term of a KL to N(0, I). ``none`` is plain GANomaly.
    """

    image_size: int = 32
    channels: int = 1
    nz: int = 100
    width: int = 64
    latent_constraint: LatentConstraint = "none"
    constraint_weight: float = 1.0
    # legacy-valued by default (LEGACY_DEFAULTS): every run before it had BatchNorm
    norm: Norm = "batch"

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or not (
            _is_power_of_two(self.image_size) and 16 <= self.image_size <= 64
        ):
            raise UsageError(
                f"image size must be a power of two between 16 and 64, got {self.image_size}"
            )
        if self.channels not in (1, 3):
            raise UsageError(f"channels must be 1 or 3, got {self.channels}")
        if self.nz < 1:
            raise UsageError(f"latent size nz must be >= 1, got {self.nz}")
        if self.width < 1:
            raise UsageError(f"width must be >= 1, got {self.width}")
        if self.latent_constraint not in LATENT_CONSTRAINTS:
            raise UsageError(
                f"latent constraint must be one of {', '.join(LATENT_CONSTRAINTS)}, "
                f"got {self.latent_constraint!r}"
            )
        if not self.constraint_weight >= 0:
            raise UsageError(f"constraint weight must be >= 0, got {self.constraint_weight}")
        if self.norm not in NORMS:
            raise UsageError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")


@dataclass(frozen=True)
class LossWeights:
    """Generator loss weights (GANomaly defaults: adversarial 1, contextual 50, latent 1)."""

    adversarial: float = 1.0
    contextual: float = 50.0
    latent: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not v >= 0:
                raise UsageError(f"loss weight {f.name} must be >= 0, got {v}")


@dataclass(frozen=True)
class DataConfig:
    """Which images, which class is normal, and how they are prepared."""

    dataset: str = "mnist"
    data_root: str | None = None
    normal_class: int = 0
    resize: Literal["pad", "bilinear"] = "pad"
    holdout_fraction: float = 0.05
    max_train: int | None = None
    max_test: int | None = None
    # folder datasets: "plain" (train/, test/normal|abnormal), "mvtec" (train/good, test/<defect>,
    # ground_truth/<defect>), or "auto" (mvtec when train/good exists); legacy-valued
    layout: str = "auto"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise UsageError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.dataset not in DATASETS:
            raise UsageError(
                f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}"
            )
        if self.resize not in ("pad", "bilinear"):
            raise UsageError(f"resize must be 'pad' or 'bilinear', got {self.resize!r}")
        if not 0.0 <= self.holdout_fraction < 0.5:
            raise UsageError(
                f"holdout fraction must be in [0, 0.5), got {self.holdout_fraction}"
            )
        for name in ("max_train", "max_test"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 1, got {v}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation schedule. The paper's best setting is batch size 1."""

    epochs: int = 15
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    device: str = "auto"
    d_reinit_threshold: float = 1e-5
    on_divergence: Literal["stop", "reinit"] = "stop"
    score: Score = "latent"
    # Both legacy-valued by default (see LEGACY_DEFAULTS); the presets in ``presets.py`` set them.
    # drop_last: skip an epoch's final partial batch. A batch of a few images gives batch norm
    # noisy statistics for a whole G and D step each epoch: Fashion-MNIST's 4-image last batches
    # cost its teacher 10-17 AUROC points (docs/results/main-cpu-b64/README.md).
    drop_last: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"
    # Legacy-valued (LEGACY_DEFAULTS): the model kept is the mean of the weights at the ends of
    # the last ``average_last`` epochs (training.averaging), 0 = the last epoch's weights.
    average_last: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"learning rate must be > 0, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise UsageError(f"Adam betas must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.on_divergence not in ("stop", "reinit"):
            raise UsageError(f"on-divergence must be stop or reinit, got {self.on_divergence!r}")
        if self.score not in SCORE_KINDS:
            raise UsageError(f"score must be one of {', '.join(SCORE_KINDS)}, got {self.score!r}")
        check_precision(self.precision)
        check_average_last(self.average_last, self.epochs)

    def steps_per_epoch(self, n: int) -> int:
        """Optimiser steps over ``n`` images; a partial last batch counts unless dropped."""
        return steps_per_epoch(n, self.batch_size, self.drop_last)


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """A dropped partial batch is kept when it is the only one (fewer images than a batch)."""
    full = n // batch_size
    return full if drop_last and full > 0 else math.ceil(n / batch_size)


def check_average_last(last: int, epochs: int) -> None:
    if not 0 <= last <= epochs:
        raise UsageError(f"average last must be between 0 (off) and the {epochs} epochs, got {last}")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; what ``config.json`` holds."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(
            model=from_dict(ModelConfig, d.get("model", {})),
            loss=from_dict(LossWeights, d.get("loss", {})),
            data=from_dict(DataConfig, d.get("data", {})),
            train=from_dict(TrainConfig, d.get("train", {})),
        )

    def hash(self) -> str:
        """Short content hash; ``device`` and ``data_root`` do not change the result."""
        d = self.to_dict()
        d["train"].pop("device", None)
        d["data"].pop("data_root", None)
        d["train"] = drop_legacy(d["train"])
        d["model"], d["data"] = drop_legacy(d["model"]), drop_legacy(d["data"])
        return config_hash(d)


T = TypeVar("T")


def from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Build a dataclass from a dict, refusing unknown keys with a clear message."""
    if not isinstance(d, dict):
        raise UsageError(f"{cls.__name__} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - names)
    if unknown:
        raise UsageError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    try:
        return cls(**d)
    except TypeError as e:
        raise UsageError(f"bad {cls.__name__}: {e}") from None


def config_hash(d: dict[str, Any]) -> str:
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


DISTILL_MODES = ("single", "progressive", "alone")
STRUCTURE_NUMBERS = (1, 2, 3, 4)


@dataclass(frozen=True)
class DistillConfig:
    """Teacher -> student distillation (P-KDGAN); what ``config.json["distill"]`` holds.

    Structures (the paper's single-step variants): 1 = teacher frozen, student loss K only;
    2 = teacher frozen, student K + its own GAN loss; 3 = teacher trained jointly (its GAN loss
    + K), student K + own GAN loss; 4 = joint, student K only. ``single`` runs ``structure`` for
    ``epochs``; ``progressive`` runs ``step1_structure`` (frozen: 1 or 2) for ``step1_epochs``
    then ``step2_structure`` (joint: 3 or 4) for ``step2_epochs``; ``alone`` trains the student
    without a teacher for ``epochs`` (the baseline). ``gan`` weights both models' GAN losses;
    ``teacher_lr`` (default: ``lr``) is the teacher's learning rate when it is fine-tuned.
    ``on_divergence`` is ``TrainConfig``'s policy (added later: ``to_dict`` leaves out ``stop``,
    so every earlier distillation run keeps its config hash). The K weights' defaults here are
    the legacy ones (Kx at 1); the CLI, the API and study grids take a preset's
    (``Preset.distill_weights``: the ``cpu`` preset's Kx weight was measured on MNIST).
    """

    mode: Literal["single", "progressive", "alone"] = "progressive"
    structure: int = 2
    epochs: int = 15
    step1_structure: int = 2
    step2_structure: int = 3
    step1_epochs: int = 10
    step2_epochs: int = 5
    w1: float = 0.0
    wx: float = 1.0
    w2: float = 0.0
    gan: LossWeights = field(default_factory=LossWeights)
    batch_size: int = 1
    lr: float = 2e-4
    teacher_lr: float | None = None
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    device: str = "auto"
    d_reinit_threshold: float = 1e-5
    score: Score = "latent"
    drop_last: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"
    on_divergence: Literal["stop", "reinit"] = "stop"
    # Both legacy-valued (LEGACY_DEFAULTS): K1/K2 in the teacher code's units ("raw") or relative
    # to its mean square; whether K pulls on the teacher in joint steps (False: the teacher is
    # refined by its own GAN loss only, and K trains the student alone).
    k_scale: Literal["raw", "relative"] = "raw"
    teacher_k_grad: bool = True
    # Legacy-valued: TrainConfig's, over the whole schedule (the student's weights and projection).
    average_last: int = 0

    def __post_init__(self) -> None:
        if self.k_scale not in K_SCALES:
            raise UsageError(f"k scale must be one of {', '.join(K_SCALES)}, got {self.k_scale!r}")
        if self.mode not in DISTILL_MODES:
            raise UsageError(f"distill mode must be one of {', '.join(DISTILL_MODES)}, got {self.mode!r}")
        for name in ("structure", "step1_structure", "step2_structure"):
            if getattr(self, name) not in STRUCTURE_NUMBERS:
                raise UsageError(f"{name.replace('_', ' ')} must be 1, 2, 3 or 4, got {getattr(self, name)}")
        if self.step1_structure not in (1, 2):
            raise UsageError("progressive step 1 learns from a frozen teacher: structure 1 or 2, "
                             f"got {self.step1_structure}")
        if self.step2_structure not in (3, 4):
            raise UsageError("progressive step 2 trains teacher and student jointly: structure 3 or 4, "
                             f"got {self.step2_structure}")
        for name in ("epochs", "step1_epochs", "step2_epochs"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        for name in ("w1", "wx", "w2"):
            if not getattr(self, name) >= 0:
                raise UsageError(f"distillation weight {name} must be >= 0, got {getattr(self, name)}")
        if self.mode != "alone" and self.w1 + self.wx + self.w2 == 0:
            raise UsageError("all distillation weights are 0: nothing to distil (use --mode alone)")
        k_only = [s for s, _ in self.schedule() if s in (1, 4)]
        if k_only and not (self.w1 > 0 and self.w2 > 0):
            raise UsageError(
                f"structure {k_only[0]} trains the student from K alone: its second encoder learns "
                "only from K2 and its latent scale only from K1, so w1 and w2 must be > 0"
            )
        if self.teacher_lr is not None and not self.teacher_lr > 0:
            raise UsageError(f"teacher learning rate must be > 0, got {self.teacher_lr}")
        if not isinstance(self.gan, LossWeights):
            raise UsageError("gan must be LossWeights")
        self.train_config()

    def schedule(self) -> tuple[tuple[int, int], ...]:
        """(structure, epochs) per step; empty for ``alone``."""
        if self.mode == "single":
            return ((self.structure, self.epochs),)
        if self.mode == "progressive":
            return ((self.step1_structure, self.step1_epochs), (self.step2_structure, self.step2_epochs))
        return ()

    def trains_teacher(self) -> bool:
        """Whether a step fine-tunes the teacher (structures 3 and 4), so ``teacher_lr`` is used."""
        return any(s in (3, 4) for s, _ in self.schedule())

    def with_teacher_lr(self, lr: float | None) -> DistillConfig:
        """This schedule with the teacher's fine-tuning lr, or None where no step trains the
        teacher: a frozen-teacher config (and its hash) must not move with a setting it never
        uses. The one place that rule lives (CLI, estimator and study arms all call it)."""
        return dataclasses.replace(self, teacher_lr=lr if self.trains_teacher() else None)

    def total_epochs(self) -> int:
        return sum(e for _, e in self.schedule()) if self.mode != "alone" else self.epochs

    def train_config(self, teacher: bool = False) -> TrainConfig:
        """The student's (or, with ``teacher``, the fine-tuned teacher's) optimiser settings."""
        lr = self.teacher_lr if teacher and self.teacher_lr is not None else self.lr
        return TrainConfig(
            epochs=self.total_epochs(), batch_size=self.batch_size, lr=lr, beta1=self.beta1,
            beta2=self.beta2, seed=self.seed, device=self.device,
            d_reinit_threshold=self.d_reinit_threshold, score=self.score,
            drop_last=self.drop_last, precision=self.precision, on_divergence=self.on_divergence,
            average_last=self.average_last,
        )

    def to_dict(self) -> dict[str, Any]:
        """Fields added later are left out at their legacy value, so earlier runs keep their hash."""
        d = asdict(self)
        for name, legacy in {"on_divergence": "stop", "k_scale": LEGACY_DEFAULTS["k_scale"],
                             "teacher_k_grad": LEGACY_DEFAULTS["teacher_k_grad"],
                             "average_last": LEGACY_DEFAULTS["average_last"]}.items():
            if d[name] == legacy:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        if not isinstance(d, dict):
            raise UsageError(f"DistillConfig must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        if "gan" in d:
            d["gan"] = from_dict(LossWeights, d["gan"])
        return from_dict(cls, d)
