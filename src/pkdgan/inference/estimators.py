"""The two estimators: EDEGAN trains a teacher, PKDGAN distils a student from one."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from torch import nn

from pkdgan.core.config import (
    DataConfig,
    DistillConfig,
    LossWeights,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from pkdgan.core.errors import UsageError
from pkdgan.core.identity import DistillRun
from pkdgan.core.presets import FOLDER_NORM
from pkdgan.core.registry import resolve_student
from pkdgan.data.datasets import OneClassSplit
from pkdgan.evaluation.score_kinds import (
    AUTO,
)
from pkdgan.inference.detector import CPU_PRESET, OneClassDetector
from pkdgan.inference.predict import infer_channels
from pkdgan.models.edegan import EDEGANModel
from pkdgan.training.distill import distill
from pkdgan.training.train import fit


class EDEGAN(OneClassDetector):
    """The EDE-GAN teacher as a detector (defaults: the paper's network, the ``cpu`` preset's
    schedule; ``epochs=15, batch_size=1, drop_last=False`` is the paper's).

    Parameters mirror ``pkdgan train``: model shape (``image_size``, ``channels`` inferred from
    X when None, ``nz``, ``width``, ``latent_constraint``, ``norm``), loss weights (``w_adv``, ``w_con``,
    ``w_lat``), schedule (``epochs``, ``batch_size`` 1 = the paper's best, ``drop_last``,
    ``precision``, ``lr``, ``average_last``: keep the mean of the last N epochs, default the
    preset's as the same fraction of ``epochs``), ``score``
    (``auto``, the default: the kind that best separates synthetic anomalies of the held-out
    images, see ``score_kinds``; or ``latent``, the paper's, ``reconstruction``, ``combined``;
    ``score_`` is the kind in use), and the threshold settings above.
    """

    def __init__(self, *, image_size: int = 32, channels: int | None = None, nz: int = 100,
                 width: int = 64, latent_constraint: str = "none", constraint_weight: float = 1.0,
                 norm: str = FOLDER_NORM, w_adv: float = 1.0, w_con: float = 50.0, w_lat: float = 1.0,
                 epochs: int = CPU_PRESET.epochs, batch_size: int = CPU_PRESET.batch_size,
                 drop_last: bool = CPU_PRESET.drop_last, precision: str = CPU_PRESET.precision,
                 average_last: int | None = None,
                 lr: float = 2e-4, score: str = AUTO, fpr: float = 0.05,
                 contamination: float | None = None, holdout_fraction: float = 0.1,
                 normalize: bool = False, resize: str = "pad", seed: int = 0, device: str = "auto",
                 progress: bool = False) -> None:
        self.image_size = image_size
        self.channels = channels
        self.nz = nz
        self.width = width
        self.latent_constraint = latent_constraint
        self.constraint_weight = constraint_weight
        self.norm = norm
        self.w_adv = w_adv
        self.w_con = w_con
        self.w_lat = w_lat
        self.epochs = epochs
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.precision = precision
        self.average_last = average_last
        self.lr = lr
        self.score = score
        self.fpr = fpr
        self.contamination = contamination
        self.holdout_fraction = holdout_fraction
        self.normalize = normalize
        self.resize = resize
        self.seed = seed
        self.device = device
        self.progress = progress

    def _image_size(self) -> int:
        return self.image_size

    def _channels(self, X: Any) -> int:
        return self.channels if self.channels is not None else infer_channels(X)

    def run_config(self, channels: int) -> RunConfig:
        """The ``RunConfig`` these parameters mean (validates them)."""
        return RunConfig(
            model=ModelConfig(image_size=self.image_size, channels=channels, nz=self.nz,
                              width=self.width, latent_constraint=self.latent_constraint,  # type: ignore[arg-type]
                              constraint_weight=self.constraint_weight, norm=self.norm),  # type: ignore[arg-type]
            loss=LossWeights(adversarial=self.w_adv, contextual=self.w_con, latent=self.w_lat),
            data=DataConfig(dataset="folder", resize=self.resize,  # type: ignore[arg-type]
                            holdout_fraction=self.holdout_fraction),
            train=TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                              seed=self.seed, device=self.device, score=self.score,  # type: ignore[arg-type]
                              drop_last=self.drop_last, precision=self.precision,  # type: ignore[arg-type]
                              average_last=(self.average_last if self.average_last is not None
                                            else CPU_PRESET.teacher_window(self.epochs))),
        )

    def _train(self, split: OneClassSplit, channels: int
               ) -> tuple[nn.Module, nn.Module | None, dict[str, Any], dict[str, Any]]:

        cfg = self.run_config(channels)
        model, info = fit(cfg, split, None, progress=self.progress)
        config = cfg.to_dict() | {"kind": "edegan", "config_hash": cfg.hash()}
        return model.generator, model.discriminator, config, info

    def model(self) -> EDEGANModel:
        """A copy of the fitted generator + discriminator (what distillation needs as teacher)."""
        self._check_fitted()
        if self.discriminator_ is None:
            raise UsageError("this detector has no discriminator; it cannot serve as a teacher")
        m = EDEGANModel(self.model_config_)
        m.generator.load_state_dict(self.generator_.state_dict())
        m.discriminator.load_state_dict(self.discriminator_.state_dict())
        return m.eval()


class PKDGAN(OneClassDetector):
    """A P-KDGAN student distilled from an EDE-GAN teacher, as a detector.

    ``teacher`` is an ``EDEGAN`` detector: fitted ones are used as they are (a copy, so joint
    fine-tuning leaves yours untouched); unfitted ones (or None: default ``EDEGAN()``) are
    first trained on the same images. ``student`` is a registry name (``student-mnist``...) or a
    ``ModelConfig``; its image shape follows the teacher. The rest are ``DistillConfig`` fields
    (``mode`` ``progressive`` = the paper's best, structures, epochs, weights ``w1``/``wx``/``w2``
    and ``k_scale``, ``teacher_lr`` / ``teacher_k_grad`` for the joint step,
    whose defaults are the ``cpu`` preset's: Kx only, its weight from docs/results/k-search/, the
    teacher at a tenth of the student's lr in the joint step: docs/results/distill-search/).
    After ``fit``, ``teacher_`` is the teacher that was used.
    """

    def __init__(self, *, teacher: EDEGAN | None = None, student: str | ModelConfig = "student-mnist",
                 mode: str = "progressive", structure: int = 2,
                 epochs: int = CPU_PRESET.student_schedule()[0], step1_structure: int = 2,
                 step2_structure: int = 3,
                 step1_epochs: int = CPU_PRESET.student_schedule()[0] - CPU_PRESET.student_schedule()[1],
                 step2_epochs: int = CPU_PRESET.student_schedule()[1], w1: float = CPU_PRESET.k_w1,
                 wx: float = CPU_PRESET.k_wx, w2: float = CPU_PRESET.k_w2,
                 batch_size: int = CPU_PRESET.student_batch_size,
                 drop_last: bool = CPU_PRESET.drop_last, precision: str = CPU_PRESET.precision,
                 average_last: int | None = None,
                 lr: float = 2e-4, teacher_lr: float | None = CPU_PRESET.teacher_lr,
                 k_scale: str = "raw", teacher_k_grad: bool = True, score: str = AUTO,
                 fpr: float = 0.05, contamination: float | None = None,
                 holdout_fraction: float = 0.1, normalize: bool = False, resize: str = "pad",
                 seed: int = 0, device: str = "auto", progress: bool = False) -> None:
        self.teacher = teacher
        self.student = student
        self.mode = mode
        self.structure = structure
        self.epochs = epochs
        self.step1_structure = step1_structure
        self.step2_structure = step2_structure
        self.step1_epochs = step1_epochs
        self.step2_epochs = step2_epochs
        self.w1 = w1
        self.wx = wx
        self.w2 = w2
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.precision = precision
        self.average_last = average_last
        self.lr = lr
        self.teacher_lr = teacher_lr
        self.k_scale = k_scale
        self.teacher_k_grad = teacher_k_grad
        self.score = score
        self.fpr = fpr
        self.contamination = contamination
        self.holdout_fraction = holdout_fraction
        self.normalize = normalize
        self.resize = resize
        self.seed = seed
        self.device = device
        self.progress = progress

    def _teacher(self) -> EDEGAN:
        return self.teacher if self.teacher is not None else EDEGAN()

    def _image_size(self) -> int:
        t = self._teacher()
        return t.model_config_.image_size if hasattr(t, "generator_") else t.image_size

    def _channels(self, X: Any) -> int:
        t = self._teacher()
        return t.model_config_.channels if hasattr(t, "generator_") else t._channels(X)

    def distill_config(self) -> DistillConfig:
        names = {f.name for f in dataclasses.fields(DistillConfig)}
        params = {k: v for k, v in self.get_params(deep=False).items() if k in names}
        window = params.pop("average_last")
        cfg = DistillConfig(**params)
        if window is None:  # the preset's, as the same fraction of this schedule's epochs
            window = CPU_PRESET.student_window(cfg.total_epochs())
        return dataclasses.replace(cfg, average_last=window).with_teacher_lr(cfg.teacher_lr)

    def _train(self, split: OneClassSplit, channels: int
               ) -> tuple[nn.Module, nn.Module | None, dict[str, Any], dict[str, Any]]:

        dcfg = self.distill_config()
        teacher = self._teacher()
        if not hasattr(teacher, "generator_"):
            teacher = copy.deepcopy(teacher)
            generator, discriminator, tconfig, _ = teacher._train(split, channels)
            teacher._set_model(generator, discriminator, tconfig)
            teacher._calibrate_on(split.holdout)
        self.teacher_ = teacher
        student_cfg, student_name = resolve_student(self.student, teacher.model_config_)
        student, _, info = distill(teacher.model(), student_cfg, split, dcfg, None, self.progress)
        data = DataConfig(dataset="folder", resize=self.resize,  # type: ignore[arg-type]
                          holdout_fraction=self.holdout_fraction)
        config = DistillRun(student_cfg, data, dcfg, teacher.model_config_, student_name).to_dict()
        return student.generator, student.discriminator, config, info

    def _json_params(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        params.pop("teacher")
        if isinstance(params["student"], ModelConfig):
            params["student"] = dataclasses.asdict(params["student"])
        return params
