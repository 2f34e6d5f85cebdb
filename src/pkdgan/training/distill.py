"""P-KDGAN: distilling a trained EDE-GAN teacher into a much smaller student.

Structures (``DistillConfig`` docs the numbering): 1 = teacher frozen, student learns from K
only; 2 = frozen, student K + its own GAN loss; 3 = teacher and student trained jointly (teacher
GAN loss + K, student K + GAN loss); 4 = joint, student K only. Progressive distillation runs a
frozen step (default 2) then a joint step (default 3), the paper's best combination.

Per training step: both generators' forward passes, one backward of
``K + [student GAN loss] + [teacher GAN loss]`` (K's gradient reaches the teacher only when it
is trained), generator updates, then each trained model's own discriminator step. A frozen
teacher runs in eval mode with ``requires_grad`` off, and its outputs for the training set are
computed once per frozen step: it is deterministic, so this is exact and saves its forward pass.

When the student's nz differs from the teacher's, a learned linear map on the **student side**
(nz_s -> nz_t, trained with the student's generator, used by K1 and K2 only) carries student
latents into the teacher's space. It is not part of the scoring path (the student's score
stays in its own latent space; its FLOPs are not counted). A map on the teacher's side could
shrink the target toward zero."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, DistillConfig, ModelConfig, RunConfig, steps_per_epoch
from pkdgan.core.device import resolve_device
from pkdgan.core.registry import (  # noqa: F401  (resolve_student: distill's API)
    check_student_shape,
    resolve_student,
)
from pkdgan.data.datasets import OneClassSplit
from pkdgan.evaluation.latent_views import latent_view_aurocs
from pkdgan.evaluation.metrics import evaluate_scores, has_both_labels
from pkdgan.evaluation.split_scores import scores_and_choice
from pkdgan.models.edegan import EDEGANModel
from pkdgan.models.losses import distillation_loss
from pkdgan.training.averaging import tail_average
from pkdgan.training.checkpoints import load_state, save_state
from pkdgan.training.loop import (
    EpochLog,
    Hooks,
    Member,
    Phase,
    RngStream,
    Structure,
    active,
    expand,
    run_loop,
)
from pkdgan.training.train import (
    GanState,
    autocast,
    discriminator_step,
    fit,
    generator_terms,
    make_adam,
    warn_if_emulated,
    warn_if_few_steps,
)

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


STRUCTURES = {
    1: Structure(1, teacher_trained=False, student_gan=False),
    2: Structure(2, teacher_trained=False, student_gan=True),
    3: Structure(3, teacher_trained=True, student_gan=True),
    4: Structure(4, teacher_trained=True, student_gan=False),
}
# Every history row carries every column, so rows of different structures line up.
HISTORY_KEYS = ("k1", "kx", "k2", "k_total", "s_g_adversarial", "s_g_contextual", "s_g_latent",
                "s_g_constraint", "s_g_total", "s_d", "t_g_adversarial", "t_g_contextual",
                "t_g_latent", "t_g_constraint", "t_g_total", "t_d")


def make_projection(student_nz: int, teacher_nz: int) -> nn.Module:
    """Student-side nz_s -> nz_t linear map for K1/K2, or identity when the sizes agree."""
    return nn.Identity() if student_nz == teacher_nz else nn.Linear(student_nz, teacher_nz)


@dataclass
class Pair:
    """Student and teacher with their optimizers, plus the student-side latent projection."""

    student: GanState
    teacher: GanState
    projection: nn.Module
    teacher_changed: bool = False

    def project(self, out: Outputs) -> Outputs:
        z, x_hat, z_hat = out
        return self.projection(z), x_hat, self.projection(z_hat)

    def set_structure(self, structure: Structure) -> None:
        """Frozen teacher: eval mode, no gradients (bit-identical weights and BN buffers)."""
        t = self.teacher.model
        t.train(structure.teacher_trained)
        t.requires_grad_(structure.teacher_trained)
        if structure.teacher_trained:
            self.teacher_changed = True


@torch.no_grad()
def teacher_outputs(generator: nn.Module, x: torch.Tensor, batch_size: int = 256) -> Outputs:
    """Eval-mode (z, x_hat, z_hat) of every image in ``x``, kept on the CPU like ``x``."""
    device = next(generator.parameters()).device
    parts = [generator(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    return tuple(torch.cat([p[j] for p in parts]).cpu() for j in range(3))  # type: ignore[return-value]


def distill_step(pair: Pair, x: torch.Tensor, structure: Structure, dcfg: DistillConfig,
                 target: Outputs | None) -> dict[str, float]:
    """One update of the trained model(s); ``target`` is the frozen teacher's output for ``x``."""
    s, t = pair.student, pair.teacher
    out: dict[str, float] = {}
    loss = x.new_zeros(())
    with autocast(dcfg.precision, x.device):
        if structure.teacher_trained:
            t_terms, t_xhat, target = generator_terms(t.model, x, dcfg.gan)
            loss = loss + t_terms["total"]
            out |= {f"t_g_{k}": v.item() for k, v in t_terms.items()}
        assert target is not None, "a frozen teacher's outputs must be given"
        if structure.student_gan:
            s_terms, s_xhat, s_out = generator_terms(s.model, x, dcfg.gan)
            loss = loss + s_terms["total"]
            out |= {f"s_g_{k}": v.item() for k, v in s_terms.items()}
        else:
            s_out = s.model.generator(x)
            s_xhat = s_out[1]
        if structure.teacher_trained and not dcfg.teacher_k_grad:
            target = tuple(v.detach() for v in target)  # type: ignore[assignment]
        k = distillation_loss(pair.project(s_out), target, dcfg.w1, dcfg.wx, dcfg.w2, dcfg.k_scale)
        loss = loss + k["total"]
    out |= {"k1": k["k1"].item(), "kx": k["kx"].item(), "k2": k["k2"].item(),
            "k_total": k["total"].item()}
    s.opt_g.zero_grad(set_to_none=True)
    if structure.teacher_trained:
        t.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    s.opt_g.step()
    if structure.teacher_trained:
        t.opt_g.step()
    if structure.student_gan:
        out["s_d"] = discriminator_step(s, x, s_xhat, dcfg.d_reinit_threshold,
                                         dcfg.precision).item()
    if structure.teacher_trained:
        out["t_d"] = discriminator_step(t, x, t_xhat, dcfg.d_reinit_threshold,
                                         dcfg.precision).item()
    return out


def auroc(generator: nn.Module, split: OneClassSplit, score: str) -> float | None:
    """Test AUROC of one generator (reported, never used to choose anything); None when the
    split has no labelled test set with both kinds of images (e.g. fitting from the Python API)."""
    if not has_both_labels(split.test_labels):
        return None

    s, choice = scores_and_choice(generator, split, score)
    return float(evaluate_scores(s[choice["score"]], split.test_labels)["auroc"])


def epoch_row(epoch: int, step: int, structure: Structure, log: EpochLog, pair: Pair,
              seconds: float, n: int) -> dict[str, Any]:
    """One epoch's history row (every column of ``HISTORY_KEYS``, blank where unused)."""
    means = log.means()
    return {"epoch": epoch + 1, "step": step + 1, "structure": structure.number,
            **{k: f"{means[k]:.6g}" if k in means else "" for k in HISTORY_KEYS},
            "d_reinits": pair.student.d_reinits, "teacher_d_reinits": pair.teacher.d_reinits,
            "seconds": f"{seconds:.2f}", "images_per_second": f"{n / seconds:.2f}"}


def _weights_finite(pair: Pair, structure: Structure) -> bool:
    mods = [pair.student.model, pair.projection] + ([pair.teacher.model] if structure.teacher_trained else [])
    return all(bool(torch.isfinite(p).all()) for mod in mods for p in mod.parameters())


class ModuleDistillEngine:
    """The loop's strategy for a student (and teacher) as modules with Adam, any batch size
    (``distill_step``); a frozen teacher's outputs are computed once per frozen run of epochs."""

    def __init__(self, x_all: torch.Tensor, dcfg: DistillConfig, device: torch.device) -> None:
        self.x_all, self.dcfg, self.device = x_all, dcfg, device
        self.targets: dict[int, Outputs | None] = {}

    def begin_epoch(self, i: int, m: Member) -> None:
        pair, structure = m.owner, m.structure
        pair.set_structure(structure)
        if structure.teacher_trained:
            self.targets[id(m)] = None
        elif self.targets.get(id(m)) is None:
            self.targets[id(m)] = teacher_outputs(pair.teacher.model.generator, self.x_all)

    def step(self, members: list[Member]) -> list[dict[str, float]]:
        out = []
        for m in members:
            idx, targets = m.indices(), self.targets.get(id(m))
            target = None if targets is None else tuple(a[idx].to(self.device) for a in targets)
            with active(m.rng):
                out.append(distill_step(m.owner, self.x_all[idx].to(self.device), m.structure,
                                        self.dcfg, target))  # type: ignore[arg-type]
        return out

    def weights_finite(self, i: int, m: Member) -> bool:
        return _weights_finite(m.owner, m.structure)

    def snapshot(self, i: int, m: Member) -> dict[str, Any]:
        pair: Pair = m.owner
        return copy.deepcopy({
            "student": pair.student.model.state_dict(), "projection": pair.projection.state_dict(),
            "s_opt_g": pair.student.opt_g.state_dict(), "teacher": pair.teacher.model.state_dict(),
            "t_opt_g": pair.teacher.opt_g.state_dict()})

    def recover(self, i: int, m: Member, good: dict[str, Any]) -> None:
        """Student (and a trained teacher) back to the epoch's start with fresh discriminators."""
        pair: Pair = m.owner
        pair.student.model.load_state_dict(good["student"])
        pair.projection.load_state_dict(good["projection"])
        pair.student.opt_g.load_state_dict(copy.deepcopy(good["s_opt_g"]))
        pair.student.model.reinit_discriminator()
        pair.student.opt_d.state.clear()
        if m.structure.teacher_trained:
            pair.teacher.model.load_state_dict(good["teacher"])
            pair.teacher.opt_g.load_state_dict(copy.deepcopy(good["t_opt_g"]))
            pair.teacher.model.reinit_discriminator()
            pair.teacher.opt_d.state.clear()

    def sync(self, i: int, m: Member) -> None:
        pass

    def leave(self, keep: list[int], members: list[Member]) -> None:
        pass


def distill_row(m: Member, seconds: float) -> dict[str, Any]:
    """The history row of the member's epoch that just ended."""
    step, structure = m.plan[m.epoch - 1]
    return epoch_row(m.epoch - 1, step, structure, m.log, m.owner, seconds, m.n)


def distill_save(m: Member) -> None:
    assert m.run_dir is not None
    save_state(m.run_dir, m.owner, m.epoch, m.shuffle, m.config_json, m.info, m.average)


def _postfix(m: Member, losses: dict[str, float]) -> dict[str, Any]:
    return {"epoch": m.epoch + 1, "structure": m.structure.number, "k": f"{losses['k_total']:.3f}"}


DISTILL_HOOKS = Hooks(distill_row, distill_save, postfix=_postfix)
EpochProbe = Callable[[int, nn.Module, nn.Module | None], None]


def distill_hooks(on_epoch: EpochProbe | None) -> Hooks:
    """``DISTILL_HOOKS``, and ``on_epoch(epochs done, student generator, the teacher's generator
    if that epoch trained it else None)`` after every epoch (e.g. ``evaluation.trace``)."""

    def after(m: Member) -> None:
        teacher = m.owner.teacher.model.generator if m.plan[m.epoch - 1][1].teacher_trained else None
        on_epoch(m.epoch, m.owner.student.model.generator, teacher)  # type: ignore[misc]

    return DISTILL_HOOKS if on_epoch is None else dataclasses.replace(DISTILL_HOOKS, after_epoch=after)


def make_plan(dcfg: DistillConfig) -> list[tuple[int, Structure]]:
    """(step index, structure) for every epoch of ``dcfg``'s schedule."""
    return expand([Phase(STRUCTURES[number], epochs) for number, epochs in dcfg.schedule()])


def make_pair(teacher: EDEGANModel, student_cfg: ModelConfig, dcfg: DistillConfig,
              device: torch.device) -> tuple[Pair, torch.Generator]:
    """Seeded student, projection and optimizers, and the shuffling generator.

    Seeding here gives the student the init and data order of ``fit`` with ``dcfg.seed``; the
    global RNG is left where the discriminator's re-initialisations draw from.
    """
    torch.manual_seed(dcfg.seed)
    shuffle = torch.Generator().manual_seed(dcfg.seed)
    s_train, t_train = dcfg.train_config(), dcfg.train_config(teacher=True)
    student = EDEGANModel(student_cfg).to(device)
    projection = make_projection(student_cfg.nz, teacher.cfg.nz).to(device)
    pair = Pair(
        GanState(student, make_adam([*student.generator.parameters(), *projection.parameters()],
                                    s_train, device),
                 make_adam(student.discriminator.parameters(), s_train, device)),
        GanState(teacher, make_adam(teacher.generator.parameters(), t_train, device),
                 make_adam(teacher.discriminator.parameters(), t_train, device)),
        projection,
    )
    return pair, shuffle


def distill_member(teacher: EDEGANModel, student_cfg: ModelConfig, split: OneClassSplit,
                   dcfg: DistillConfig, device: torch.device, run_dir: Path | None, resume: bool,
                   config_json: str, stream: bool = False) -> Member:
    """``distill``'s set-up of one student as a loop member: a fresh start, or the last
    checkpoint of an interrupted run; with ``stream`` its global-RNG stream is kept aside."""
    pair, shuffle = make_pair(teacher, student_cfg, dcfg, device)
    n, plan = len(split.train), make_plan(dcfg)
    average = tail_average({"generator": pair.student.model.generator,
                            "projection": pair.projection}, dcfg.average_last, len(plan))
    if run_dir is not None and resume and (run_dir / runs.TRAIN_STATE).is_file():
        start, info = load_state(run_dir, pair, shuffle, average)
    else:
        start, info = 0, {"train_seconds": 0.0, "step_seconds": [0.0] * len(dcfg.schedule())}
    return Member(pair, n, dcfg.batch_size, steps_per_epoch(n, dcfg.batch_size, dcfg.drop_last),
                  plan, len(plan), start, shuffle, info, run_dir,
                  dcfg.train_config().on_divergence, RngStream(device) if stream else None,
                  config_json, average=average)


def train_member(m: Member, split: OneClassSplit, dcfg: DistillConfig, device: torch.device,
                 progress: bool, on_epoch: EpochProbe | None = None) -> None:
    """The member's remaining epochs through the one loop with the module engine."""
    run_loop([m], ModuleDistillEngine(split.train, dcfg, device), distill_hooks(on_epoch),
             desc="distill", progress=progress)


def finish_info(pair: Pair, split: OneClassSplit, dcfg: DistillConfig, info: dict[str, Any],
                before: float | None) -> dict[str, Any]:
    """Leave both models in eval mode; ``info`` completed with totals and teacher AUROCs."""
    teacher, student, projection = pair.teacher.model, pair.student.model, pair.projection
    teacher.requires_grad_(True)
    teacher.eval()
    student.eval()
    after = auroc(teacher.generator, split, dcfg.score) if pair.teacher_changed else before
    total, n = dcfg.total_epochs(), len(split.train)
    info.update(
        epochs=total, schedule=[list(s) for s in dcfg.schedule()], n_train=n,
        d_reinits=pair.student.d_reinits, teacher_d_reinits=pair.teacher.d_reinits,
        teacher_changed=pair.teacher_changed, teacher_auroc_before=before, teacher_auroc_after=after,
        projection=(None if isinstance(projection, nn.Identity)
                    else f"student side: linear {student.cfg.nz} -> {teacher.cfg.nz}"),
        latent_view_aurocs=latent_view_aurocs(student.generator, teacher.generator, projection.eval(),
                                              split.test, split.test_labels),
        seconds_per_epoch=info["train_seconds"] / max(total, 1),
        images_per_second=n * total / max(info["train_seconds"], 1e-9),
    )
    return info


def teacher_auroc_before(teacher: EDEGANModel, split: OneClassSplit, dcfg: DistillConfig,
                         device: torch.device) -> float | None:
    """Move the teacher to ``device`` in eval mode and report its test AUROC before distillation."""
    teacher.to(device).eval()
    return auroc(teacher.generator, split, dcfg.score)


def alone_config(student_cfg: ModelConfig, dcfg: DistillConfig, data: DataConfig | None) -> RunConfig:
    """The ``alone`` baseline's run: the student trained by ``train.fit`` with ``dcfg``'s settings."""
    return RunConfig(model=student_cfg, loss=dcfg.gan, data=data or DataConfig(),
                     train=dcfg.train_config())


def alone_info(info: dict[str, Any], before: float | None) -> dict[str, Any]:
    """``fit``'s info with the teacher fields a distillation run reports (the teacher never trains)."""
    return info | {"teacher_auroc_before": before, "teacher_auroc_after": before,
                   "teacher_changed": False}


def distill(teacher: EDEGANModel, student_cfg: ModelConfig, split: OneClassSplit,
            dcfg: DistillConfig, run_dir: Path | None = None, progress: bool = True, *,
            data: DataConfig | None = None, resume: bool = False, config_json: str = "{}",
            on_epoch: EpochProbe | None = None) -> tuple[EDEGANModel, EDEGANModel, dict[str, Any]]:
    """Train a student from ``teacher`` on ``split.train``; returns (student, teacher, info).

    The teacher is fine-tuned in place in joint steps. ``mode="alone"`` trains the student
    without the teacher through ``train.fit`` (``data`` then names the data in its run config).
    ``info`` holds ``teacher_auroc_before`` / ``teacher_auroc_after`` (equal when the teacher
    never trained) and timings. With ``run_dir``, each epoch is checkpointed (``resume`` goes on
    from the last one). ``on_epoch`` is a probe after every epoch (``distill_hooks``).
    """
    check_student_shape(student_cfg, teacher.cfg)
    device = resolve_device(dcfg.device)
    if dcfg.mode != "alone":  # alone trains through fit, which warns itself
        warn_if_emulated(dcfg.precision, device)
        warn_if_few_steps(len(split.train), dcfg.train_config())
    before = teacher_auroc_before(teacher, split, dcfg, device)
    if dcfg.mode == "alone":
        probe = None if on_epoch is None else (
            lambda epoch, model: on_epoch(epoch, model.generator, None))
        student, info = fit(alone_config(student_cfg, dcfg, data), split, run_dir, resume=resume,
                            progress=progress, on_epoch=probe)
        return student, teacher, alone_info(info, before)

    m = distill_member(teacher, student_cfg, split, dcfg, device, run_dir, resume, config_json)
    train_member(m, split, dcfg, device, progress, on_epoch)
    if m.error is not None:
        raise m.error
    return m.owner.student.model, teacher, finish_info(m.owner, split, dcfg, m.info, before)
