"""Training loop for one EDE-GAN at any batch size (1 = the paper's best).

Per step: generator update (adversarial feature matching + contextual + latent [+ constraint]),
then discriminator update on the same, detached reconstruction (GANomaly's order). The model
kept is the last epoch: nothing here looks at test labels.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from pkdgan.core import runs
from pkdgan.core.config import LossWeights, ModelConfig, RunConfig, TrainConfig
from pkdgan.core.errors import DataError, DivergenceError, UsageError
from pkdgan.data.datasets import OneClassSplit
from pkdgan.models.edegan import EDEGANModel
from pkdgan.models.losses import discriminator_loss, generator_loss


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name} requested but CUDA is not available")
    return torch.device(name)


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast (AMX on this kind of Xeon, tensor cores on CUDA) for forward passes only;
    weights, optimiser state and scores stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


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


def check_finite(losses: dict[str, float], epoch: int, step: int) -> None:
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise DivergenceError(
            f"training diverged at epoch {epoch + 1}, step {step + 1}: {', '.join(bad)} is NaN/Inf"
        )


@dataclass
class EpochLog:
    sums: dict[str, float] = field(default_factory=dict)
    n: int = 0

    def add(self, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


def save_training_state(run_dir: Path, state: GanState, epoch: int, shuffle: torch.Generator,
                        cfg: RunConfig, extra: dict[str, Any]) -> None:
    """Checkpoint after a completed epoch.

    ``train_state`` holds everything a resume needs (weights too) and is written first, so a
    kill between the two writes can never pair weights and optimizer state of different epochs.
    """
    weights = (runs.flatten_state("generator", state.model.generator.state_dict())
               | runs.flatten_state("discriminator", state.model.discriminator.state_dict()))
    tg, groups_g = runs.optimizer_to_tensors("opt_g", state.opt_g)
    td, groups_d = runs.optimizer_to_tensors("opt_d", state.opt_d)
    rng = {"rng.torch": torch.get_rng_state(), "rng.shuffle": shuffle.get_state()}
    meta = {"epoch": str(epoch), "opt_g": json.dumps(groups_g), "opt_d": json.dumps(groups_d),
            "extra": json.dumps(extra | {"d_reinits": state.d_reinits})}
    runs.save_tensors(run_dir / runs.TRAIN_STATE, weights | tg | td | rng, meta)
    runs.save_tensors(run_dir / runs.CHECKPOINT, weights,
                      {"config": cfg.to_json(), "epoch": str(epoch)})


def load_training_state(run_dir: Path, state: GanState, shuffle: torch.Generator
                        ) -> tuple[int, dict[str, Any]]:
    """Restore the last completed epoch; returns (epochs done, extra info)."""
    ts_path = run_dir / runs.TRAIN_STATE
    ts = runs.load_tensors(ts_path)
    # states written before the weights moved in here take them from the checkpoint
    path = ts_path if any(k.startswith("generator.") for k in ts) else run_dir / runs.CHECKPOINT
    weights = ts if path == ts_path else runs.load_tensors(path)
    runs.load_module_state(state.model.generator, runs.unflatten_state("generator", weights), path)
    runs.load_module_state(
        state.model.discriminator, runs.unflatten_state("discriminator", weights), path
    )
    try:
        with safe_open(str(ts_path), "pt") as f:
            meta = f.metadata() or {}
        runs.optimizer_from_tensors("opt_g", state.opt_g, ts, json.loads(meta["opt_g"]))
        runs.optimizer_from_tensors("opt_d", state.opt_d, ts, json.loads(meta["opt_d"]))
        torch.set_rng_state(ts["rng.torch"])
        shuffle.set_state(ts["rng.shuffle"])
        extra = json.loads(meta["extra"])
        state.d_reinits = int(extra.get("d_reinits", 0))
        return int(meta["epoch"]), extra
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise DataError(
            f"{ts_path}: unusable training state ({type(e).__name__}: {e}); delete it to restart"
        ) from None


MAX_RECOVERIES = 3


def _snapshot(state: GanState) -> dict[str, Any]:
    """In-memory copy of the last good model and generator-optimizer state: recovery then
    also works in epoch 1 and without a run folder."""
    return copy.deepcopy({"model": state.model.state_dict(), "opt_g": state.opt_g.state_dict()})


def _recover(state: GanState, good: dict[str, Any] | None, t: TrainConfig,
             info: dict[str, Any]) -> bool:
    """``on_divergence=reinit``: back to the last good epoch with a fresh discriminator."""
    if good is None or t.on_divergence != "reinit" or info.get("recoveries", 0) >= MAX_RECOVERIES:
        return False
    info["recoveries"] = info.get("recoveries", 0) + 1
    state.model.load_state_dict(good["model"])
    # Optimizer.load_state_dict aliases the given tensors; a copy keeps the snapshot intact.
    state.opt_g.load_state_dict(copy.deepcopy(good["opt_g"]))
    state.model.reinit_discriminator()
    state.opt_d.state.clear()
    return True


def kept_message(run_dir: Path | None, epochs_done: int) -> str:
    """What a stopped run leaves behind, for the divergence message."""
    if run_dir is None:
        return "nothing saved (no run folder)"
    if epochs_done == 0:
        return f"no epoch had completed, so {run_dir} holds no checkpoint"
    return f"kept the last good checkpoint {run_dir / runs.CHECKPOINT} (epoch {epochs_done})"


def _weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def prepare_run_dir(run_dir: Path, cfg: RunConfig, resume: bool) -> bool:
    """Create or check the folder; returns True when a partial run should be resumed."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"{run_dir} is a file, not a folder; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if runs.is_finished(run_dir):
        raise UsageError(f"{run_dir} already holds a finished run; choose another --out")
    cfg_path = run_dir / runs.CONFIG
    has_state = (run_dir / runs.TRAIN_STATE).is_file()
    if cfg_path.is_file():
        saved = runs.read_json(cfg_path)
        try:
            same = isinstance(saved, dict) and RunConfig.from_dict(saved).hash() == cfg.hash()
        except UsageError:
            same = False
        if not same:
            raise UsageError(
                f"{run_dir} holds a run with a different config; choose another --out"
            )
        if has_state and not resume:
            raise UsageError(f"{run_dir} holds an unfinished run; pass --resume to continue it")
    runs.write_json(cfg_path, cfg.to_dict() | {"kind": "edegan", "config_hash": cfg.hash()})
    return resume and has_state


def fit(cfg: RunConfig, split: OneClassSplit, run_dir: Path | None = None,
        resume: bool = False, progress: bool = True,
        on_epoch: Callable[[int, EDEGANModel], None] | None = None,
        ) -> tuple[EDEGANModel, dict[str, Any]]:
    """Train one EDE-GAN on ``split.train``; checkpoints each epoch when ``run_dir`` is given.

    ``on_epoch(epochs_done, model)`` is for research probes (e.g. AUROC against training time);
    the model kept is always the last epoch's.
    """
    t = cfg.train
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    shuffle = torch.Generator().manual_seed(t.seed)
    state = GanState.create(cfg.model, t, device)
    start, info = 0, {"train_seconds": 0.0}
    if run_dir is not None and prepare_run_dir(run_dir, cfg, resume):
        start, info = load_training_state(run_dir, state, shuffle)
    x_all = split.train
    n = len(x_all)
    steps = t.steps_per_epoch(n)
    bar = tqdm(total=(t.epochs - start) * steps, disable=not progress, unit="step",
               desc="train", dynamic_ncols=True, mininterval=0.5)
    for epoch in range(start, t.epochs):
        t0 = time.perf_counter()
        log = EpochLog()
        good = _snapshot(state) if t.on_divergence == "reinit" else None
        perm = torch.randperm(n, generator=shuffle)
        for i in range(steps):
            xb = x_all[perm[i * t.batch_size:(i + 1) * t.batch_size]].to(device)
            losses = gan_step(state, xb, cfg.loss, t.d_reinit_threshold, t.precision)
            if i == steps - 1 and not _weights_finite(state.model):
                losses["weights"] = math.nan  # the last update must not reach the checkpoint
            try:
                check_finite(losses, epoch, i)
            except DivergenceError as e:
                if not _recover(state, good, t, info):
                    bar.close()
                    tried = f" after {info['recoveries']} recoveries" if info.get("recoveries") else ""
                    raise DivergenceError(f"{e}{tried}; {kept_message(run_dir, epoch)}") from None
                continue
            log.add(losses)
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(epoch=epoch + 1, g=f"{losses['g_total']:.3f}",
                                d=f"{losses['d']:.3f}", refresh=False)
        seconds = time.perf_counter() - t0
        info["train_seconds"] = info.get("train_seconds", 0.0) + seconds
        if run_dir is not None:
            row = {"epoch": epoch + 1, **{k: f"{v:.6g}" for k, v in log.means().items()},
                   "d_reinits": state.d_reinits, "seconds": f"{seconds:.2f}",
                   "images_per_second": f"{n / seconds:.2f}"}
            runs.append_history(run_dir / runs.HISTORY, row)
            save_training_state(run_dir, state, epoch + 1, shuffle, cfg, info)
        if on_epoch is not None:
            on_epoch(epoch + 1, state.model)
    bar.close()
    info.update(epochs=t.epochs, d_reinits=state.d_reinits, n_train=n,
                seconds_per_epoch=info["train_seconds"] / max(t.epochs, 1),
                images_per_second=n * t.epochs / max(info["train_seconds"], 1e-9))
    return state.model, info


