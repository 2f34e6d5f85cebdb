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
latents into the teacher's space. It is not part of the scoring path: the student's anomaly
score stays in its own latent space, and its FLOPs are not counted. Projecting the teacher down
instead would let the map shrink the target toward zero.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm

from pkdgan import runs
from pkdgan.config import (
    DataConfig,
    DistillConfig,
    ModelConfig,
    RunConfig,
    config_hash,
    drop_legacy,
    from_dict,
    steps_per_epoch,
)
from pkdgan.data import OneClassSplit
from pkdgan.edegan import EDEGANModel
from pkdgan.errors import DataError, UsageError
from pkdgan.evaluate import evaluate_scores, has_both_labels
from pkdgan.losses import distillation_loss
from pkdgan.train import (
    EpochLog,
    GanState,
    autocast,
    check_finite,
    discriminator_step,
    fit,
    generator_terms,
    make_adam,
    resolve_device,
)

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Structure:
    """One of the paper's four single-step structures."""

    number: int
    teacher_trained: bool
    student_gan: bool


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
        k = distillation_loss(pair.project(s_out), target, dcfg.w1, dcfg.wx, dcfg.w2)
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
    from pkdgan.results import scores_and_choice

    s, choice = scores_and_choice(generator, split, score)
    return float(evaluate_scores(s[choice["score"]], split.test_labels)["auroc"])


def _weights(pair: Pair) -> dict[str, torch.Tensor]:
    s = pair.student.model
    w = (runs.flatten_state("generator", s.generator.state_dict())
         | runs.flatten_state("discriminator", s.discriminator.state_dict())
         | runs.flatten_state("projection", pair.projection.state_dict()))
    if pair.teacher_changed:
        w |= runs.flatten_state("teacher_generator", pair.teacher.model.generator.state_dict())
    return w


_OPTIMIZERS = ("s_opt_g", "s_opt_d", "t_opt_g", "t_opt_d")


def _optimizers(pair: Pair) -> dict[str, torch.optim.Optimizer]:
    return dict(zip(_OPTIMIZERS, (pair.student.opt_g, pair.student.opt_d,
                                  pair.teacher.opt_g, pair.teacher.opt_d), strict=True))


def save_state(run_dir: Path, pair: Pair, epoch: int, shuffle: torch.Generator,
               config_json: str, info: dict[str, Any]) -> None:
    """Per-epoch checkpoint. ``train_state`` (everything a resume needs) is written first, as in
    ``train``, so a kill between the writes never mixes epochs."""
    weights = _weights(pair)
    state = dict(weights)
    if pair.teacher_changed:
        state |= runs.flatten_state("teacher_discriminator",
                                    pair.teacher.model.discriminator.state_dict())
    meta = {"epoch": str(epoch), "teacher_changed": json.dumps(pair.teacher_changed),
            "extra": json.dumps(info | {"d_reinits": pair.student.d_reinits,
                                        "teacher_d_reinits": pair.teacher.d_reinits})}
    for name, opt in _optimizers(pair).items():
        tensors, groups = runs.optimizer_to_tensors(name, opt)
        state |= tensors
        meta[name] = json.dumps(groups)
    state |= {"rng.torch": torch.get_rng_state(), "rng.shuffle": shuffle.get_state()}
    runs.save_tensors(run_dir / runs.TRAIN_STATE, state, meta)
    runs.save_tensors(run_dir / runs.CHECKPOINT, weights, {"config": config_json, "epoch": str(epoch)})


def load_state(run_dir: Path, pair: Pair, shuffle: torch.Generator) -> tuple[int, dict[str, Any]]:
    """Restore the last completed epoch of an interrupted distillation."""
    path = run_dir / runs.TRAIN_STATE
    ts = runs.load_tensors(path)
    s, t = pair.student.model, pair.teacher.model
    runs.load_module_state(s.generator, runs.unflatten_state("generator", ts), path)
    runs.load_module_state(s.discriminator, runs.unflatten_state("discriminator", ts), path)
    runs.load_module_state(pair.projection, runs.unflatten_state("projection", ts), path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if json.loads(meta["teacher_changed"]):
            pair.teacher_changed = True
            runs.load_module_state(t.generator, runs.unflatten_state("teacher_generator", ts), path)
            runs.load_module_state(t.discriminator,
                                   runs.unflatten_state("teacher_discriminator", ts), path)
        for name, opt in _optimizers(pair).items():
            runs.optimizer_from_tensors(name, opt, ts, json.loads(meta[name]))
        torch.set_rng_state(ts["rng.torch"])
        shuffle.set_state(ts["rng.shuffle"])
        extra = json.loads(meta["extra"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: unusable distillation state ({type(e).__name__}: {e}); "
                        "delete it to restart") from None
    pair.student.d_reinits = int(extra.pop("d_reinits", 0))
    pair.teacher.d_reinits = int(extra.pop("teacher_d_reinits", 0))
    return int(meta["epoch"]), extra


def check_student_shape(student_cfg: ModelConfig, teacher_cfg: ModelConfig) -> None:
    if (student_cfg.image_size, student_cfg.channels) != (teacher_cfg.image_size, teacher_cfg.channels):
        raise UsageError(
            f"student image shape {student_cfg.channels}x{student_cfg.image_size} differs from the "
            f"teacher's {teacher_cfg.channels}x{teacher_cfg.image_size}"
        )


def epoch_row(epoch: int, step: int, structure: Structure, log: EpochLog, pair: Pair,
              seconds: float, n: int) -> dict[str, Any]:
    """One epoch's history row (every column of ``HISTORY_KEYS``, blank where unused)."""
    means = log.means()
    return {"epoch": epoch + 1, "step": step + 1, "structure": structure.number,
            **{k: f"{means[k]:.6g}" if k in means else "" for k in HISTORY_KEYS},
            "d_reinits": pair.student.d_reinits, "teacher_d_reinits": pair.teacher.d_reinits,
            "seconds": f"{seconds:.2f}", "images_per_second": f"{n / seconds:.2f}"}


def _train_epochs(pair: Pair, plan: list[tuple[int, Structure]], start: int, x_all: torch.Tensor,
                  dcfg: DistillConfig, device: torch.device, shuffle: torch.Generator, bar: tqdm,
                  info: dict[str, Any], run_dir: Path | None, config_json: str) -> None:
    """Epochs ``start`` .. end of ``plan``; logs and checkpoints each one when ``run_dir`` is set."""
    n, bs = len(x_all), dcfg.batch_size
    steps = steps_per_epoch(n, bs, dcfg.drop_last)
    targets: Outputs | None = None
    for epoch in range(start, len(plan)):
        step, structure = plan[epoch]
        t0 = time.perf_counter()
        pair.set_structure(structure)
        if structure.teacher_trained:
            targets = None
        elif targets is None:
            targets = teacher_outputs(pair.teacher.model.generator, x_all)
        log = EpochLog()
        perm = torch.randperm(n, generator=shuffle)
        for i in range(steps):
            idx = perm[i * bs:(i + 1) * bs]
            target = None if targets is None else tuple(a[idx].to(device) for a in targets)
            losses = distill_step(pair, x_all[idx].to(device), structure, dcfg, target)  # type: ignore[arg-type]
            check_finite(losses, epoch, i)
            log.add(losses)
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(epoch=epoch + 1, structure=structure.number,
                                k=f"{losses['k_total']:.3f}", refresh=False)
        seconds = time.perf_counter() - t0
        info["train_seconds"] += seconds
        info["step_seconds"][step] += seconds
        if run_dir is not None:
            runs.append_history(run_dir / runs.HISTORY,
                                epoch_row(epoch, step, structure, log, pair, seconds, n))
            save_state(run_dir, pair, epoch + 1, shuffle, config_json, info)


def make_plan(dcfg: DistillConfig) -> list[tuple[int, Structure]]:
    """(step index, structure) for every epoch of ``dcfg``'s schedule."""
    return [(step, STRUCTURES[number]) for step, (number, epochs) in enumerate(dcfg.schedule())
            for _ in range(epochs)]


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


def start_state(pair: Pair, shuffle: torch.Generator, dcfg: DistillConfig, run_dir: Path | None,
                resume: bool) -> tuple[int, dict[str, Any]]:
    """(epochs done, info): a fresh start, or the last checkpoint of an interrupted run."""
    if run_dir is not None and resume and (run_dir / runs.TRAIN_STATE).is_file():
        return load_state(run_dir, pair, shuffle)
    return 0, {"train_seconds": 0.0, "step_seconds": [0.0] * len(dcfg.schedule())}


def run_plan(pair: Pair, plan: list[tuple[int, Structure]], start: int, split: OneClassSplit,
             dcfg: DistillConfig, device: torch.device, shuffle: torch.Generator,
             info: dict[str, Any], run_dir: Path | None, config_json: str, progress: bool) -> None:
    """``_train_epochs`` from ``start`` with its progress bar."""
    n = len(split.train)
    steps = steps_per_epoch(n, dcfg.batch_size, dcfg.drop_last)
    bar = tqdm(total=(len(plan) - start) * steps, disable=not progress, unit="step", desc="distill",
               dynamic_ncols=True, mininterval=0.5)
    try:
        _train_epochs(pair, plan, start, split.train, dcfg, device, shuffle, bar, info,
                      run_dir, config_json)
    finally:
        bar.close()


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
            data: DataConfig | None = None, resume: bool = False,
            config_json: str = "{}") -> tuple[EDEGANModel, EDEGANModel, dict[str, Any]]:
    """Train a student from ``teacher`` on ``split.train``; returns (student, teacher, info).

    The teacher is fine-tuned in place in joint steps. ``mode="alone"`` trains the student
    without the teacher through ``train.fit`` (``data`` then names the data in its run config).
    ``info`` holds ``teacher_auroc_before`` / ``teacher_auroc_after`` (equal when the teacher
    never trained) and timings. With ``run_dir``, each epoch is checkpointed (``resume`` goes on
    from the last one).
    """
    check_student_shape(student_cfg, teacher.cfg)
    device = resolve_device(dcfg.device)
    before = teacher_auroc_before(teacher, split, dcfg, device)
    if dcfg.mode == "alone":
        student, info = fit(alone_config(student_cfg, dcfg, data), split, run_dir, resume=resume,
                            progress=progress)
        return student, teacher, alone_info(info, before)

    pair, shuffle = make_pair(teacher, student_cfg, dcfg, device)
    start, info = start_state(pair, shuffle, dcfg, run_dir, resume)
    run_plan(pair, make_plan(dcfg), start, split, dcfg, device, shuffle, info, run_dir, config_json,
             progress)
    return pair.student.model, teacher, finish_info(pair, split, dcfg, info, before)


# --- run folders -------------------------------------------------------------------------------


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


def resolve_student(student: str | ModelConfig, teacher_cfg: ModelConfig) -> tuple[ModelConfig, str | None]:
    """A registry name takes the teacher's image shape and latent constraint (``for_teacher``);
    an explicit config must already match the teacher's shape."""
    from pkdgan.registry import for_teacher, get_config

    if isinstance(student, str):
        return for_teacher(get_config(student), teacher_cfg), student
    check_student_shape(student, teacher_cfg)
    return student, None


def _identity(config: dict[str, Any]) -> str:
    """What must agree for ``--resume``: everything but the device and the data root."""
    d = json.loads(json.dumps({k: config[k] for k in ("model", "loss", "data", "train", "distill",
                                                       "teacher_run")}))
    d["data"].pop("data_root", None)
    d["train"].pop("device", None)
    d["distill"].pop("device", None)
    d["train"], d["distill"] = drop_legacy(d["train"]), drop_legacy(d["distill"])
    return config_hash(d)


def prepare_distill_dir(run_dir: Path, config: dict[str, Any], resume: bool) -> bool:
    """Create or check ``run_dir``; True when an interrupted run should be resumed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if runs.is_finished(run_dir):
        raise UsageError(f"{run_dir} already holds a finished run; choose another --out")
    has_state = (run_dir / runs.TRAIN_STATE).is_file()
    cfg_path = run_dir / runs.CONFIG
    if cfg_path.is_file():
        saved = runs.read_json(cfg_path)
        if saved.get("kind") == "edegan" and config["distill"]["mode"] == "alone":
            # ``train.fit`` rewrites the config of an alone run while it trains
            same = RunConfig.from_dict(saved).hash() == RunConfig.from_dict(config).hash()
        else:
            same = saved.get("config_hash") == config["config_hash"]
        if not same:
            raise UsageError(f"{run_dir} holds a run with a different config; choose another --out")
        if has_state and not resume:
            raise UsageError(f"{run_dir} holds an unfinished run; pass --resume to continue it")
    runs.write_json(cfg_path, config)
    return resume and has_state


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


def run_config(teacher_run_dir: Path, student_name_or_cfg: str | ModelConfig, dcfg: DistillConfig,
               data_root: str | None = None
               ) -> tuple[EDEGANModel, ModelConfig, str | None, DataConfig, dict[str, Any]]:
    """(teacher, student config, student name, data, run config) of a distillation run.

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
    config: dict[str, Any] = {
        "kind": "distill", "model": dataclasses.asdict(student_cfg), "data": dataclasses.asdict(data),
        "loss": dataclasses.asdict(dcfg.gan), "train": dataclasses.asdict(dcfg.train_config()),
        "distill": dcfg.to_dict(), "teacher_run": str(Path(teacher_run_dir).resolve()),
        "teacher_model": dataclasses.asdict(teacher.cfg), "student_name": student_name,
        "split_seed": split_seed,
    }
    config["config_hash"] = _identity(config)
    return teacher, student_cfg, student_name, data, config


def prepare_run(teacher_run_dir: Path, student_name_or_cfg: str | ModelConfig, dcfg: DistillConfig,
                out_dir: Path, data_root: str | None = None, resume: bool = False) -> PreparedRun:
    """``distill_run``'s set-up: teacher, student config, run config (written), data split."""
    from pkdgan.data import one_class_split

    out_dir = Path(out_dir)
    teacher, student_cfg, student_name, data, config = run_config(teacher_run_dir, student_name_or_cfg,
                                                                  dcfg, data_root)
    resuming = prepare_distill_dir(out_dir, config, resume)
    split = one_class_split(data, student_cfg.image_size, student_cfg.channels, config["split_seed"])
    return PreparedRun(out_dir, teacher, student_cfg, student_name, data, split, config, resuming)


def complete_run(prep: PreparedRun, dcfg: DistillConfig, student: EDEGANModel,
                 teacher: EDEGANModel, info: dict[str, Any]) -> dict[str, Any]:
    """Scores, metrics and the final checkpoint of a trained student; returns the metrics."""
    from pkdgan.flops import model_cost
    from pkdgan.results import finish_run

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
                resume: bool = False) -> dict[str, Any]:
    """Teacher run folder -> distilled student run folder (same files as ``train`` writes).

    The data and its split are the teacher's (``prepare_run``); ``data_root`` overrides where
    they are read.
    """
    prep = prepare_run(teacher_run_dir, student_name_or_cfg, dcfg, out_dir, data_root, resume)
    student, teacher, info = distill(prep.teacher, prep.student_cfg, prep.split, dcfg, prep.out_dir,
                                     progress, data=prep.data, resume=prep.resuming,
                                     config_json=prep.config_json)
    return complete_run(prep, dcfg, student, teacher, info)
