"""Distillation run folders end to end: the teacher run read back, the run's config and folder,
training, then the same result files a teacher run has."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkdgan.core import locks, runs
from pkdgan.core.config import (
    DataConfig,
    DistillConfig,
    ModelConfig,
    RunConfig,
    from_dict,
)
from pkdgan.core.errors import DataError, DivergenceError, UsageError
from pkdgan.core.identity import DistillRun
from pkdgan.core.registry import resolve_student
from pkdgan.data.datasets import OneClassSplit, one_class_split
from pkdgan.evaluation.trace import TestTrace
from pkdgan.models.edegan import EDEGANModel
from pkdgan.models.flops import model_cost
from pkdgan.pipeline.results import finish_run
from pkdgan.training.distill import distill
from pkdgan.training.multi_distill import DistillResult, Job, alone_many, distill_many, stack_reason


def load_teacher(run_dir: Path) -> tuple[EDEGANModel, dict[str, Any]]:
    """A finished run's generator and discriminator as an ``EDEGANModel`` (+ its config dict)."""
    run_dir = runs.require_run(Path(run_dir))
    if not runs.is_finished(run_dir):
        raise UsageError(f"teacher run {run_dir} is not finished (no {runs.METRICS})")
    cfg = runs.read_json(run_dir / runs.CONFIG)
    if not isinstance(cfg, dict) or "model" not in cfg or "data" not in cfg:
        raise DataError(f"{run_dir / runs.CONFIG}: needs model and data configs")
    model = EDEGANModel(from_dict(ModelConfig, cfg["model"]))
    path = run_dir / runs.CHECKPOINT
    ckpt = runs.load_tensors(path)
    runs.load_module_state(model.generator, runs.unflatten_state("generator", ckpt), path)
    runs.load_module_state(model.discriminator, runs.unflatten_state("discriminator", ckpt), path)
    return model.eval(), cfg


def prepare_distill_dir(run_dir: Path, config: dict[str, Any], resume: bool) -> bool:
    """Create or check ``run_dir`` (``runs.prepare_folder``); True when an interrupted run
    should be resumed."""

    def same(saved: dict[str, Any]) -> bool:
        if saved.get("kind") == "edegan" and config["distill"]["mode"] == "alone":
            # ``train.fit`` rewrites the config of an alone run while it trains
            try:
                return RunConfig.from_dict(saved).hash() == RunConfig.from_dict(config).hash()
            except UsageError:
                return False
        return saved.get("config_hash") == config["config_hash"]

    return runs.prepare_folder(run_dir, config, same, resume)


@dataclass
class PreparedRun:
    """A distillation run folder set up (config written), with its teacher, student and split."""

    out_dir: Path
    teacher: EDEGANModel
    student_cfg: ModelConfig
    student_name: str | None
    data: DataConfig
    split: OneClassSplit
    config: dict[str, Any]
    resuming: bool

    @property
    def config_json(self) -> str:
        return json.dumps(self.config, sort_keys=True)


def distill_identity(teacher_run_dir: Path, student_name_or_cfg: str | ModelConfig,
                     dcfg: DistillConfig, data_root: str | None = None
                     ) -> tuple[EDEGANModel, ModelConfig, str | None, DataConfig, dict[str, Any]]:
    """(teacher, student config, student name, data, ``DistillRun`` dict) of a distillation run.

    The data and its split seed (the teacher's training seed, so the held-out images are ones
    the teacher never saw) are the teacher's; ``data_root`` overrides where they are read.
    """
    teacher, tcfg = load_teacher(Path(teacher_run_dir))
    student_cfg, student_name = resolve_student(student_name_or_cfg, teacher.cfg)
    data_dict = dict(tcfg["data"])
    if data_root is not None:
        data_dict["data_root"] = data_root
    data = from_dict(DataConfig, data_dict)
    split_seed = int(tcfg.get("train", {}).get("seed", 0))
    identity = DistillRun(student_cfg, data, dcfg, teacher.cfg, student_name,
                          str(Path(teacher_run_dir).resolve()), split_seed)
    return teacher, student_cfg, student_name, data, identity.to_dict()


def prepare_run(teacher_run_dir: Path, student_name_or_cfg: str | ModelConfig, dcfg: DistillConfig,
                out_dir: Path, data_root: str | None = None, resume: bool = False) -> PreparedRun:
    """``distill_run``'s set-up: teacher, student config, run config (written), data split."""

    out_dir = Path(out_dir)
    teacher, student_cfg, student_name, data, config = distill_identity(
        teacher_run_dir, student_name_or_cfg, dcfg, data_root)
    resuming = prepare_distill_dir(out_dir, config, resume)
    split = one_class_split(data, student_cfg.image_size, student_cfg.channels, config["split_seed"])
    return PreparedRun(out_dir, teacher, student_cfg, student_name, data, split, config, resuming)


def complete_run(prep: PreparedRun, dcfg: DistillConfig, student: EDEGANModel,
                 teacher: EDEGANModel, info: dict[str, Any]) -> dict[str, Any]:
    """Scores, metrics and the final checkpoint of a trained student; returns the metrics."""

    out_dir, config, data = prep.out_dir, prep.config, prep.data
    runs.write_json(out_dir / runs.CONFIG, config)
    s_cost, t_cost = model_cost(prep.student_cfg), model_cost(teacher.cfg)
    extra = info | {
        "kind": "distill", "mode": dcfg.mode, "dataset": data.dataset,
        "normal_class": data.normal_class, "seed": dcfg.seed, "batch_size": dcfg.batch_size,
        "width": prep.student_cfg.width, "nz": prep.student_cfg.nz, "student_name": prep.student_name,
        "student_params": s_cost.params, "student_flops": s_cost.flops,
        "teacher_params": t_cost.params, "teacher_flops": t_cost.flops,
        "flops_ratio": t_cost.flops / s_cost.flops, "config_hash": config["config_hash"],
        "n_holdout": len(prep.split.holdout), "teacher_run": config["teacher_run"],
    }
    metrics = finish_run(out_dir, student.generator, prep.split, dcfg.score, extra)
    (out_dir / runs.TRAIN_STATE).unlink(missing_ok=True)
    return metrics


def distill_run(teacher_run_dir: Path, student_name_or_cfg: str | ModelConfig, dcfg: DistillConfig,
                out_dir: Path, data_root: str | None = None, progress: bool = True,
                resume: bool = False, trace: bool = False) -> dict[str, Any]:
    """Teacher run folder -> distilled student run folder (same files as ``train`` writes).

    The data and its split are the teacher's (``prepare_run``); ``data_root`` overrides where
    they are read. With ``resume``, a folder that finished with the same config is read back
    (its metrics returned), as ``train_run`` does. ``trace`` writes the test AUROC after every
    epoch (``evaluation.trace``, description only).
    """
    with locks.hold(out_dir):
        if resume and runs.is_finished(Path(out_dir)):
            config = distill_identity(teacher_run_dir, student_name_or_cfg, dcfg, data_root)[-1]
            done = runs.finished_metrics(Path(out_dir), config["config_hash"])
            if done is not None:
                return done
        prep = prepare_run(teacher_run_dir, student_name_or_cfg, dcfg, out_dir, data_root, resume)
        student, teacher, info = distill(prep.teacher, prep.student_cfg, prep.split, dcfg, prep.out_dir,
                                         progress, data=prep.data, resume=prep.resuming,
                                         config_json=prep.config_json,
                                         on_epoch=TestTrace(prep.split, prep.out_dir) if trace else None)
        return complete_run(prep, dcfg, student, teacher, info)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def distill_runs(teacher_run_dirs: Sequence[Path], students: Sequence[str | ModelConfig],
                 dcfg: DistillConfig, out_dirs: Sequence[Path], data_root: str | None = None,
                 progress: bool = True, resume: bool = False, stack: bool = True,
                 note: Callable[[str], None] = _stderr, trace: bool = False) -> list[dict[str, Any]]:
    """``distill.distill_run`` for several (teacher run, student, out folder); metrics per folder.

    With ``stack`` (and batch size 1, a frozen-teacher structure, several students sharing a
    student config), their frozen-teacher epochs train together (``distill_many``), and ``alone``
    baselines train as one ``multi.fit_many`` stack (``alone_many``); otherwise, or for a group
    of one, each runs by itself, and ``note`` says why when several could not stack.
    With ``resume``, folders that finished with the same config are read back, not retrained;
    interrupted ones go on from their last epoch. Runs that finish are written before a
    divergence of another is reported. ``trace`` (the test AUROC after every epoch, description
    only) trains each student by itself.
    """
    with locks.hold_all([Path(d) for d in out_dirs]):
        if not len(teacher_run_dirs) == len(students) == len(out_dirs):
            raise UsageError("distill_runs needs one student and one out folder per teacher run")
        metrics: dict[int, dict[str, Any]] = {}
        todo: list[int] = []
        for i, (t, s, out) in enumerate(zip(teacher_run_dirs, students, out_dirs, strict=True)):
            out = Path(out)
            if resume and runs.is_finished(out):
                config = distill_identity(t, s, dcfg, data_root)[-1]
                done = runs.finished_metrics(out, config["config_hash"])
                if done is not None:
                    metrics[i] = done
                    continue
            todo.append(i)
        preps = {i: prepare_run(teacher_run_dirs[i], students[i], dcfg, out_dirs[i], data_root, resume)
                 for i in todo}
        jobs = {i: Job(p.teacher, p.student_cfg, p.split, dcfg, p.out_dir, p.resuming, p.config_json)
                for i, p in preps.items()}
        groups: dict[Any, list[int]] = {}
        for i in todo:
            key = (jobs[i].student_cfg, jobs[i].teacher.cfg.nz) if stack and not trace else i
            groups.setdefault(key, []).append(i)
        errors: list[str] = []
        for members in groups.values():
            reason = stack_reason([jobs[i] for i in members])
            if len(members) > 1 and dcfg.mode == "alone" and dcfg.batch_size == 1 \
                    and dcfg.precision == "fp32":
                results = alone_many([jobs[i] for i in members], [preps[i].data for i in members],
                                     resume, progress)
            elif len(members) > 1 and reason is None:
                results = distill_many([jobs[i] for i in members], progress)
            else:
                if len(members) > 1:
                    note(f"distilling {len(members)} students one by one: {reason}")
                results = []
                for i in members:
                    j = jobs[i]
                    probe = TestTrace(j.split, j.run_dir) if trace and j.run_dir is not None else None
                    try:
                        student, teacher, info = distill(j.teacher, j.student_cfg, j.split, dcfg, j.run_dir,
                                                         progress, data=preps[i].data, resume=j.resume,
                                                         config_json=j.config_json, on_epoch=probe)
                    except DivergenceError as e:
                        results.append(DistillResult(j.teacher, j.teacher, {}, e))
                        continue
                    results.append(DistillResult(student, teacher, info))
            for i, res in zip(members, results, strict=True):
                if res.error is not None:
                    errors.append(str(res.error))
                    continue
                metrics[i] = complete_run(preps[i], dcfg, res.student, res.teacher, res.info)
        if errors:
            raise DivergenceError("; ".join(errors))
        return [metrics[i] for i in range(len(teacher_run_dirs))]
