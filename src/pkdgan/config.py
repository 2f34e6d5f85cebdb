"""Configuration dataclasses, validated on construction and saved with every run.

A run folder's ``config.json`` holds everything needed to reproduce it; ``config_hash``
identifies a run inside a grid so finished runs are recognised and skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeVar

from pkdgan.errors import UsageError

LatentConstraint = Literal["none", "tanh", "l2"]
LATENT_CONSTRAINTS = ("none", "tanh", "l2")
DATASETS = ("mnist", "fmnist", "cifar10", "folder", "digits")
SCORES = ("latent", "reconstruction")


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

    def __post_init__(self) -> None:
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
    score: Literal["latent", "reconstruction"] = "latent"

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
        if self.score not in SCORES:
            raise UsageError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")


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
