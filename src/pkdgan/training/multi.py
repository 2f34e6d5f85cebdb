"""K independent EDE-GANs trained in one pass, each at batch size 1 (the paper's best setting).

A batch-1 step is a chain of tiny GEMMs plus a memory-bound optimizer pass, so one model leaves
most of the CPU idle. Here the models of a group (normal classes, seeds) are stacked on a leading
model axis: every parameter, BatchNorm buffer and Adam moment is a ``(K, ...)`` tensor, each
convolution is ``unfold`` + one batched GEMM (``torch.bmm``, one matrix per model), BatchNorm is
per model and per image (batch statistics of a batch of 1, exactly as alone), and the losses of
the K models are summed so each model's gradient is its own. Adam is the same kernel
``train.make_adam`` picks, applied to per-model rows with per-model step counts.

Each model keeps everything ``train.fit`` keeps: its seed-initialised weights, its own shuffling
generator and epoch length (datasets differ in size: a model that finishes its epoch starts the
next one at once; a model that has finished all its epochs leaves the stack), its own RNG stream
for discriminator re-initialisation, its history, checkpoints and divergence handling. The test
``tests/test_multi.py`` checks that weights and scores equal those of ``train.fit``.

One forward pass of D over (x, x_hat) serves both steps: the generator's feature-matching term
(back-propagated into G only) and the discriminator's BCE (into D only). ``train.gan_step`` runs D
four times on the same two images with the same weights, so the values are identical; the
running statistics of D's BatchNorm receive the same four momentum updates.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pkdgan.core import runs
from pkdgan.core.config import RunConfig
from pkdgan.core.errors import DivergenceError, UsageError
from pkdgan.data.datasets import OneClassSplit
from pkdgan.models.edegan import EDEGANModel
from pkdgan.training.stacked_engine import (
    LOSS_KEYS,
    RngStream,
    StackedGan,
)
from pkdgan.training.train import (
    MAX_RECOVERIES,
    EpochLog,
    GanState,
    check_finite,
    kept_message,
    load_training_state,
    prepare_run_dir,
    resolve_device,
    save_training_state,
)

# ---------------------------------------------------------------------------------------------
# The stack: K models' parameters, buffers and Adam state.


# ---------------------------------------------------------------------------------------------
# Per-model bookkeeping, as train.fit keeps it.


@dataclass
class _Member:
    cfg: RunConfig
    split: OneClassSplit
    run_dir: Path | None
    state: GanState
    shuffle: torch.Generator
    rng: RngStream
    epoch: int
    info: dict[str, Any]
    offset: int = 0
    pos: int = 0
    perm: list[int] = field(default_factory=list)
    log: EpochLog = field(default_factory=EpochLog)
    t0: float = 0.0
    good: dict[str, torch.Tensor] | None = None
    error: DivergenceError | None = None

    @property
    def n(self) -> int:
        return len(self.split.train)

    @property
    def done(self) -> bool:
        return self.error is not None or self.epoch >= self.cfg.train.epochs


@dataclass
class FitResult:
    """What ``train.fit`` returns for one model, or the divergence that stopped it."""

    model: EDEGANModel
    info: dict[str, Any]
    error: DivergenceError | None = None


def check_compatible(cfgs: Sequence[RunConfig]) -> None:
    """Models share one stack when only data, seed and epochs differ, at batch size 1."""
    if not cfgs:
        raise UsageError("no runs to train")
    base = cfgs[0]
    for c in cfgs:
        if c.train.batch_size != 1:
            raise UsageError(f"multi-model training is for batch size 1, got {c.train.batch_size}")
        if c.train.precision != "fp32":
            raise UsageError(f"multi-model training is float32 only, got {c.train.precision}")
        same_train = dataclasses.replace(c.train, seed=base.train.seed, epochs=base.train.epochs)
        if c.model != base.model or c.loss != base.loss or same_train != base.train:
            raise UsageError("models trained together must share model, loss and optimizer "
                             "settings (only data, seed and epochs may differ)")


def _start(cfg: RunConfig, split: OneClassSplit, run_dir: Path | None, resume: bool,
           device: torch.device) -> _Member:
    """``train.fit``'s set-up for one model, with its RNG stream kept aside."""
    t = cfg.train
    torch.manual_seed(t.seed)
    shuffle = torch.Generator().manual_seed(t.seed)
    state = GanState.create(cfg.model, t, device)
    start, info = 0, {"train_seconds": 0.0}
    if run_dir is not None and prepare_run_dir(run_dir, cfg, resume):
        start, info = load_training_state(run_dir, state, shuffle)
    return _Member(cfg, split, run_dir, state, shuffle, RngStream(device), start, info)


def _begin_epoch(m: _Member, stack: StackedGan, i: int) -> None:
    m.t0 = time.perf_counter()
    m.log = EpochLog()
    m.good = stack.snapshot(i) if m.cfg.train.on_divergence == "reinit" else None
    m.perm = torch.randperm(m.n, generator=m.shuffle).tolist()
    m.pos = 0


def _end_epoch(m: _Member, stack: StackedGan, i: int) -> None:
    seconds = time.perf_counter() - m.t0
    m.info["train_seconds"] = m.info.get("train_seconds", 0.0) + seconds
    m.epoch += 1
    if m.run_dir is not None or m.done:
        stack.write_back(i, m.state)
    if m.run_dir is not None:
        row = {"epoch": m.epoch, **{k: f"{v:.6g}" for k, v in m.log.means().items()},
               "d_reinits": m.state.d_reinits, "seconds": f"{seconds:.2f}",
               "images_per_second": f"{m.n / seconds:.2f}"}
        runs.append_history(m.run_dir / runs.HISTORY, row)
        with m.rng.active():
            save_training_state(m.run_dir, m.state, m.epoch, m.shuffle, m.cfg, m.info)


def _diverged(m: _Member, stack: StackedGan, i: int, err: DivergenceError) -> None:
    """``train.fit``'s ``on_divergence`` handling for one model; sets ``m.error`` when it stops."""
    recoveries = m.info.get("recoveries", 0)
    if m.good is None or recoveries >= MAX_RECOVERIES:
        tried = f" after {recoveries} recoveries" if recoveries else ""
        name = f"{m.run_dir}: " if m.run_dir is not None else ""
        m.error = DivergenceError(f"{name}{err}{tried}; {kept_message(m.run_dir, m.epoch)}")
        return
    m.info["recoveries"] = recoveries + 1
    stack.restore(i, m.good)
    with m.rng.active():
        stack.reinit_discriminator(i)
    stack.clear_adam(stack.d, i)


def fit_many(cfgs: Sequence[RunConfig], splits: Sequence[OneClassSplit],
             run_dirs: Sequence[Path | None] | None = None, resume: bool = False,
             progress: bool = True) -> list[FitResult]:
    """Train each (cfg, split) as ``train.fit`` would, all K at once; one result per model.

    A model that diverges beyond recovery stops with ``FitResult.error`` set while the others
    go on; with run folders, every model checkpoints after each of its epochs as ``fit`` does.
    """
    check_compatible(cfgs)
    dirs = list(run_dirs) if run_dirs is not None else [None] * len(cfgs)
    if not len(cfgs) == len(splits) == len(dirs):
        raise UsageError("fit_many needs one split (and run folder) per config")
    device = resolve_device(cfgs[0].train.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        members = [_start(c, s, d, resume, device) for c, s, d in zip(cfgs, splits, dirs, strict=True)]
        torch.manual_seed(cfgs[0].train.seed)
        template = EDEGANModel(cfgs[0].model).to(device)
        _train(members, template, device, progress)
    out = []
    for m in members:
        if m.error is None:
            t = m.cfg.train
            m.info.update(epochs=t.epochs, d_reinits=m.state.d_reinits, n_train=m.n,
                          seconds_per_epoch=m.info["train_seconds"] / max(t.epochs, 1),
                          images_per_second=m.n * t.epochs / max(m.info["train_seconds"], 1e-9),
                          trained_together=len(members))
        out.append(FitResult(m.state.model, m.info, m.error))
    return out


def _train(members: list[_Member], template: EDEGANModel, device: torch.device, progress: bool) -> None:
    x_all = torch.cat([m.split.train for m in members]).to(device)
    offset = 0
    for m in members:
        m.offset, offset = offset, offset + m.n
    total = sum(max(m.cfg.train.epochs - m.epoch, 0) * m.n for m in members)
    bar = tqdm(total=total, disable=not progress, unit="img", desc=f"train x{len(members)}",
               dynamic_ncols=True, mininterval=0.5)
    active = [m for m in members if not m.done]
    stack = StackedGan([m.state for m in active], template) if active else None
    for i, m in enumerate(active):
        _begin_epoch(m, stack, i)  # type: ignore[arg-type]
    while active and stack is not None:
        idx = torch.tensor([m.offset + m.perm[m.pos] for m in active], device=device)
        values = stack.step(x_all[idx], active[0].cfg)
        for i, m in enumerate(active):
            losses = dict(zip(LOSS_KEYS, (v[i] for v in values), strict=True))
            if losses["d"] < m.cfg.train.d_reinit_threshold:
                with m.rng.active():
                    stack.reinit_discriminator(i)
                m.state.d_reinits += 1
            if m.pos == m.n - 1 and not stack.weights_finite(i):
                losses["weights"] = math.nan
            try:
                check_finite(losses, m.epoch, m.pos)
            except DivergenceError as e:
                _diverged(m, stack, i, e)
                m.pos += 1
            else:
                m.log.add(losses)
                m.pos += 1
                bar.update(1)
            if m.error is None and m.pos == m.n:
                _end_epoch(m, stack, i)
                if not m.done:
                    _begin_epoch(m, stack, i)
        if any(m.done for m in active):
            keep = [i for i, m in enumerate(active) if not m.done]
            for i, m in enumerate(active):
                if m.error is not None:
                    stack.write_back(i, m.state)
            active = [active[i] for i in keep]
            stack = _substack(stack, keep, [m.state for m in active]) if active else None
        if active:
            bar.set_postfix(models=len(active), epoch=min(m.epoch for m in active) + 1, refresh=False)
    bar.close()


def _substack(stack: StackedGan, keep: list[int], states: list[GanState]) -> StackedGan:
    """The stack without the models that left (finished or stopped)."""
    for j, i in enumerate(keep):
        stack.write_back(i, states[j])
    return StackedGan(states, stack.template)


