"""Named model configs (timm's ``create_model`` idea): the teacher and one student per dataset.

Students shrink the teacher's width and, where width alone cannot reach the paper's computation
ratio, its latent size nz. Ratios are teacher:student FLOPs of the scoring path (E1 -> D -> E2)
at the dataset's image shape, as ``pkdgan flops`` measures them:

- ``teacher``: width 64, nz 100, 1 channel (MNIST, Fashion-MNIST) -- the paper's EDE-GAN.
- ``teacher-cifar10``: the same with 3 channels.
- ``student-cifar10``: width 11, nz 100 (width only): 25.6:1 >= 24.45:1 (width 12 gives 22.1).
- ``student-mnist``: width 3, nz 32: 315.6:1 >= 311.11:1 (width 3 with nz 100 gives 255).
- ``student-fmnist``: width 1, nz 64: 1420:1 >= 700:1. At width 2 the ratio leaves room for nz 2
  only (702.7:1), and that student scored 22.2 points under this one as the student alone on
  Fashion-MNIST classes 0-2 (docs/results/student-search/).

Image size and channels are the dataset's; when a student is distilled from a teacher, its
shape and latent constraint follow that teacher (``for_teacher``), only width and nz are its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import UsageError


@dataclass(frozen=True)
class RegisteredModel:
    """One named config; students name the dataset (and teacher) their ratio is measured on."""

    name: str
    config: ModelConfig
    dataset: str | None = None
    teacher: str | None = None
    paper_ratio: float | None = None
    note: str = ""

    @property
    def is_student(self) -> bool:
        return self.teacher is not None


_TEACHER = ModelConfig(image_size=32, channels=1, nz=100, width=64)
_TEACHER_RGB = dataclasses.replace(_TEACHER, channels=3)

_ENTRIES = (
    RegisteredModel("teacher", _TEACHER, note="EDE-GAN teacher for 1-channel data (MNIST, F-MNIST)"),
    RegisteredModel("teacher-cifar10", _TEACHER_RGB, dataset="cifar10",
                    note="EDE-GAN teacher for CIFAR-10"),
    RegisteredModel("student-cifar10", dataclasses.replace(_TEACHER_RGB, width=11),
                    dataset="cifar10", teacher="teacher-cifar10", paper_ratio=24.45,
                    note="width 64 -> 11, nz kept at 100"),
    RegisteredModel("student-mnist", dataclasses.replace(_TEACHER, width=3, nz=32),
                    dataset="mnist", teacher="teacher", paper_ratio=311.11,
                    note="width 64 -> 3, nz 100 -> 32"),
    RegisteredModel("student-fmnist", dataclasses.replace(_TEACHER, width=1, nz=64),
                    dataset="fmnist", teacher="teacher", paper_ratio=700.0,
                    note="width 64 -> 1, nz 100 -> 64"),
)
REGISTRY: dict[str, RegisteredModel] = {e.name: e for e in _ENTRIES}
MODEL_NAMES: list[str] = list(REGISTRY)
STUDENT_NAMES: list[str] = [e.name for e in _ENTRIES if e.is_student]


# Which student ``distill`` and ``demo`` use when none is named (digits are MNIST-like).
DEFAULT_STUDENT = {"mnist": "student-mnist", "digits": "student-mnist", "fmnist": "student-fmnist",
                   "cifar10": "student-cifar10"}


def get_entry(name: str) -> RegisteredModel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown model config {name!r}; choose one of {', '.join(MODEL_NAMES)}") from None


def get_config(name: str) -> ModelConfig:
    """The registered ``ModelConfig`` called ``name`` (``UsageError`` if there is none)."""
    return get_entry(name).config


def for_teacher(student: ModelConfig, teacher: ModelConfig, norm: str | None = None) -> ModelConfig:
    """The student's width and nz with the teacher's image shape, latent constraint and norm.

    The shape is the data's, and a student whose z lives in another range (tanh-bounded vs free)
    than the teacher's could not match it under K1/K2; ``norm`` follows the teacher unless
    ``norm`` names another (``distill --norm``).
    """
    return dataclasses.replace(
        student, image_size=teacher.image_size, channels=teacher.channels,
        latent_constraint=teacher.latent_constraint, constraint_weight=teacher.constraint_weight,
        norm=norm or teacher.norm,
    )


def check_student_shape(student_cfg: ModelConfig, teacher_cfg: ModelConfig) -> None:
    """A student sees the teacher's images, so it must take their shape."""
    if (student_cfg.image_size, student_cfg.channels) != (teacher_cfg.image_size, teacher_cfg.channels):
        raise UsageError(
            f"student image shape {student_cfg.channels}x{student_cfg.image_size} differs from the "
            f"teacher's {teacher_cfg.channels}x{teacher_cfg.image_size}"
        )


def resolve_student(student: str | ModelConfig, teacher_cfg: ModelConfig
                    ) -> tuple[ModelConfig, str | None]:
    """A registry name takes the teacher's image shape and latent constraint (``for_teacher``);
    an explicit config must already match the teacher's shape."""
    if isinstance(student, str):
        return for_teacher(get_config(student), teacher_cfg), student
    check_student_shape(student, teacher_cfg)
    return student, None
