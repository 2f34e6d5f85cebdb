"""EDE-GAN training at any batch size (1 = the paper's best): the step, the module engine of the
one loop (``loop.run_loop``) and ``fit``, which is K = 1 of that loop.

Per step: generator update (adversarial feature matching + contextual + latent [+ constraint]),
then discriminator update on the same, detached reconstruction (GANomaly's order). The model
kept is the last epoch (or the mean of the last few, ``averaging``): nothing here looks at test
labels.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pkdgan.core import runs
from pkdgan.core.config import LossWeights, ModelConfig, RunConfig, TrainConfig
from pkdgan.core.device import resolve_device
from pkdgan.core.errors import UsageError
from pkdgan.data.datasets import OneClassSplit
from pkdgan.models.edegan import EDEGANModel
from pkdgan.models.losses import discriminator_loss, generator_loss
from pkdgan.training.averaging import tail_average
from pkdgan.training.checkpoints import load_gan, save_gan
from pkdgan.training.loop import (  # noqa: F401  (MAX_RECOVERIES, check_finite, EpochLog: API)
    GAN,
    MAX_RECOVERIES,
    EpochLog,
    Hooks,
    Member,
    Phase,
    RngStream,
    active,
    check_finite,
    expand,
    kept_message,
    run_loop,
)


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast (AMX on this kind of Xeon, tensor cores on CUDA) for forward passes only;
    weights, optimiser state and scores stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """oneDNN's own test for bf16 it can run natively (AVX-512 / AMX), not by emulation."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_if_emulated(precision: str, device: torch.device) -> None:
    """bf16 on a CPU without bf16 units is emulated: a width-64 step at batch 16 measured 22x
    slower than float32 on a 2-core AVX2 EPYC, so a user asking for speed should hear it."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("bf16 training on a CPU without native bf16 (no AVX-512/AMX): it is "
                      "emulated and many times slower than float32; use --precision fp32",
                      stacklevel=3)


# Fewer optimiser steps than this in a whole run and a GAN is barely trained: the cpu preset's
# teacher takes about 5,300 on an MNIST class (350 a batch-16 epoch), 4,450 on a CIFAR-10 class.
MIN_TRAIN_STEPS = 100


def warn_if_few_steps(n_images: int, t: TrainConfig) -> None:
    """A large default batch on a small folder trains a handful of steps; say so, with the fix."""
    per_epoch = t.steps_per_epoch(n_images)
    if per_epoch * t.epochs < MIN_TRAIN_STEPS:
        warnings.warn(f"{n_images} training images at batch {t.batch_size} make {per_epoch} "
                      f"optimiser step(s) per epoch, {per_epoch * t.epochs} in all: too few to "
                      f"train a GAN (at least {MIN_TRAIN_STEPS}); use a smaller --batch-size "
                      "or more --epochs", stacklevel=3)


def _full(t: torch.Tensor) -> torch.Tensor:
    """bf16 activations up to float32 for a loss; float32/float64 left exactly as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def make_adam(params: Any, cfg: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """Fused Adam where the build supports it: at batch 1 on CPU it measured 31 vs 25 images/s."""
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2)}
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, foreach=device.type == "cuda", **kwargs)


@dataclass
class GanState:
    """A model with its two optimizers: the unit the step functions update."""

    model: EDEGANModel
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    d_reinits: int = 0

    @classmethod
    def create(cls, cfg: ModelConfig, train: TrainConfig, device: torch.device) -> GanState:
        model = EDEGANModel(cfg).to(device)
        return cls(
            model,
            make_adam(model.generator.parameters(), train, device),
            make_adam(model.discriminator.parameters(), train, device),
        )


def generator_terms(
    model: EDEGANModel, x: torch.Tensor, weights: LossWeights
) -> tuple[dict[str, torch.Tensor], torch.Tensor, tuple[torch.Tensor, ...]]:
    """Forward pass and generator loss terms; D's parameters get no gradient from here."""
    z, x_hat, z_hat = model.generator(x)
    disc = model.discriminator
    disc.requires_grad_(False)
    with torch.no_grad():
        _, feat_real = disc(x)
    _, feat_fake = disc(x_hat)
    disc.requires_grad_(True)
    terms = generator_loss(x, z, x_hat, z_hat, feat_real, feat_fake, weights, model.cfg)
    return terms, x_hat, (z, x_hat, z_hat)


def discriminator_step(state: GanState, x: torch.Tensor, x_hat: torch.Tensor,
                       reinit_threshold: float, precision: str = "fp32") -> torch.Tensor:
    with autocast(precision, x.device):
        logit_real, _ = state.model.discriminator(x)
        logit_fake, _ = state.model.discriminator(x_hat.detach())
        loss_d = discriminator_loss(_full(logit_real), _full(logit_fake))
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_d.step()
    if loss_d.item() < reinit_threshold:
        state.model.reinit_discriminator()
        state.d_reinits += 1
    return loss_d.detach()


def gan_step(state: GanState, x: torch.Tensor, weights: LossWeights,
             reinit_threshold: float, precision: str = "fp32") -> dict[str, float]:
    """One G step then one D step; returns the loss values for logging."""
    with autocast(precision, x.device):
        terms, x_hat, _ = generator_terms(state.model, x, weights)
    state.opt_g.zero_grad(set_to_none=True)
    terms["total"].backward()
    state.opt_g.step()
    loss_d = discriminator_step(state, x, x_hat, reinit_threshold, precision)
    out = {f"g_{k}": v.item() for k, v in terms.items()}
    out["d"] = loss_d.item()
    return out


def _snapshot(state: GanState) -> dict[str, Any]:
    """In-memory copy of the last good model and generator-optimizer state: recovery then
    also works in epoch 1 and without a run folder."""
    return copy.deepcopy({"model": state.model.state_dict(), "opt_g": state.opt_g.state_dict()})


def _restore(state: GanState, good: dict[str, Any]) -> None:
    """``on_divergence=reinit``: back to the last good epoch with a fresh discriminator."""
    state.model.load_state_dict(good["model"])
    # Optimizer.load_state_dict aliases the given tensors; a copy keeps the snapshot intact.
    state.opt_g.load_state_dict(copy.deepcopy(good["opt_g"]))
    state.model.reinit_discriminator()
    state.opt_d.state.clear()


def _weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class ModuleGanEngine:
    """The loop's strategy for EDE-GANs as modules with Adam, any batch size (``gan_step``)."""

    def __init__(self, x_all: torch.Tensor, cfg: RunConfig, device: torch.device) -> None:
        self.x_all, self.cfg, self.device = x_all, cfg, device

    def begin_epoch(self, i: int, m: Member) -> None:
        pass

    def step(self, members: list[Member]) -> list[dict[str, float]]:
        t, out = self.cfg.train, []
        for m in members:
            xb = self.x_all[m.indices()].to(self.device)
            with active(m.rng):
                out.append(gan_step(m.owner, xb, self.cfg.loss, t.d_reinit_threshold, t.precision))
        return out

    def weights_finite(self, i: int, m: Member) -> bool:
        return _weights_finite(m.owner.model)

    def snapshot(self, i: int, m: Member) -> dict[str, Any]:
        return _snapshot(m.owner)

    def recover(self, i: int, m: Member, good: dict[str, Any]) -> None:
        _restore(m.owner, good)

    def sync(self, i: int, m: Member) -> None:
        pass

    def leave(self, keep: list[int], members: list[Member]) -> None:
        pass


def prepare_run_dir(run_dir: Path, cfg: RunConfig, resume: bool) -> bool:
    """Create or check the folder (``runs.prepare_folder``); True when a partial run should be
    resumed."""

    def same(saved: dict[str, Any]) -> bool:
        try:
            return RunConfig.from_dict(saved).hash() == cfg.hash()
        except UsageError:
            return False

    config = cfg.to_dict() | {"kind": "edegan", "config_hash": cfg.hash()}
    return runs.prepare_folder(run_dir, config, same, resume)


def gan_member(cfg: RunConfig, split: OneClassSplit, run_dir: Path | None, resume: bool,
               device: torch.device, stream: bool = False) -> Member:
    """``fit``'s set-up of one model (seeded init and shuffle, resumed state) as a loop member;
    with ``stream`` its global-RNG stream is kept aside for training among others."""
    t = cfg.train
    torch.manual_seed(t.seed)
    shuffle = torch.Generator().manual_seed(t.seed)
    state = GanState.create(cfg.model, t, device)
    average = tail_average({"generator": state.model.generator}, t.average_last, t.epochs)
    start, info = 0, {"train_seconds": 0.0}
    if run_dir is not None and prepare_run_dir(run_dir, cfg, resume):
        start, info = load_gan(run_dir, state, shuffle, average)
    n = len(split.train)
    return Member(state, n, t.batch_size, t.steps_per_epoch(n), expand([Phase(GAN, t.epochs)]),
                  t.epochs, start, shuffle, info, run_dir, t.on_divergence,
                  RngStream(device) if stream else None, cfg.to_json(), average=average)


def gan_hooks(on_epoch: Callable[[int, EDEGANModel], None] | None = None) -> Hooks:
    """History rows and checkpoints of EDE-GAN runs."""

    def row(m: Member, seconds: float) -> dict[str, Any]:
        return {"epoch": m.epoch, **{k: f"{v:.6g}" for k, v in m.log.means().items()},
                "d_reinits": m.owner.d_reinits, "seconds": f"{seconds:.2f}",
                "images_per_second": f"{m.n / seconds:.2f}"}

    def save(m: Member) -> None:
        assert m.run_dir is not None
        save_gan(m.run_dir, m.owner, m.epoch, m.shuffle, m.config_json, m.info, m.average)

    def after(m: Member) -> None:
        if on_epoch is not None:
            on_epoch(m.epoch, m.owner.model)

    def postfix(m: Member, losses: dict[str, float]) -> dict[str, Any]:
        return {"epoch": m.epoch + 1, "g": f"{losses['g_total']:.3f}", "d": f"{losses['d']:.3f}"}

    return Hooks(row, save, after if on_epoch is not None else None, postfix)


def gan_summary(m: Member) -> dict[str, Any]:
    """``fit``'s info: totals and throughput of a finished member."""
    epochs, n, info = m.stop, m.n, m.info
    return info | {"epochs": epochs, "d_reinits": m.owner.d_reinits, "n_train": n,
                   "seconds_per_epoch": info["train_seconds"] / max(epochs, 1),
                   "images_per_second": n * epochs / max(info["train_seconds"], 1e-9)}


def fit(cfg: RunConfig, split: OneClassSplit, run_dir: Path | None = None,
        resume: bool = False, progress: bool = True,
        on_epoch: Callable[[int, EDEGANModel], None] | None = None,
        ) -> tuple[EDEGANModel, dict[str, Any]]:
    """Train one EDE-GAN on ``split.train``; checkpoints each epoch when ``run_dir`` is given.

    ``on_epoch(epochs_done, model)`` is for research probes (e.g. AUROC against training time)
    and sees the live weights; the model kept is the last epoch's, or the mean of the last
    ``average_last`` epochs'. K = 1 of the one loop (``loop.run_loop``).
    """
    device = resolve_device(cfg.train.device)
    warn_if_emulated(cfg.train.precision, device)
    warn_if_few_steps(len(split.train), cfg.train)
    m = gan_member(cfg, split, run_dir, resume, device)
    run_loop([m], ModuleGanEngine(split.train, cfg, device), gan_hooks(on_epoch),
             desc="train", progress=progress)
    if m.error is not None:
        raise m.error
    m.info = gan_summary(m)
    return m.owner.model, m.info
