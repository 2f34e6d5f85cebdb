"""The paper's studies as grids of run specs, the presets they run at, and the paper's numbers.

A study is a list of independent runs, each described by a ``RunSpec``: which kind of run
(EDE-GAN or distillation), its full config, the config hash that names its folder, and the
study's labels for it (arm, class, seed). Identical configs get identical folder names, so two
studies that share a store reuse each other's finished runs (the score study *is* the EDE-GAN
study's runs; the latent-constraint study's "off" arm is the EDE-GAN study again).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from pkdgan.core.config import (
    DataConfig,
    DistillConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    config_hash,
    drop_legacy,
)
from pkdgan.core.errors import UsageError
from pkdgan.core.presets import LEGACY_DISTILL_WEIGHTS, PRESETS, Preset, capped
from pkdgan.core.registry import get_config

__all__ = ["PRESETS", "Preset"]  # re-exported: studies are where most readers look for them

STUDY_DATASETS = ("mnist", "fmnist", "cifar10", "digits")
CHANNELS = {"mnist": 1, "fmnist": 1, "cifar10": 3, "digits": 1}


STUDIES: dict[str, str] = {
    "edegan": "EDE-GAN teacher on every class: mean AUROC against the paper's teacher",
    "score": "claim (a): the latent-distance score beats the image reconstruction error "
             "(both scores of the same EDE-GAN runs)",
    "batch-size": "claim (b): batch size 1 trains the best EDE-GAN",
    "latent-constraint": "claim (c): a constraint on the latent space helps",
    "distillation": "claim (d): two-step P-KDGAN beats the best single-step structure, which "
                    "beats a student trained alone",
    "main": "the paper's main table: teacher, student alone, single-step structure 2 and "
            "P-KDGAN (2 -> 3) on every class",
}
DEFAULT_BATCH_SIZES = (1, 8, 32, 64)
TRACE_CHOICES = ("none", "students", "all")  # students: cheap; a teacher's costs ~1/3 epoch more

# The paper's reported mean AUROC (percent). It gives class means only, so per-class cells
# of our tables have no paper column. Sources: IJCAI 2020 P-KDGAN and arXiv 2109.07295.
PAPER_TEACHER = {"mnist": 97.80, "cifar10": 73.76}
PAPER_STUDENT = {"mnist": 97.25, "fmnist": 92.93, "cifar10": 73.05}
PAPER_STUDENT_GAIN = {"mnist": 1.77, "fmnist": 1.73, "cifar10": 2.44}


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid. ``name`` is its folder under the store; ``stage`` orders
    dependencies (distillation runs, stage 1, need their teacher, stage 0, finished)."""

    kind: str
    name: str
    config: dict[str, Any]
    config_hash: str
    arm: str
    normal_class: int
    seed: int
    stage: int = 0
    needs: tuple[str, ...] = field(default_factory=tuple)
    trace: bool = False  # write the test AUROC after every epoch: a description, not in the hash

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["needs"] = list(self.needs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        return cls(**{**d, "needs": tuple(d.get("needs", ()))})


@dataclass(frozen=True)
class GridRequest:
    """What ``pkdgan reproduce`` asks for, after presets and overrides are resolved."""

    study: str
    dataset: str
    classes: tuple[int, ...]
    seeds: tuple[int, ...]
    preset: Preset
    data_root: str | None = None
    device: str = "auto"
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    constraint: str = "tanh"
    trace: str = "none"  # which runs write test_trace.csv: none, students or all (TRACE_CHOICES)

    def __post_init__(self) -> None:
        if self.study not in STUDIES:
            raise UsageError(f"unknown study {self.study!r}; choose one of {', '.join(STUDIES)}")
        if self.dataset not in STUDY_DATASETS:
            raise UsageError(f"studies run on {', '.join(STUDY_DATASETS)}, not {self.dataset!r}")
        if not self.classes or not self.seeds:
            raise UsageError("a study needs at least one class and one seed")
        if self.constraint == "none":
            raise UsageError("--constraint must name a constraint (tanh or l2), not none")
        if self.trace not in TRACE_CHOICES:
            raise UsageError(f"--trace-test must be one of {', '.join(TRACE_CHOICES)}, not {self.trace!r}")


def _teacher_config(req: GridRequest, normal_class: int, seed: int, batch_size: int | None = None,
                    constraint: str = "none") -> RunConfig:
    p = req.preset
    return RunConfig(
        model=ModelConfig(image_size=p.image_size, channels=CHANNELS[req.dataset], nz=p.nz,
                          width=p.width, latent_constraint=constraint,  # type: ignore[arg-type]
                          norm=p.norm),  # type: ignore[arg-type]
        data=DataConfig(dataset=req.dataset, data_root=req.data_root, normal_class=normal_class,
                        max_train=p.max_train, max_test=p.max_test),
        train=TrainConfig(epochs=p.epochs, batch_size=batch_size or p.batch_size, seed=seed,
                          device=req.device, drop_last=p.drop_last, precision=p.precision,  # type: ignore[arg-type]
                          average_last=capped(p.average_last, p.epochs)),
    )


def _edegan_spec(cfg: RunConfig, arm: str) -> RunSpec:
    """Folder name is readable and a function of the config alone, so studies can share runs."""
    h = cfg.hash()
    tags = ""
    if cfg.train.batch_size != 1:
        tags += f"bs{cfg.train.batch_size}-"
    if cfg.model.latent_constraint != "none":
        tags += f"{cfg.model.latent_constraint}-"
    name = f"edegan/{cfg.data.dataset}/c{cfg.data.normal_class}/{tags}s{cfg.train.seed}-{h}"
    return RunSpec("edegan", name, cfg.to_dict(), h, arm, cfg.data.normal_class, cfg.train.seed)


def build_specs(req: GridRequest) -> list[RunSpec]:
    """The grid of ``req.study``: one spec per (arm, class, seed), marked to trace as asked."""
    traced = {"none": (), "students": ("distill",), "all": ("edegan", "distill")}[req.trace]
    return [dataclasses.replace(s, trace=s.kind in traced) for s in _specs(req)]


def _specs(req: GridRequest) -> list[RunSpec]:
    specs: list[RunSpec] = []
    for k in req.classes:
        for s in req.seeds:
            if req.study in ("edegan", "score"):
                specs.append(_edegan_spec(_teacher_config(req, k, s), "teacher"))
            elif req.study == "batch-size":
                for b in req.batch_sizes:
                    specs.append(_edegan_spec(_teacher_config(req, k, s, batch_size=b), f"bs={b}"))
            elif req.study == "latent-constraint":
                specs.append(_edegan_spec(_teacher_config(req, k, s), "off"))
                specs.append(_edegan_spec(_teacher_config(req, k, s, constraint=req.constraint),
                                          f"on ({req.constraint})"))
            else:
                specs.extend(_distillation_specs(req, k, s, MAIN_ARMS if req.study == "main" else None))
    return specs


# The registry's student for each dataset (digits, a stand-in for MNIST in tests, uses MNIST's).
STUDENTS = {"mnist": "student-mnist", "fmnist": "student-fmnist", "cifar10": "student-cifar10",
            "digits": "student-mnist"}
# (width, nz) each student name had when grid hashes named the student only; a spec whose
# student still has that shape keeps its old hash, so committed cells stay valid, while a
# registry change (student-fmnist became width 1 / nz 64) gives new cells, never stale ones.
LEGACY_STUDENT_SHAPES = {"student-mnist": (3, 32), "student-cifar10": (11, 100),
                         "student-fmnist": (2, 2)}


def student_shape(name: str) -> dict[str, int]:
    """The registry student's own width and nz: part of a distillation cell's identity."""
    cfg = get_config(name)
    return {"width": cfg.width, "nz": cfg.nz}


def stale_student(config: dict[str, Any]) -> bool:
    """A distillation spec built for a shape its registry student no longer has (specs from
    before the shape was recorded had the legacy one): training it would train another model."""
    if "student" not in config:
        return False
    legacy = LEGACY_STUDENT_SHAPES.get(config["student"])
    built = config.get("student_shape") or (
        {"width": legacy[0], "nz": legacy[1]} if legacy else None)
    return built is not None and built != student_shape(config["student"])


MAIN_ARMS = ("alone", "single-2", "p-kdgan")


def distillation_arms(preset: Preset, seed: int, device: str) -> list[tuple[str, DistillConfig]]:
    """Student arms at one student epoch budget: alone, single-step 2 and 3, P-KDGAN (2 -> 3).

    Every arm trains the student for the same epochs (legacy presets: ``max(2, epochs)``);
    P-KDGAN splits them between its frozen and joint steps (legacy: 2:1, as the paper's 10 + 5);
    the arms that train the teacher (single-3, P-KDGAN) take the preset's ``teacher_lr``.
    Single-step 2 is P-KDGAN's first step alone; 3 is the joint structure the paper found
    strong but unstable; the report compares P-KDGAN with whichever of the two scored higher.
    """
    total, step2 = preset.student_schedule()
    common: dict[str, Any] = {"seed": seed, "device": device, "batch_size": preset.student_batch_size,
                              "drop_last": preset.drop_last, "precision": preset.precision,
                              "average_last": capped(preset.student_average, total)}
    taught = common | preset.distill_weights()
    # alone has no K: it keeps the legacy weights, so its hash does not move with the preset's K
    alone = common | LEGACY_DISTILL_WEIGHTS
    arms = [
        ("alone", DistillConfig(mode="alone", epochs=total, **alone)),
        ("single-2", DistillConfig(mode="single", structure=2, epochs=total, **taught)),
        ("single-3", DistillConfig(mode="single", structure=3, epochs=total, **taught)),
        ("p-kdgan", DistillConfig(mode="progressive", step1_structure=2, step2_structure=3,
                                  step1_epochs=total - step2, step2_epochs=step2, **taught)),
    ]
    return [(name, cfg.with_teacher_lr(preset.teacher_lr)) for name, cfg in arms]


def distill_hash(config: dict[str, Any]) -> str:
    """Hash of a distillation spec's config without where it runs or reads data from."""
    d = json.loads(json.dumps(config))
    d["distill"].pop("device", None)
    d["distill"] = drop_legacy(d["distill"])
    d.pop("data_root", None)
    shape = d.get("student_shape")
    if shape is not None and (shape["width"], shape["nz"]) == LEGACY_STUDENT_SHAPES.get(d["student"]):
        d.pop("student_shape")
    return config_hash(d)


def _distillation_specs(req: GridRequest, normal_class: int, seed: int,
                        arms: tuple[str, ...] | None = None) -> list[RunSpec]:
    teacher = _edegan_spec(_teacher_config(req, normal_class, seed), "teacher")
    specs = [teacher]
    for arm, dcfg in distillation_arms(req.preset, seed, req.device):
        if arms is not None and arm not in arms:
            continue
        student = STUDENTS[req.dataset]
        config = {"teacher": teacher.name, "teacher_hash": teacher.config_hash,
                  "student": student, "student_shape": student_shape(student),
                  "distill": dcfg.to_dict(), "data_root": req.data_root}
        h = distill_hash(config)
        name = f"distill/{req.dataset}/c{normal_class}/{arm}-s{seed}-{h}"
        specs.append(RunSpec("distill", name, config, h, arm, normal_class, seed, stage=1,
                             needs=(teacher.name,)))
    return specs


def grid_key(req: GridRequest) -> str:
    """What must match for a grid folder to be extended rather than refused."""
    return config_hash({"study": req.study, "dataset": req.dataset, "preset": req.preset.key_dict(),
                        "batch_sizes": list(req.batch_sizes), "constraint": req.constraint})
