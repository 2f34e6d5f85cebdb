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
for discriminator re-initialisation, its history, checkpoints and divergence handling: the one
loop (``loop.run_loop``) keeps them for every member, and ``StackedEngine`` below is its strategy
for K models at batch 1. The test
``tests/test_multi.py`` checks that weights and scores equal those of ``train.fit``.

One forward pass of D over (x, x_hat) serves both steps: the generator's feature-matching term
(back-propagated into G only) and the discriminator's BCE (into D only). ``train.gan_step`` runs D
four times on the same two images with the same weights, so the values are identical; the
running statistics of D's BatchNorm receive the same four momentum updates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pkdgan.core.config import RunConfig
from pkdgan.core.device import resolve_device
from pkdgan.core.errors import DivergenceError, UsageError
from pkdgan.data.datasets import OneClassSplit
from pkdgan.models.edegan import EDEGANModel
from pkdgan.training.loop import Member, run_loop
from pkdgan.training.stacked_engine import LOSS_KEYS, StackedGan
from pkdgan.training.train import GanState, gan_hooks, gan_member, gan_summary


class StackedEngine:
    """The loop's strategy for K same-shaped models at batch size 1: one ``StackedGan`` step
    for all active members, rows written back to each member's modules when it needs them."""

    d_key = "d"

    def __init__(self, members: list[Member], images: Sequence[torch.Tensor], template: EDEGANModel,
                 device: torch.device, run: RunConfig) -> None:
        self.template, self.device, self.run = template, device, run
        self.x_all = torch.cat(list(images)).to(device)
        offset = 0
        for m, x in zip(members, images, strict=True):
            m.offset, offset = offset, offset + len(x)
        self.restack([m for m in members if not m.done])

    def state(self, m: Member) -> GanState:
        return m.owner

    def restack(self, members: list[Member]) -> None:
        self.stack = StackedGan([self.state(m) for m in members], self.template) if members else None

    def forward(self, idx: torch.Tensor) -> tuple[list[list[float]], tuple[str, ...]]:
        assert self.stack is not None
        return self.stack.step(self.x_all[idx], self.run), LOSS_KEYS

    def begin_epoch(self, i: int, m: Member) -> None:
        pass

    def step(self, members: list[Member]) -> list[dict[str, float]]:
        assert self.stack is not None
        idx = torch.tensor([m.offset + int(m.perm[m.pos]) for m in members], device=self.device)
        values, keys = self.forward(idx)
        out = []
        for i, m in enumerate(members):
            losses = dict(zip(keys, (v[i] for v in values), strict=True))
            if self.d_key in losses and losses[self.d_key] < self.run.train.d_reinit_threshold:
                with m.rng.active():  # type: ignore[union-attr]
                    self.stack.reinit_discriminator(i)
                self.state(m).d_reinits += 1
            out.append(losses)
        return out

    def weights_finite(self, i: int, m: Member) -> bool:
        assert self.stack is not None
        return self.stack.weights_finite(i)

    def snapshot(self, i: int, m: Member) -> dict[str, torch.Tensor]:
        assert self.stack is not None
        return self.stack.snapshot(i)

    def recover(self, i: int, m: Member, good: dict[str, torch.Tensor]) -> None:
        assert self.stack is not None
        self.stack.restore(i, good)
        self.stack.reinit_discriminator(i)
        self.stack.clear_adam(self.stack.d, i)

    def sync(self, i: int, m: Member) -> None:
        assert self.stack is not None
        self.stack.write_back(i, self.state(m))

    def leave(self, keep: list[int], members: list[Member]) -> None:
        """Every member written back; the ones that stay are stacked again from their states."""
        for i, m in enumerate(members):
            self.sync(i, m)
        self.restack([members[i] for i in keep])


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


def named(m: Member, err: DivergenceError | None) -> DivergenceError | None:
    """A member's divergence, prefixed with its run folder (K runs report together)."""
    if err is None or m.run_dir is None:
        return err
    return DivergenceError(f"{m.run_dir}: {err}")


def fit_many(cfgs: Sequence[RunConfig], splits: Sequence[OneClassSplit],
             run_dirs: Sequence[Path | None] | None = None, resume: bool = False,
             progress: bool = True,
             on_epoch: Callable[[int, int, EDEGANModel], None] | None = None) -> list[FitResult]:
    """Train each (cfg, split) as ``train.fit`` would, all K at once; one result per model.

    A model that diverges beyond recovery stops with ``FitResult.error`` set while the others
    go on; with run folders, every model checkpoints after each of its epochs as ``fit`` does.
    ``on_epoch(k, epochs_done, model)`` is ``fit``'s probe hook, for the k-th model.
    """
    check_compatible(cfgs)
    dirs = list(run_dirs) if run_dirs is not None else [None] * len(cfgs)
    if not len(cfgs) == len(splits) == len(dirs):
        raise UsageError("fit_many needs one split (and run folder) per config")
    device = resolve_device(cfgs[0].train.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        members = [gan_member(c, s, d, resume, device, stream=True)
                   for c, s, d in zip(cfgs, splits, dirs, strict=True)]
        torch.manual_seed(cfgs[0].train.seed)
        template = EDEGANModel(cfgs[0].model).to(device)
        engine = StackedEngine(members, [s.train for s in splits], template, device, cfgs[0])
        index = {id(m.owner.model): k for k, m in enumerate(members)}
        hook = None if on_epoch is None else (
            lambda epoch, model: on_epoch(index[id(model)], epoch, model))
        run_loop(members, engine, gan_hooks(hook), desc=f"train x{len(members)}", progress=progress)
    out = []
    for m in members:
        if m.error is None:
            m.info = gan_summary(m) | {"trained_together": len(members)}
        out.append(FitResult(m.owner.model, m.info, named(m, m.error)))
    return out
