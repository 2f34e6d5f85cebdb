"""The stacked engine: K same-shaped EDE-GANs as one set of batched weights, trained at batch
size 1 through vmapped layers, with per-model Adam states, BatchNorm statistics and RNG streams."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adam import adam as adam_update

from pkdgan.core.config import RunConfig
from pkdgan.core.errors import UsageError
from pkdgan.models.edegan import EDEGANModel
from pkdgan.models.losses import discriminator_loss, generator_loss
from pkdgan.models.nets import weights_init
from pkdgan.models.stacked import (
    GradSink,
    stacked_batch_norm,
    stacked_conv2d,
    stacked_conv_transpose2d,
    stacked_instance_norm,
)
from pkdgan.training.loop import RngStream  # noqa: F401  (stacked members' RNG streams)
from pkdgan.training.train import GanState

LOSS_KEYS = ("g_adversarial", "g_contextual", "g_latent", "g_constraint", "g_total", "d")


# train.gan_step evaluates D on x, x_hat (generator step), then x, x_hat (discriminator step).
D_BN_UPDATES = (0, 1, 0, 1)


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
        if isinstance(module, nn.InstanceNorm2d):
            return stacked_instance_norm(x, p[f"{name}.weight"], p[f"{name}.bias"], module.eps)
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
