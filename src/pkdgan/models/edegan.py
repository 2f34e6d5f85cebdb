"""The EDE-GAN model: generator (E1 -> D -> E2), discriminator, and anomaly scores."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import UsageError
from pkdgan.models.losses import latent_score, reconstruction_score
from pkdgan.models.nets import build_discriminator, build_generator, weights_init


class EDEGANModel(nn.Module):
    """Generator + discriminator of one EDE-GAN. Only the generator is needed to score."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = build_generator(cfg)
        self.discriminator = build_discriminator(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.generator(x)

    def reinit_discriminator(self) -> None:
        """GANomaly's remedy when D wins outright (its loss collapses to ~0)."""
        self.discriminator.apply(weights_init)

    @torch.no_grad()
    def score(
        self, x: torch.Tensor, kind: str = "latent", batch_size: int = 256
    ) -> torch.Tensor:
        """Anomaly scores (higher = more anomalous) in eval mode, batched, on the model's device."""
        return score_generator(self.generator, x, kind, batch_size)


def score_generator(
    generator: nn.Module, x: torch.Tensor, kind: str = "latent", batch_size: int = 256
) -> torch.Tensor:
    """Scores of one raw kind: ``latent`` (the paper's) or ``reconstruction``.

    ``combined`` needs held-out statistics (``score_kinds``), so it is refused here rather
    than silently answered with another kind.
    """
    if kind not in ("latent", "reconstruction"):
        raise UsageError(f"raw score kind must be latent or reconstruction, got {kind!r}")
    latent, recon = score_both(generator, x, batch_size)
    return latent if kind == "latent" else recon


def score_batches(net: nn.Module, x: torch.Tensor, batch_size: int = 256,
                  device: torch.device | None = None,
                  memory_format: torch.memory_format | None = None,
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The one batched scorer: (latent, reconstruction, x_hat) per batch of ``x`` through a
    generator-shaped ``net``; callers choose eval mode and no_grad / inference_mode, and so run
    training-time, API, CLI and fast scoring through the same arithmetic."""
    device = device if device is not None else next(net.parameters()).device
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        xb = (xb.to(device, non_blocking=True) if memory_format is None
              else xb.to(device, memory_format=memory_format))
        z, x_hat, z_hat = net(xb)
        yield latent_score(z, z_hat).float().cpu(), reconstruction_score(xb, x_hat).float().cpu(), x_hat


def cat_scores(batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(latent, reconstruction) scores of every batch, joined (empty for no images)."""
    lat, rec = [], []
    for la, re, _ in batches:
        lat.append(la)
        rec.append(re)
    if not lat:
        return torch.empty(0), torch.empty(0)
    return torch.cat(lat), torch.cat(rec)


@torch.no_grad()
def score_both(
    generator: nn.Module, x: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """(latent scores, reconstruction scores) from one pass, for the paper's comparison."""
    was_training = generator.training
    generator.eval()
    out = cat_scores(score_batches(generator, x, batch_size))
    generator.train(was_training)
    return out
