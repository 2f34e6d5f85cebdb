"""Named training schedules: the paper's, a measured CPU one, and a quick one for tests/demos.

``pkdgan train`` / ``distill`` and the Python API take their schedule defaults from
``DEFAULT_PRESET``; study grids (``studies``) take every setting from the preset they name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# K's weights before presets named them (Kx only, at weight 1: the sklearn-digits dev study of
# docs/results_distillation.md); every committed cell up to 2026-12-03 has them.
LEGACY_DISTILL_WEIGHTS = {"w1": 0.0, "wx": 1.0, "w2": 0.0}


@dataclass(frozen=True)
class Preset:
    """Training schedule and model size shared by every run of a study."""

    name: str
    epochs: int
    width: int
    nz: int
    image_size: int
    max_train: int | None
    max_test: int | None
    description: str
    # Added with the main study; the first two presets keep their legacy values (batch 1
    # everywhere, students for max(2, epochs) epochs split 2:1, float32, partial batches kept),
    # which ``key_dict`` leaves out so grids made before still extend.
    batch_size: int = 1
    student_batch_size: int = 1
    student_epochs: int | None = None
    step2_epochs: int | None = None
    drop_last: bool = False
    precision: str = "fp32"
    # The distillation loss K = k_w1*K1 + k_wx*Kx + k_w2*K2 of the students that learn from a
    # teacher; legacy-valued, ``key_dict`` leaves them out.
    k_w1: float = LEGACY_DISTILL_WEIGHTS["w1"]
    k_wx: float = LEGACY_DISTILL_WEIGHTS["wx"]
    k_w2: float = LEGACY_DISTILL_WEIGHTS["w2"]
    # ModelConfig.norm of the preset's teachers and students (legacy-valued: BatchNorm).
    norm: str = "batch"
    # TrainConfig.average_last of the teachers (legacy-valued: the last epoch's weights) and of
    # the students when ``student_average_last`` is None (legacy); a run of other length than the
    # preset's averages the same fraction of its epochs (``scaled``).
    average_last: int = 0
    student_average_last: int | None = None
    # DistillConfig.teacher_lr of the students whose schedule fine-tunes the teacher (P-KDGAN's
    # joint step, single-step structures 3 and 4); legacy-valued: the student's learning rate.
    teacher_lr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key_dict(self) -> dict[str, Any]:
        """What identifies the schedule (no description; legacy-valued new fields left out)."""
        d = {k: v for k, v in self.to_dict().items() if k != "description"}
        legacy = {f.name: f.default for f in dataclasses.fields(Preset)
                  if f.default is not dataclasses.MISSING}
        return {k: v for k, v in d.items() if not (k in legacy and v == legacy[k])}

    def student_schedule(self) -> tuple[int, int]:
        """(student epochs, P-KDGAN joint-step epochs); the frozen step gets the rest."""
        total = self.student_epochs or max(2, self.epochs)
        return total, self.step2_epochs or max(1, total // 3)

    @property
    def student_average(self) -> int:
        """The students' averaging window (``student_average_last``, else the teachers')."""
        return self.average_last if self.student_average_last is None else self.student_average_last

    def teacher_window(self, epochs: int) -> int:
        """The teachers' averaging window for a run of ``epochs`` (``scaled``)."""
        return scaled(self.average_last, self.epochs, epochs)

    def student_window(self, epochs: int) -> int:
        """The students' averaging window for a schedule of ``epochs`` in all (``scaled``)."""
        return scaled(self.student_average, self.student_schedule()[0], epochs)

    def summary(self) -> str:
        """The settings themselves, so a report is exact even when flags overrode the preset."""
        train = "all normal training images" if self.max_train is None else (
            f"the first {self.max_train} normal training images")
        test = "the full test set" if self.max_test is None else (
            f"the test set capped at its first {self.max_test} images")
        total, step2 = self.student_schedule()
        partial = ", last partial batch dropped" if self.drop_last else ""
        return (f"teacher: {self.epochs} epoch(s) at batch {self.batch_size} over {train} (minus "
                f"the 5% held-out slice), width {self.width}, nz {self.nz}, "
                f"{self.image_size}x{self.image_size} images, {test}; students: {total} epoch(s) "
                f"at batch {self.student_batch_size} (P-KDGAN {total - step2} frozen + {step2} "
                f"joint), distillation loss K = {self.k_w1:g}*K1 + {self.k_wx:g}*Kx + "
                f"{self.k_w2:g}*K2{self._joint_lr()}; {self.norm} normalisation; {self.precision}"
                f"{partial}{self._kept()}")

    def _joint_lr(self) -> str:
        return f", teacher fine-tuned at lr {self.teacher_lr:g} in joint steps" if self.teacher_lr else ""

    def _kept(self) -> str:
        kept = [f"{who} the mean of their last {n} epochs"
                for who, n in (("teachers", self.average_last), ("students", self.student_average)) if n]
        return f"; models kept: {', '.join(kept)}" if kept else ""

    def distill_weights(self) -> dict[str, float]:
        """``DistillConfig``'s ``w1`` / ``wx`` / ``w2`` for this preset's distilled students."""
        return {"w1": self.k_w1, "wx": self.k_wx, "w2": self.k_w2}


# Kx's weight in the cpu preset: the K-weight search on MNIST's batch-256 teachers
# (docs/results/k-search/) found weight 1 too weak beside the student's own L1 term (weight 50).
KX_WEIGHT = 50.0

# The teacher's learning rate in P-KDGAN's joint step in the cpu preset, a tenth of the
# student's: at the student's rate the joint step cost the batch-16 teachers 1.40 AUROC points on
# average over the 9 seed-0 units of the student schedule search (docs/results/distill-search/);
# at 2e-5 they kept theirs (+0.12) and the students were level (+0.17).
TEACHER_JOINT_LR = 2e-5

# The default schedule (DEFAULT_PRESET); ``cpu-in64`` is it with the morning's teacher batch.
CPU = Preset(
    "cpu", epochs=15, width=64, nz=100, image_size=32, max_train=None, max_test=None,
    batch_size=16, student_batch_size=64, student_epochs=15, step2_epochs=5, drop_last=True,
    k_wx=KX_WEIGHT, norm="instance", average_last=5, student_average_last=5,
    teacher_lr=TEACHER_JOINT_LR,
    description="the paper's models and epochs with each image normalised by its own "
                "statistics (affine InstanceNorm, in training and scoring: the normalisation "
                "comparison, docs/results/norm/): teacher 15 epochs at batch 16 (the teacher's "
                "batch, docs/results/norm/) over all normal training images, width 64, nz 100, "
                "full test set; students (instance norm too) 15 epochs at batch 64 (P-KDGAN "
                f"10 + 5, the teacher at lr {TEACHER_JOINT_LR:g} in the joint step), distillation "
                f"loss Kx at weight {KX_WEIGHT:g} (docs/results/k-search/); "
                "teacher and students kept as the mean of their weights at the ends of their "
                "last 5 epochs (docs/results/distill-search/); partial last batches dropped; "
                "float32. Your own folders keep BatchNorm (FOLDER_NORM)",
)

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "paper", epochs=15, width=64, nz=100, image_size=32, max_train=None, max_test=None,
        norm="batch-per-image",
        description="the paper's schedule: 15 epochs at batch 1 over all normal training images, "
                    "width 64, nz 100, full test set (distillation students: 15 epochs, P-KDGAN "
                    "10 + 5); BatchNorm scored with each image's own statistics, as the GANomaly "
                    "code the paper builds on scores at batch 1",
    ),
    "quick": Preset(
        "quick", epochs=1, width=16, nz=100, image_size=32, max_train=600, max_test=None,
        description="1 epoch over the first 600 normal training images (570 after the 5% "
                    "held-out slice), width 16, nz 100, full test set (distillation students: 2 "
                    "epochs, P-KDGAN 1 + 1): about 8 s per batch-1 run on one free CPU core, "
                    "about 1/150 of the paper's training steps",
    ),
    "cpu": CPU,
    "cpu-in64": dataclasses.replace(
        CPU, name="cpu-in64", batch_size=64, teacher_lr=None,
        description="the third CPU preset (2026-12-07; the distillation search's units and "
                    "docs/results/main-in64-last/, the latter with --average-last 0 "
                    "--student-average-last 0): the cpu preset of that day: today's with its "
                    "teacher at batch 64 and the teacher's joint-step lr the student's"),
    "cpu-b256": Preset(
        "cpu-b256", epochs=15, width=64, nz=100, image_size=32, max_train=None, max_test=None,
        batch_size=256, student_batch_size=64, student_epochs=15, step2_epochs=5, drop_last=True,
        k_wx=KX_WEIGHT,
        description="the second CPU preset (the main table's cells of 2026-12-03 .. 12-06): the "
                    "paper's models and epochs at the CPU schedule measured best per CPU-minute "
                    "(docs/results/main/preset_search/): teacher 15 epochs at batch 256 over all "
                    "normal training images (its latent score ranks anomalies as normal for the "
                    "first 3 epochs, then passes batch 64), width 64, nz 100, full test set; "
                    f"students 15 epochs at batch 64 (P-KDGAN 10 + 5), distillation loss Kx at "
                    f"weight {KX_WEIGHT:g} (docs/results/k-search/); partial last batches "
                    "dropped; float32 (--precision bf16 is within seed noise and 1.7x faster "
                    "where the CPU has bf16 units, e.g. AMX; emulated elsewhere and far slower)",
    ),
    "cpu-b64": Preset(
        "cpu-b64", epochs=15, width=64, nz=100, image_size=32, max_train=None, max_test=None,
        batch_size=64, student_batch_size=64, student_epochs=15, step2_epochs=5, drop_last=True,
        description="the first CPU preset (the main table's cells of 2026-11-30 .. 12-03): teacher "
                    "15 epochs at batch 64 over all normal training images, width 64, nz 100, "
                    "full test set; students 15 epochs at batch 64 (P-KDGAN 10 + 5); partial last "
                    "batches dropped (Fashion-MNIST's 4-image last batches cost its teacher 10-17 "
                    "AUROC points); float32",
    ),
}

# A user's own folder keeps BatchNorm with running statistics whatever a preset's norm: per-image
# normalisation blinds the latent score to contrast changes (synthetic anomalies of held-out
# normal images, no labels: docs/results/norm/README.md), and ``--score auto`` cannot see
# what the norm has already removed.
FOLDER_NORM = "batch"

# The presets ``pkdgan train`` / ``distill`` and the Python API take their schedule from
# (the earlier CPU presets, so a cell of a committed table can be retrained by hand).
SCHEDULE_PRESETS = ("cpu", "paper", "cpu-in64", "cpu-b256", "cpu-b64")
DEFAULT_PRESET = "cpu"


def capped(window: int, epochs: int) -> int:
    """An averaging window that fits ``epochs`` (0 where it is one epoch: the mean of one epoch
    is that epoch's weights, and 0 keeps the hash of a run that averages nothing)."""
    n = min(window, epochs)
    return n if n > 1 else 0


def scaled(window: int, of_epochs: int, epochs: int) -> int:
    """A preset's window of its ``of_epochs``, for a run of ``epochs``: the same fraction of the
    run (5 of 15: its last third). Averaging the early epochs of a short run would mix in
    weights that have not learnt yet (a 3-epoch folder run averaged over all 3 scored 0.002)."""
    return capped(int(window * epochs / of_epochs + 0.5), epochs) if window else 0


def preset_schedule_help(student: bool = False) -> str:
    """One line per schedule preset, for ``--preset``'s help."""
    parts = []
    for name in SCHEDULE_PRESETS:
        p = PRESETS[name]
        total, step2 = p.student_schedule()
        sched = (f"{total} epochs at batch {p.student_batch_size} (progressive "
                 f"{total - step2} + {step2})" if student else f"{p.epochs} epochs at batch {p.batch_size}")
        extra = (", partial last batch dropped" if p.drop_last else "") + f", norm {p.norm}"
        window = p.student_average if student else p.average_last
        extra += f", mean of the last {window} epochs kept" if window else ""
        parts.append(f"{name}: {sched}, {p.precision}{extra}")
    return "; ".join(parts)
