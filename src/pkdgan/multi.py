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

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adam import adam as adam_update
from tqdm.auto import tqdm

from pkdgan import runs
from pkdgan.config import RunConfig
from pkdgan.data import OneClassSplit
from pkdgan.edegan import EDEGANModel
from pkdgan.errors import DivergenceError, UsageError
from pkdgan.losses import discriminator_loss, generator_loss
from pkdgan.nets import weights_init
from pkdgan.stacked import (
    GradSink,
    stacked_batch_norm,
    stacked_conv2d,
    stacked_conv_transpose2d,
)
from pkdgan.train import (
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

LOSS_KEYS = ("g_adversarial", "g_contextual", "g_latent", "g_constraint", "g_total", "d")
# train.gan_step evaluates D on x, x_hat (generator step), then x, x_hat (discriminator step).
D_BN_UPDATES = (0, 1, 0, 1)


# ---------------------------------------------------------------------------------------------
# The stack: K models' parameters, buffers and Adam state.


@dataclass
class ParamGroup:
    """One optimizer's worth of stacked tensors (the generator's or the discriminator's)."""

    params: dict[str, torch.Tensor]
    buffers: dict[str, dict[str, torch.Tensor]]
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    steps: torch.Tensor  # (n_params, K): Adam's step count per parameter tensor and model
    sink: GradSink = field(default_factory=GradSink)
    rows: tuple[list[torch.Tensor], ...] = ()

    def __post_init__(self) -> None:
        names = list(self.params)
        k_models = self.steps.shape[1]
        self.sink = GradSink({n: torch.zeros_like(p) for n, p in self.params.items()})
        self.rows = tuple([t[n].detach()[k] for n in names for k in range(k_models)]
                          for t in (self.params, self.sink.buffers, self.exp_avg, self.exp_avg_sq))
        self.rows += ([self.steps[i, k] for i in range(len(names)) for k in range(k_models)],)

    def collect_grads(self) -> None:
        """Move autograd's gradients (BatchNorm, biases) into the persistent buffers."""
        with torch.no_grad():
            for n, p in self.params.items():
                if p.grad is not None:
                    self.sink.buffers[n].copy_(p.grad)
                    p.grad = None


def _module_buffers(module: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, buf in module.named_buffers():
        owner, _, key = name.rpartition(".")
        out.setdefault(owner, {})[key] = buf
    return out


def stack_modules(modules: list[nn.Module], opts: list[torch.optim.Optimizer]) -> ParamGroup:
    """Copy K identical-shaped modules and their Adam states into one stacked group."""
    named = [dict(m.named_parameters()) for m in modules]
    names = list(named[0])
    params = {n: torch.stack([p[n].detach() for p in named]).requires_grad_(True) for n in names}
    moments: dict[str, dict[str, torch.Tensor]] = {"exp_avg": {}, "exp_avg_sq": {}}
    steps = torch.zeros(len(names), len(modules), dtype=torch.float32, device=params[names[0]].device)
    for i, n in enumerate(names):
        for key in moments:
            rows = []
            for k, (p, opt) in enumerate(zip(named, opts, strict=True)):
                st = opt.state.get(p[n], {})
                rows.append(st[key].detach() if key in st else torch.zeros_like(p[n]))
                if key == "exp_avg" and "step" in st:
                    steps[i, k] = float(st["step"])
            moments[key][n] = torch.stack(rows)
    bufs = [_module_buffers(m) for m in modules]
    buffers = {owner: {key: torch.stack([b[owner][key] for b in bufs]) for key in bufs[0][owner]}
               for owner in bufs[0]}
    return ParamGroup(params, buffers, moments["exp_avg"], moments["exp_avg_sq"], steps)


class StackedGan:
    """K EDE-GANs of one architecture as stacked tensors, with the batch-1 training step.

    ``template`` provides the layer structure (walked, so the nets in ``nets.py`` are the single
    source of truth) and the module whose re-initialisation draws each model's new D weights.
    """

    def __init__(self, states: list[GanState], template: EDEGANModel) -> None:
        self.template = template
        self.cfg = template.cfg
        self.g = stack_modules([s.model.generator for s in states], [s.opt_g for s in states])
        self.d = stack_modules([s.model.discriminator for s in states], [s.opt_d for s in states])
        self.adam = _adam_settings(states[0].opt_g)
        self.k = len(states)

    # -- forward --------------------------------------------------------------------------------

    def _layer(self, module: nn.Module, name: str, x: torch.Tensor, group: ParamGroup,
               updates: Sequence[int]) -> torch.Tensor:
        p = group.params
        bias = p.get(f"{name}.bias")
        if isinstance(module, nn.Conv2d):
            return stacked_conv2d(x, p[f"{name}.weight"], bias, module.stride[0], module.padding[0],
                                  group.sink, f"{name}.weight")
        if isinstance(module, nn.ConvTranspose2d):
            return stacked_conv_transpose2d(x, p[f"{name}.weight"], bias, module.stride[0],
                                            module.padding[0], group.sink, f"{name}.weight")
        if isinstance(module, nn.BatchNorm2d):
            return stacked_batch_norm(x, p[f"{name}.weight"], p[f"{name}.bias"], group.buffers[name],
                                      module, updates)
        if isinstance(module, nn.LeakyReLU):
            return F.leaky_relu(x, module.negative_slope, inplace=module.inplace)
        if isinstance(module, nn.ReLU):
            return F.relu(x, inplace=module.inplace)
        if isinstance(module, nn.Tanh):
            return torch.tanh(x)
        if isinstance(module, nn.Sequential):
            for i, child in enumerate(module):
                x = self._layer(child, f"{name}.{i}", x, group, updates)
            return x
        raise UsageError(f"multi-model training has no stacked form of {type(module).__name__}")

    def _encode(self, name: str, x: torch.Tensor, group: ParamGroup, updates: Sequence[int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """An Encoder (or the Discriminator, its twin): (head output, last feature map)."""
        module = getattr(self.template.generator, name) if group is self.g else self.template.discriminator
        head = "head" if group is self.g else "classifier"
        prefix = f"{name}." if group is self.g else ""
        f = self._layer(module.features, f"{prefix}features", x, group, updates)
        return self._layer(getattr(module, head), f"{prefix}{head}", f, group, updates), f

    def _generate(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The generators on xs (K, C, 1, H, W): z, x_hat (K, C, 1, H, W), z_hat."""
        gen = self.template.generator
        z, _ = self._encode("encoder1", xs, self.g, (0,))
        z = torch.tanh(z) if gen.bounded else z
        x_hat = self._layer(gen.decoder.net, "decoder.net", z, self.g, (0,))
        z_hat, _ = self._encode("encoder2", x_hat, self.g, (0,))
        z_hat = torch.tanh(z_hat) if gen.bounded else z_hat
        return z, x_hat, z_hat

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (K, C, H, W), one image per model -> z, x_hat, z_hat, D logits (K, 2), D features."""
        xs = x.unsqueeze(2)
        z, x_hat, z_hat = self._generate(xs)
        logit, feat = self._encode("", torch.cat([xs, x_hat], dim=2), self.d, D_BN_UPDATES)
        k = self.k
        return (z.view(k, 1, -1), x_hat.view(k, 1, *x.shape[1:]), z_hat.view(k, 1, -1),
                logit.view(k, 2), feat)

    # -- one training step -----------------------------------------------------------------------

    def step(self, x: torch.Tensor, run: RunConfig, extra: ExtraLoss | None = None) -> list[list[float]]:
        """One G step then one D step for every model; rows of per-model losses (LOSS_KEYS, then
        ``extra``'s terms in its order). ``extra``'s ``total`` joins each generator's loss."""
        z, x_hat, z_hat, logit, feat = self.forward(x)
        feat_real = feat[:, :, 0].detach().unsqueeze(1)
        feat_fake = feat[:, :, 1].unsqueeze(1)
        terms = torch.func.vmap(functools.partial(generator_loss, weights=run.loss, cfg=self.cfg))(
            x.unsqueeze(1), z, x_hat, z_hat, feat_real, feat_fake)
        loss = terms["total"].sum()
        extra_terms = extra.loss(z, x_hat, z_hat) if extra is not None else {}
        if extra_terms:
            loss = loss + extra_terms["total"].sum()
        self.d.sink.weights = False  # D's weight gradients from G's loss would be discarded
        loss.backward(inputs=self._g_inputs(extra), retain_graph=True)
        self.d.sink.weights = True
        self._adam_g(extra)
        loss_d = torch.func.vmap(discriminator_loss)(logit[:, :1], logit[:, 1:])
        loss_d.sum().backward(inputs=list(self.d.params.values()))
        self._adam(self.d)
        out = torch.stack([terms[k] for k in ("adversarial", "contextual", "latent", "constraint",
                                              "total")] + [loss_d] + list(extra_terms.values())).detach()
        return out.cpu().tolist()

    def step_generator_only(self, x: torch.Tensor, extra: ExtraLoss) -> list[list[float]]:
        """One G step on ``extra``'s loss alone (no GAN loss, D untouched); rows of its terms.

        Distillation structure 1 (frozen teacher, student K only) trains this way.
        """
        k = self.k
        z, x_hat, z_hat = self._generate(x.unsqueeze(2))
        terms = extra.loss(z.view(k, 1, -1), x_hat.view(k, 1, *x.shape[1:]), z_hat.view(k, 1, -1))
        terms["total"].sum().backward(inputs=self._g_inputs(extra))
        self._adam_g(extra)
        return torch.stack(list(terms.values())).detach().cpu().tolist()

    def _g_inputs(self, extra: ExtraLoss | None) -> list[torch.Tensor]:
        inputs = list(self.g.params.values())
        if extra is not None and extra.group is not None:
            inputs += list(extra.group.params.values())
        return inputs

    def _adam_g(self, extra: ExtraLoss | None) -> None:
        """The generator's Adam; ``extra.group`` shares its optimizer (and so its settings)."""
        self._adam(self.g)
        if extra is not None and extra.group is not None:
            self._adam(extra.group)

    def _adam(self, group: ParamGroup) -> None:
        group.collect_grads()
        params, grads, m, v, steps = group.rows
        with torch.no_grad():
            adam_update(params, grads, m, v, [], steps, **self.adam)

    # -- per-model surgery -----------------------------------------------------------------------

    @torch.no_grad()
    def reinit_discriminator(self, i: int) -> None:
        """``EDEGANModel.reinit_discriminator`` for model ``i`` (draws from the current RNG)."""
        disc = self.template.discriminator
        disc.apply(weights_init)
        for name, p in disc.named_parameters():
            self.d.params[name][i].copy_(p)

    @torch.no_grad()
    def clear_adam(self, group: ParamGroup, i: int) -> None:
        """``opt.state.clear()`` for model ``i``: Adam restarts from step 0."""
        for name in group.params:
            group.exp_avg[name][i].zero_()
            group.exp_avg_sq[name][i].zero_()
        group.steps[:, i] = 0

    def snapshot(self, i: int) -> dict[str, torch.Tensor]:
        """Model ``i``'s weights, buffers and generator Adam state (``train._snapshot``)."""
        out: dict[str, torch.Tensor] = {}
        for tag, group in (("g", self.g), ("d", self.d)):
            out |= {f"{tag}.p.{n}": t[i].detach().clone() for n, t in group.params.items()}
            out |= {f"{tag}.b.{o}.{k}": t[i].clone() for o, b in group.buffers.items() for k, t in b.items()}
        out |= {f"m.{n}": t[i].clone() for n, t in self.g.exp_avg.items()}
        out |= {f"v.{n}": t[i].clone() for n, t in self.g.exp_avg_sq.items()}
        out["steps"] = self.g.steps[:, i].clone()
        return out

    @torch.no_grad()
    def restore(self, i: int, snap: dict[str, torch.Tensor]) -> None:
        for tag, group in (("g", self.g), ("d", self.d)):
            for n, t in group.params.items():
                t[i].copy_(snap[f"{tag}.p.{n}"])
            for o, b in group.buffers.items():
                for k, t in b.items():
                    t[i].copy_(snap[f"{tag}.b.{o}.{k}"])
        for n in self.g.params:
            self.g.exp_avg[n][i].copy_(snap[f"m.{n}"])
            self.g.exp_avg_sq[n][i].copy_(snap[f"v.{n}"])
        self.g.steps[:, i] = snap["steps"]

    def weights_finite(self, i: int) -> bool:
        return all(bool(torch.isfinite(t[i]).all()) for g in (self.g, self.d) for t in g.params.values())

    @torch.no_grad()
    def write_back(self, i: int, state: GanState) -> None:
        """Copy model ``i`` into ``state`` (module weights, buffers, torch Adam state)."""
        write_group(self.g, i, state.model.generator, state.opt_g)
        write_group(self.d, i, state.model.discriminator, state.opt_d)


@dataclass
class ExtraLoss:
    """A per-model term added to every generator's loss in ``StackedGan.step``.

    ``loss(z, x_hat, z_hat)`` (each (K, 1, ...)) returns named (K,) terms including ``total``;
    its gradient reaches the generators and ``group``, stacked parameters the term owns (e.g.
    distillation's student-side projection) that the generator's optimizer also updates.
    """

    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
    group: ParamGroup | None = None


@torch.no_grad()
def write_group(group: ParamGroup, i: int, module: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Copy row ``i`` of ``group`` into ``module`` and its Adam state into ``opt``."""
    for j, (name, p) in enumerate(module.named_parameters()):
        p.copy_(group.params[name][i])
        if float(group.steps[j, i]) == 0:
            opt.state.pop(p, None)
        else:
            opt.state[p] = {"step": group.steps[j, i].clone(),
                            "exp_avg": group.exp_avg[name][i].clone(),
                            "exp_avg_sq": group.exp_avg_sq[name][i].clone()}
    for name, buf in module.named_buffers():
        owner, _, key = name.rpartition(".")
        buf.copy_(group.buffers[owner][key][i])




def _adam_settings(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The keyword arguments ``adam_update`` needs to repeat ``opt``'s update."""
    g = opt.param_groups[0]
    beta1, beta2 = g["betas"]
    return {"foreach": g.get("foreach"), "fused": g.get("fused"), "capturable": False,
            "differentiable": False, "amsgrad": g["amsgrad"], "beta1": beta1, "beta2": beta2,
            "lr": g["lr"], "weight_decay": g["weight_decay"], "eps": g["eps"],
            "maximize": g["maximize"]}


# ---------------------------------------------------------------------------------------------
# Per-model bookkeeping, as train.fit keeps it.


class RngStream:
    """One model's global-RNG stream (CPU, and the device's when on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def capture(self) -> None:
        self.cpu = torch.get_rng_state()
        if self.cuda is not None:
            self.cuda = torch.cuda.get_rng_state(self.device)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run with this model's stream as the global RNG, then save where it got to."""
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        yield
        self.capture()


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


def train_runs(cfgs: Sequence[RunConfig], run_dirs: Sequence[Path], resume: bool = False,
               progress: bool = True) -> list[dict[str, Any]]:
    """``train.train_run`` for several run folders trained together; metrics per folder.

    With ``resume``, folders that already finished with the same config are read back, not
    retrained (as ``train_run`` does). Runs that finish are scored and written before a
    divergence of another is reported.
    """
    from pkdgan.data import one_class_split
    from pkdgan.results import finish_run

    metrics: dict[int, dict[str, Any]] = {}
    todo = []
    for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
        saved = runs.read_json(run_dir / runs.CONFIG) if resume and runs.is_finished(run_dir) else None
        if isinstance(saved, dict) and saved.get("config_hash") == cfg.hash():
            metrics[i] = runs.read_json(run_dir / runs.METRICS)
        else:
            todo.append(i)
    splits = {i: one_class_split(cfgs[i].data, cfgs[i].model.image_size, cfgs[i].model.channels,
                                 cfgs[i].train.seed) for i in todo}
    results = fit_many([cfgs[i] for i in todo], [splits[i] for i in todo], [run_dirs[i] for i in todo],
                       resume=resume, progress=progress) if todo else []
    errors = []
    for i, res in zip(todo, results, strict=True):
        cfg, split, run_dir = cfgs[i], splits[i], run_dirs[i]
        if res.error is not None:
            errors.append(str(res.error))
            continue
        extra = res.info | {"dataset": cfg.data.dataset, "normal_class": cfg.data.normal_class,
                            "batch_size": cfg.train.batch_size, "width": cfg.model.width,
                            "seed": cfg.train.seed, "config_hash": cfg.hash(),
                            "n_holdout": len(split.holdout)}
        metrics[i] = finish_run(run_dir, res.model.generator, split, cfg.train.score, extra)
        (run_dir / runs.TRAIN_STATE).unlink(missing_ok=True)
    if errors:
        raise DivergenceError("; ".join(errors))
    return [metrics[i] for i in range(len(cfgs))]
