"""Parameters and FLOPs of the scoring path (E1 -> D -> E2), measured, not estimated.

``torch.utils.flop_counter.FlopCounterMode`` counts matrix multiplies and convolutions at
2 FLOPs per multiply-accumulate; BatchNorm, activations and tanh are not counted (they are
a few per output element, <1% here). The discriminator is left out: a deployed detector does
not run it. Counts are per image (batch 1, eval mode).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pkdgan.core.config import ModelConfig
from pkdgan.core.registry import get_entry
from pkdgan.models.losses import latent_score
from pkdgan.models.nets import build_discriminator, build_generator


@dataclass(frozen=True)
class Cost:
    """Size and compute of one config's scoring path, per image."""

    params: int
    params_discriminator: int
    flops: int

    @property
    def macs(self) -> int:
        return self.flops // 2


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def module_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one eval-mode forward pass of ``module`` on ``x``."""
    was_training = module.training
    module.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    module.train(was_training)
    return int(counter.get_total_flops())


def model_cost(cfg: ModelConfig) -> Cost:
    generator = build_generator(cfg)
    x = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size)
    return Cost(
        params=count_params(generator),
        params_discriminator=count_params(build_discriminator(cfg)),
        flops=module_flops(generator, x),
    )


def cost_table(names: list[str]) -> dict[str, dict]:
    """``pkdgan flops --json``: per name ``params``, ``flops``, ``macs``; students add
    ``dataset``, ``teacher`` and ``ratio`` = teacher FLOPs / student FLOPs at the student's
    image shape (and ``params_ratio``, ``paper_ratio``)."""
    out: dict[str, dict] = {}
    for name in names:
        entry = get_entry(name)
        cost = model_cost(entry.config)
        row: dict = {"params": cost.params, "params_discriminator": cost.params_discriminator,
                     "flops": cost.flops, "macs": cost.macs,
                     "width": entry.config.width, "nz": entry.config.nz,
                     "image_shape": [entry.config.channels, entry.config.image_size,
                                     entry.config.image_size]}
        if entry.dataset is not None:
            row["dataset"] = entry.dataset
        if entry.teacher is not None:
            s = entry.config
            t_cfg = dataclasses.replace(get_entry(entry.teacher).config,
                                        image_size=s.image_size, channels=s.channels)
            teacher = model_cost(t_cfg)
            row |= {"teacher": entry.teacher, "teacher_flops": teacher.flops,
                    "ratio": teacher.flops / cost.flops,
                    "params_ratio": teacher.params / cost.params,
                    "paper_ratio": entry.paper_ratio}
        out[name] = row
    return out


@torch.no_grad()
def scoring_speed(generator: nn.Module, channels: int, image_size: int, batch_size: int = 256,
                  min_seconds: float = 1.0) -> float:
    """Images/s of eval-mode scoring (E1 -> D -> E2 + latent score) on the generator's device.

    One warm-up batch, then whole batches until ``min_seconds`` have passed; compare models
    measured in the same process (and thread setting) only.
    """

    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    x = torch.randn(batch_size, channels, image_size, image_size, device=device)
    latent_score(*generator(x)[::2])
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < min_seconds:
        latent_score(*generator(x)[::2])
        n += batch_size
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    generator.train(was_training)
    return n / seconds
