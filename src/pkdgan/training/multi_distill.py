"""K students distilled at once from frozen teachers, each at batch size 1 (``multi`` for P-KDGAN).

While the teacher is frozen (structures 1 and 2: a single run of either, or progressive step 1)
a student is an EDE-GAN trained with one more generator term, K = w1*K1 + wx*Kx + w2*K2 against
fixed targets: the teacher's eval-mode outputs for each image, computed once per member with
``distill.teacher_outputs`` exactly as ``distill.ModuleDistillEngine`` does. So the students of a group
(one per teacher run: class, seed) share ``multi.StackedGan``'s batch-1 step, with K added through
its ``ExtraLoss`` hook. The student-side projection (nz_s -> nz_t) is stacked too and updated by
the generator's Adam, as ``distill`` puts it in the student's generator optimizer; it runs even
when w1 = w2 = 0, because ``distill`` then still logs K1/K2 through it and gives it (zero)
gradients, which advance its Adam step counts.

Order of updates: ``distill_step`` for structure 2 is ``train.gan_step`` plus K in the generator
loss (G forward, D on x and x_hat for feature matching, G update, then D's step on the same x and
the detached x_hat with D's weights unchanged), which is the order ``StackedGan.step`` repeats with
one D forward (see ``multi``). Structure 1 is G's step alone (``step_generator_only``), D untouched.

Each member keeps what ``distill`` keeps: the student init and shuffling of ``dcfg.seed``, its own
global-RNG stream (discriminator re-initialisation), its per-epoch history rows and checkpoints in
``distill``'s own format (``save_state``). The teacher-trained epochs that follow (progressive
step 2: teacher and student change together, a different model per member) run per member through
the one loop with ``distill``'s module engine, from exactly the state the stacked epochs left.
``tests/test_multi_distill.py`` checks that weights and scores equal ``distill``'s.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pkdgan.core.config import DataConfig, DistillConfig, ModelConfig, RunConfig
from pkdgan.core.device import resolve_device
from pkdgan.core.errors import DivergenceError, UsageError
from pkdgan.core.registry import check_student_shape
from pkdgan.data.datasets import OneClassSplit
from pkdgan.models.edegan import EDEGANModel
from pkdgan.models.losses import distillation_loss
from pkdgan.training.distill import (
    DISTILL_HOOKS,
    Outputs,
    Pair,
    alone_config,
    alone_info,
    distill_member,
    distill_row,
    finish_info,
    make_plan,
    teacher_auroc_before,
    teacher_outputs,
    train_member,
)
from pkdgan.training.loop import Hooks, Member, run_loop
from pkdgan.training.multi import StackedEngine, fit_many, named
from pkdgan.training.stacked_engine import (
    ExtraLoss,
    GanState,
    ParamGroup,
    StackedGan,
    stack_modules,
    write_group,
)

S_KEYS = ("s_g_adversarial", "s_g_contextual", "s_g_latent", "s_g_constraint", "s_g_total", "s_d")
K_KEYS = ("k1", "kx", "k2", "k_total")


@dataclass
class Job:
    """One student to distil: ``distill``'s arguments."""

    teacher: EDEGANModel
    student_cfg: ModelConfig
    split: OneClassSplit
    dcfg: DistillConfig
    run_dir: Path | None = None
    resume: bool = False
    config_json: str = "{}"


@dataclass
class DistillResult:
    """What ``distill`` returns for one job, or the divergence that stopped it."""

    student: EDEGANModel
    teacher: EDEGANModel
    info: dict[str, Any]
    error: DivergenceError | None = None


def frozen_epochs(dcfg: DistillConfig) -> int:
    """How many leading epochs of ``dcfg``'s plan learn from a frozen teacher (the stackable ones)."""
    n = 0
    for _, structure in make_plan(dcfg):
        if structure.teacher_trained:
            break
        n += 1
    return n


def _same_but_seed(a: DistillConfig, b: DistillConfig) -> bool:
    return dataclasses.replace(a, seed=b.seed) == b


def stack_reason(jobs: Sequence[Job]) -> str | None:
    """Why these jobs cannot share one stack, or None when they can."""
    if not jobs:
        return "no students to distil"
    base = jobs[0]
    if base.dcfg.mode == "alone":
        return "mode alone trains without a teacher"
    if base.dcfg.batch_size != 1:
        return f"stacking is for batch size 1, got {base.dcfg.batch_size}"
    if base.dcfg.precision != "fp32":
        return f"stacking is float32 only, got {base.dcfg.precision}"
    if frozen_epochs(base.dcfg) == 0:
        return f"structure {base.dcfg.structure} trains the teacher: no frozen-teacher epochs to stack"
    for j in jobs:
        if not _same_but_seed(j.dcfg, base.dcfg):
            return "the students' distillation settings differ (only the seed may)"
        if j.student_cfg != base.student_cfg:
            return "the students' model configs differ"
        if j.teacher.cfg.nz != base.teacher.cfg.nz:
            return "the teachers' latent sizes differ (the projections would not stack)"
    return None


def _start(job: Job, device: torch.device) -> Member:
    """``distill``'s set-up for one job as a loop member, with its RNG stream kept aside; its
    ``tag`` is (job, teacher AUROC before); the stacked epochs end at ``stop``."""
    check_student_shape(job.student_cfg, job.teacher.cfg)
    before = teacher_auroc_before(job.teacher, job.split, job.dcfg, device)
    m = distill_member(job.teacher, job.student_cfg, job.split, job.dcfg, device, job.run_dir,
                       job.resume, job.config_json, stream=True)
    m.tag, m.stop = (job, before), frozen_epochs(job.dcfg)
    return m


class _KLoss:
    """K per model against the current images' teacher outputs (``target``), via the stacked
    projection when there is one; the ``ExtraLoss`` of the stacked step."""

    def __init__(self, dcfg: DistillConfig, projection: ParamGroup | None) -> None:
        self.projection = projection
        self.fn = torch.func.vmap(functools.partial(distillation_loss, w1=dcfg.w1, wx=dcfg.wx,
                                                    w2=dcfg.w2, scale=dcfg.k_scale))
        self.target: Outputs | None = None

    def _project(self, z: torch.Tensor) -> torch.Tensor:
        if self.projection is None:
            return z
        p = self.projection.params
        return torch.baddbmm(p["bias"].unsqueeze(1), z, p["weight"].transpose(1, 2))

    def __call__(self, z: torch.Tensor, x_hat: torch.Tensor, z_hat: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
        assert self.target is not None
        return self.fn((self._project(z), x_hat, self._project(z_hat)), self.target)


def stack_pairs(pairs: list[Pair], template: EDEGANModel, dcfg: DistillConfig
                ) -> tuple[StackedGan, _KLoss, ExtraLoss]:
    """The students (and projections) of ``pairs`` stacked, with the K term of their step; set
    ``kloss.target`` to the teachers' outputs for the step's images before each step."""
    stack = StackedGan([p.student for p in pairs], template)
    projection = None
    if not isinstance(pairs[0].projection, nn.Identity):
        projection = stack_modules([p.projection for p in pairs], [p.student.opt_g for p in pairs])
    kloss = _KLoss(dcfg, projection)
    return stack, kloss, ExtraLoss(kloss, projection)


class StackedDistillEngine(StackedEngine):
    """``StackedEngine`` for frozen-teacher epochs: the students' GAN step (structure 2) or G's
    step alone (structure 1), with K against the teachers' precomputed outputs added."""

    d_key = "s_d"

    def __init__(self, members: list[Member], template: EDEGANModel, device: torch.device) -> None:
        job: Job = members[0].tag[0]
        self.dcfg, self.structure = job.dcfg, members[0].structure
        for m in members:
            m.owner.set_structure(self.structure)
        splits = [m.tag[0].split.train for m in members]
        parts = [teacher_outputs(m.owner.teacher.model.generator, x)
                 for m, x in zip(members, splits, strict=True)]
        self.t_all = [torch.cat([p[j] for p in parts]).to(device) for j in range(3)]
        run = RunConfig(model=job.student_cfg, loss=self.dcfg.gan, train=self.dcfg.train_config())
        super().__init__(members, splits, template, device, run)

    def state(self, m: Member) -> GanState:
        return m.owner.student

    def restack(self, members: list[Member]) -> None:
        self.stack, self.kloss, self.extra = (stack_pairs([m.owner for m in members], self.template,
                                                          self.dcfg) if members else (None, None, None))

    def forward(self, idx: torch.Tensor) -> tuple[list[list[float]], tuple[str, ...]]:
        assert self.stack is not None and self.kloss is not None and self.extra is not None
        self.kloss.target = tuple(t[idx].unsqueeze(1) for t in self.t_all)  # type: ignore[assignment]
        if self.structure.student_gan:
            return self.stack.step(self.x_all[idx], self.run, self.extra), S_KEYS + K_KEYS
        return self.stack.step_generator_only(self.x_all[idx], self.extra), K_KEYS

    def snapshot(self, i: int, m: Member) -> dict[str, torch.Tensor]:
        """``StackedEngine``'s snapshot plus the projection's row (the generator's optimiser
        updates it, as ``distill``'s recovery restores it with the student)."""
        snap = super().snapshot(i, m)
        group = self.extra.group if self.extra is not None else None
        if group is not None:
            for tag, t in (("p", group.params), ("m", group.exp_avg), ("v", group.exp_avg_sq)):
                snap |= {f"proj.{tag}.{n}": x[i].detach().clone() for n, x in t.items()}
            snap["proj.steps"] = group.steps[:, i].clone()
        return snap

    @torch.no_grad()
    def recover(self, i: int, m: Member, good: dict[str, torch.Tensor]) -> None:
        group = self.extra.group if self.extra is not None else None
        if group is not None:
            for tag, t in (("p", group.params), ("m", group.exp_avg), ("v", group.exp_avg_sq)):
                for n, x in t.items():
                    x[i].copy_(good[f"proj.{tag}.{n}"])
            group.steps[:, i] = good["proj.steps"]
        super().recover(i, m, good)

    def sync(self, i: int, m: Member) -> None:
        super().sync(i, m)
        if self.extra is not None and self.extra.group is not None:
            write_group(self.extra.group, i, m.owner.projection, m.owner.student.opt_g)


def _end_epoch(m: Member, seconds: float) -> dict[str, Any]:
    """The history row of a stacked epoch (the loop writes it, then the checkpoint)."""
    return distill_row(m, seconds)


STACKED_HOOKS = Hooks(lambda m, seconds: _end_epoch(m, seconds), DISTILL_HOOKS.save,
                      postfix=DISTILL_HOOKS.postfix)


def distill_many(jobs: Sequence[Job], progress: bool = True) -> list[DistillResult]:
    """``distill`` for every job, their frozen-teacher epochs trained together; one result each.

    The epochs after those (progressive step 2) run per job through the same loop with
    ``distill``'s module engine. A job that diverges stops with ``DistillResult.error`` set while
    the others go on.
    """
    reason = stack_reason(jobs)
    if reason is not None:
        raise UsageError(f"cannot distil these students together: {reason}")
    device = resolve_device(jobs[0].dcfg.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        members = [_start(j, device) for j in jobs]
        todo = [m for m in members if not m.done]
        if todo:
            for m in todo:
                m.info["trained_together"] = len(todo)
            torch.manual_seed(jobs[0].dcfg.seed)
            template = EDEGANModel(jobs[0].student_cfg).to(device)
            engine = StackedDistillEngine(todo, template, device)
            run_loop(todo, engine, STACKED_HOOKS, desc=f"distill x{len(todo)}", progress=progress)
        return [_finish(m, device, progress) for m in members]


def _finish(m: Member, device: torch.device, progress: bool) -> DistillResult:
    """The remaining (teacher-trained) epochs through the loop's module engine, then the summary."""
    job, before = m.tag
    pair: Pair = m.owner
    if m.error is None:
        rng, m.rng, m.stop = m.rng, None, len(m.plan)
        with rng.active():
            train_member(m, job.split, job.dcfg, device, progress)
    if m.error is not None:
        return DistillResult(pair.student.model, pair.teacher.model, m.info, named(m, m.error))
    info = finish_info(pair, job.split, job.dcfg, m.info, before)
    return DistillResult(pair.student.model, pair.teacher.model, info)


def alone_many(jobs: Sequence[Job], data: Sequence[DataConfig], resume: bool = False,
               progress: bool = True) -> list[DistillResult]:
    """The ``alone`` baseline (the student trained without a teacher) for several jobs at once:
    ``distill``'s alone mode is ``train.fit``, so the students train as one ``multi.fit_many``
    stack at batch size 1, with the same results as one by one."""
    device = resolve_device(jobs[0].dcfg.device)
    for j in jobs:
        check_student_shape(j.student_cfg, j.teacher.cfg)
    befores = [teacher_auroc_before(j.teacher, j.split, j.dcfg, device) for j in jobs]
    cfgs = [alone_config(j.student_cfg, j.dcfg, d) for j, d in zip(jobs, data, strict=True)]
    fits = fit_many(cfgs, [j.split for j in jobs], [j.run_dir for j in jobs], resume=resume,
                    progress=progress)
    return [DistillResult(f.model, j.teacher, alone_info(f.info, b), f.error)
            for j, f, b in zip(jobs, fits, befores, strict=True)]
