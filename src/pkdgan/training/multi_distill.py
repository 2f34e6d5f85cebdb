"""K students distilled at once from frozen teachers, each at batch size 1 (``multi`` for P-KDGAN).

While the teacher is frozen (structures 1 and 2: a single run of either, or progressive step 1)
a student is an EDE-GAN trained with one more generator term, K = w1*K1 + wx*Kx + w2*K2 against
fixed targets: the teacher's eval-mode outputs for each image, computed once per member with
``distill.teacher_outputs`` exactly as ``distill._train_epochs`` does. So the students of a group
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
``distill``'s own loop, from exactly the state the stacked epochs left. ``tests/test_multi_distill.py``
checks that weights and scores equal ``distill``'s.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, DistillConfig, ModelConfig, RunConfig
from pkdgan.core.errors import DivergenceError, UsageError
from pkdgan.data.datasets import OneClassSplit
from pkdgan.models.edegan import EDEGANModel
from pkdgan.models.losses import distillation_loss
from pkdgan.training.checkpoints import save_state
from pkdgan.training.distill import (
    Outputs,
    Pair,
    Structure,
    alone_config,
    alone_info,
    check_student_shape,
    epoch_row,
    finish_info,
    make_pair,
    make_plan,
    run_plan,
    start_state,
    teacher_auroc_before,
    teacher_outputs,
)
from pkdgan.training.multi import fit_many
from pkdgan.training.stacked_engine import (
    ExtraLoss,
    ParamGroup,
    RngStream,
    StackedGan,
    stack_modules,
    write_group,
)
from pkdgan.training.train import EpochLog, check_finite, resolve_device

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


@dataclass
class _Member:
    job: Job
    pair: Pair
    shuffle: torch.Generator
    plan: list[tuple[int, Structure]]
    stop: int  # the stacked epochs end here
    epoch: int
    info: dict[str, Any]
    before: float | None
    rng: RngStream
    offset: int = 0
    pos: int = 0
    perm: list[int] = field(default_factory=list)
    log: EpochLog = field(default_factory=EpochLog)
    t0: float = 0.0
    error: DivergenceError | None = None

    @property
    def n(self) -> int:
        return len(self.job.split.train)

    @property
    def stacked_done(self) -> bool:
        return self.error is not None or self.epoch >= self.stop


def _start(job: Job, device: torch.device) -> _Member:
    """``distill``'s set-up for one job, with its RNG stream kept aside."""
    check_student_shape(job.student_cfg, job.teacher.cfg)
    before = teacher_auroc_before(job.teacher, job.split, job.dcfg, device)
    pair, shuffle = make_pair(job.teacher, job.student_cfg, job.dcfg, device)
    start, info = start_state(pair, shuffle, job.dcfg, job.run_dir, job.resume)
    return _Member(job, pair, shuffle, make_plan(job.dcfg), frozen_epochs(job.dcfg), start, info,
                   before, RngStream(device))


class _KLoss:
    """K per model against the current images' teacher outputs (``target``), via the stacked
    projection when there is one; the ``ExtraLoss`` of the stacked step."""

    def __init__(self, dcfg: DistillConfig, projection: ParamGroup | None) -> None:
        self.projection = projection
        self.fn = torch.func.vmap(functools.partial(distillation_loss, w1=dcfg.w1, wx=dcfg.wx,
                                                    w2=dcfg.w2))
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


def _stack(active: list[_Member], template: EDEGANModel, dcfg: DistillConfig
           ) -> tuple[StackedGan, _KLoss, ExtraLoss]:
    return stack_pairs([m.pair for m in active], template, dcfg)


def _write_back(m: _Member, stack: StackedGan, extra: ExtraLoss, i: int) -> None:
    stack.write_back(i, m.pair.student)
    if extra.group is not None:
        write_group(extra.group, i, m.pair.projection, m.pair.student.opt_g)


def _begin_epoch(m: _Member) -> None:
    m.t0 = time.perf_counter()
    m.log = EpochLog()
    m.perm = torch.randperm(m.n, generator=m.shuffle).tolist()
    m.pos = 0


def _end_epoch(m: _Member, stack: StackedGan, extra: ExtraLoss, i: int) -> None:
    """``_train_epochs``' end of epoch: timings, history row, checkpoint."""
    seconds = time.perf_counter() - m.t0
    step, structure = m.plan[m.epoch]
    m.info["train_seconds"] += seconds
    m.info["step_seconds"][step] += seconds
    m.epoch += 1
    run_dir = m.job.run_dir
    if run_dir is not None or m.stacked_done:
        _write_back(m, stack, extra, i)
    if run_dir is not None:
        runs.append_history(run_dir / runs.HISTORY,
                            epoch_row(m.epoch - 1, step, structure, m.log, m.pair, seconds, m.n))
        with m.rng.active():
            save_state(run_dir, m.pair, m.epoch, m.shuffle, m.job.config_json, m.info)


def _train_stacked(members: list[_Member], template: EDEGANModel, device: torch.device,
                   progress: bool) -> None:
    """The frozen-teacher epochs of every member, one image per member and step."""
    dcfg = members[0].job.dcfg
    structure = members[0].plan[members[0].epoch][1]
    for m in members:
        m.pair.set_structure(structure)
        m.info["trained_together"] = len(members)
    x_all = torch.cat([m.job.split.train for m in members]).to(device)
    parts = [teacher_outputs(m.pair.teacher.model.generator, m.job.split.train) for m in members]
    t_all = [torch.cat([p[j] for p in parts]).to(device) for j in range(3)]
    offset = 0
    for m in members:
        m.offset, offset = offset, offset + m.n
    run = RunConfig(model=members[0].job.student_cfg, loss=dcfg.gan, train=dcfg.train_config())
    bar = tqdm(total=sum((m.stop - m.epoch) * m.n for m in members), disable=not progress,
               unit="img", desc=f"distill x{len(members)}", dynamic_ncols=True, mininterval=0.5)
    active = list(members)
    stack, kloss, extra = _stack(active, template, dcfg)
    for m in active:
        _begin_epoch(m)
    while active:
        idx = torch.tensor([m.offset + m.perm[m.pos] for m in active], device=device)
        kloss.target = tuple(t[idx].unsqueeze(1) for t in t_all)  # type: ignore[assignment]
        if structure.student_gan:
            rows, keys = stack.step(x_all[idx], run, extra), S_KEYS + K_KEYS
        else:
            rows, keys = stack.step_generator_only(x_all[idx], extra), K_KEYS
        for i, m in enumerate(active):
            losses = dict(zip(keys, (r[i] for r in rows), strict=True))
            if structure.student_gan and losses["s_d"] < dcfg.d_reinit_threshold:
                with m.rng.active():
                    stack.reinit_discriminator(i)
                m.pair.student.d_reinits += 1
            try:
                check_finite(losses, m.epoch, m.pos)
            except DivergenceError as e:
                name = f"{m.job.run_dir}: " if m.job.run_dir is not None else ""
                m.error = DivergenceError(f"{name}{e}")
                _write_back(m, stack, extra, i)
                continue
            m.log.add(losses)
            m.pos += 1
            bar.update(1)
            if m.pos == m.n:
                _end_epoch(m, stack, extra, i)
                if not m.stacked_done:
                    _begin_epoch(m)
        if any(m.stacked_done for m in active):
            # the leavers are written back already; the others are re-stacked from their states
            keep = [i for i, m in enumerate(active) if not m.stacked_done]
            for i in keep:
                _write_back(active[i], stack, extra, i)
            active = [active[i] for i in keep]
            if active:
                stack, kloss, extra = _stack(active, template, dcfg)
        if active:
            bar.set_postfix(models=len(active), epoch=min(m.epoch for m in active) + 1, refresh=False)
    bar.close()


def distill_many(jobs: Sequence[Job], progress: bool = True) -> list[DistillResult]:
    """``distill`` for every job, their frozen-teacher epochs trained together; one result each.

    The epochs after those (progressive step 2) run per job with ``distill``'s own loop. A job
    that diverges stops with ``DistillResult.error`` set while the others go on.
    """
    reason = stack_reason(jobs)
    if reason is not None:
        raise UsageError(f"cannot distil these students together: {reason}")
    device = resolve_device(jobs[0].dcfg.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        members = [_start(j, device) for j in jobs]
        todo = [m for m in members if not m.stacked_done]
        if todo:
            torch.manual_seed(jobs[0].dcfg.seed)
            template = EDEGANModel(jobs[0].student_cfg).to(device)
            _train_stacked(todo, template, device, progress)
        return [_finish(m, device, progress) for m in members]


def _finish(m: _Member, device: torch.device, progress: bool) -> DistillResult:
    """The remaining (teacher-trained) epochs with ``distill``'s loop, then its summary."""
    job, pair = m.job, m.pair
    if m.error is None:
        with m.rng.active():
            try:
                run_plan(pair, m.plan, m.epoch, job.split, job.dcfg, device, m.shuffle, m.info,
                         job.run_dir, job.config_json, progress)
            except DivergenceError as e:
                name = f"{job.run_dir}: " if job.run_dir is not None else ""
                m.error = DivergenceError(f"{name}{e}")
    if m.error is not None:
        return DistillResult(pair.student.model, pair.teacher.model, m.info, m.error)
    info = finish_info(pair, job.split, job.dcfg, m.info, m.before)
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


# --- run folders -------------------------------------------------------------------------------


