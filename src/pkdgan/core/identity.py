"""The identity of a distillation run, as ``RunConfig`` is an EDE-GAN run's.

It used to be a dict built by hand in two places (the run-folder pipeline and the ``PKDGAN``
estimator) and parsed back field by field; ``DistillRun`` builds exactly that dict
(``config.json`` of a distillation folder, byte for byte as before) and its hash, so folders
written earlier keep their identity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from pkdgan.core.config import (
    DataConfig,
    DistillConfig,
    ModelConfig,
    config_hash,
    drop_legacy,
    from_dict,
)


@dataclass(frozen=True)
class DistillRun:
    """Student model, data, distillation settings and the teacher they start from.

    ``teacher_run`` (the teacher's run folder) and ``split_seed`` (the teacher's seed, so the
    held-out images are ones it never saw) are None for a teacher fitted in memory (the API).
    """

    model: ModelConfig
    data: DataConfig
    distill: DistillConfig
    teacher_model: ModelConfig
    student_name: str | None = None
    teacher_run: str | None = None
    split_seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """``config.json``'s layout; with a teacher folder, its ``config_hash`` too."""
        d: dict[str, Any] = {
            "kind": "distill", "model": asdict(self.model), "data": asdict(self.data),
            "loss": asdict(self.distill.gan), "train": asdict(self.distill.train_config()),
            "distill": self.distill.to_dict(),
        }
        if self.teacher_run is not None:
            d["teacher_run"] = self.teacher_run
        d |= {"teacher_model": asdict(self.teacher_model), "student_name": self.student_name}
        if self.split_seed is not None:
            d["split_seed"] = self.split_seed
        if self.teacher_run is not None:
            d["config_hash"] = identity_hash(d)
        return d

    def hash(self) -> str:
        return identity_hash(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillRun:
        return cls(
            model=from_dict(ModelConfig, d["model"]), data=from_dict(DataConfig, d["data"]),
            distill=DistillConfig.from_dict(d["distill"]),
            teacher_model=from_dict(ModelConfig, d["teacher_model"]),
            student_name=d.get("student_name"), teacher_run=d.get("teacher_run"),
            split_seed=d.get("split_seed"),
        )


def identity_hash(config: dict[str, Any]) -> str:
    """What must agree for ``--resume``: everything but the device and the data root."""
    d = json.loads(json.dumps({k: config.get(k) for k in ("model", "loss", "data", "train",
                                                           "distill", "teacher_run")}))
    d["data"].pop("data_root", None)
    d["train"].pop("device", None)
    d["distill"].pop("device", None)
    d["train"], d["distill"] = drop_legacy(d["train"]), drop_legacy(d["distill"])
    if d.get("model") is not None:
        d["model"] = drop_legacy(d["model"])
    d["data"] = drop_legacy(d["data"])
    return config_hash(d)
