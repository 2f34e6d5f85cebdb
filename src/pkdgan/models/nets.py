"""DCGAN-style building blocks (pure ``nn.Module``s, no training logic).

Layer count follows the image size: stride-2 convs halve the map until it is 4x4, doubling
channels each time, then a 4x4 valid conv maps to ``nz`` x 1 x 1. The decoder mirrors it.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from pkdgan.core.config import ModelConfig


def _n_pyramid(image_size: int) -> int:
    """Number of stride-2 convs after the first one (image_size -> 4)."""
    return int(math.log2(image_size)) - 3


class PerImageBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that trains as usual and, in eval mode, normalises each image by its own
    per-channel statistics with BatchNorm's affine parameters.

    That is what GANomaly-family code scores with: it never calls ``.eval()``, so at batch 1 a
    test image is a batch of its own. Unlike training-mode BatchNorm on a test *batch*, an
    image's score cannot depend on its neighbours. The running statistics are still tracked
    (so a checkpoint loads into plain BatchNorm) but never used.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


PER_IMAGE_NORMS = (nn.InstanceNorm2d, PerImageBatchNorm2d)


def is_per_image(module: nn.Module) -> bool:
    """Whether ``module`` normalises each image by its own statistics when scoring."""
    return isinstance(module, PER_IMAGE_NORMS)


def frozen_instance_norm(module: nn.Module) -> nn.InstanceNorm2d:
    """An eval-only affine InstanceNorm equal to a per-image ``module`` when scoring (what
    exporters see: ONNX's InstanceNormalization)."""
    if not is_per_image(module):
        raise TypeError(f"{type(module).__name__} does not normalise per image")
    out = nn.InstanceNorm2d(module.num_features, eps=module.eps, affine=True)
    out.weight = nn.Parameter(module.weight.detach().clone(), requires_grad=False)
    out.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=False)
    return out.eval()


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalisation of ``ModelConfig.norm`` (affine in every kind)."""
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "batch-per-image":
        return PerImageBatchNorm2d(channels)
    return nn.BatchNorm2d(channels)


def with_per_image_norm(generator: nn.Module) -> nn.Module:
    """A copy of ``generator`` whose BatchNorms score each image by its own statistics: how a
    run trained with plain BatchNorm (at batch 1, GANomaly's protocol) is scored per image."""
    g = copy.deepcopy(generator)
    for m in g.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = PerImageBatchNorm2d
    return g


class Encoder(nn.Module):
    """x (N, C, S, S) -> code (N, nz); ``features`` is the last 4x4 feature map."""

    def __init__(self, image_size: int, channels: int, nz: int, width: int,
                 norm: str = "batch") -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        c = width
        for _ in range(_n_pyramid(image_size)):
            layers += [
                nn.Conv2d(c, c * 2, 4, 2, 1, bias=False),
                norm_layer(norm, c * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, nz, 4, 1, 0, bias=False)
        self.feature_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten(1)


class Decoder(nn.Module):
    """code (N, nz) -> image (N, C, S, S) in [-1, 1] (tanh)."""

    def __init__(self, image_size: int, channels: int, nz: int, width: int,
                 norm: str = "batch") -> None:
        super().__init__()
        n = _n_pyramid(image_size)
        c = width * 2**n
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, c, 4, 1, 0, bias=False),
            norm_layer(norm, c),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n):
            layers += [
                nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),
                norm_layer(norm, c // 2),
                nn.ReLU(inplace=True),
            ]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """Encoder-shaped critic: returns (real/fake logit (N,), last feature map).

    It returns a logit rather than a sigmoid probability so the BCE is computed stably
    (``binary_cross_entropy_with_logits``); ``torch.sigmoid(logit)`` is the probability.
    """

    def __init__(self, image_size: int, channels: int, width: int, norm: str = "batch") -> None:
        super().__init__()
        enc = Encoder(image_size, channels, 1, width, norm)
        self.features = enc.features
        self.classifier = enc.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.classifier(f).flatten(), f


class Generator(nn.Module):
    """E1 -> D -> E2: returns (z, x_hat, z_hat). E2 has its own weights."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        args = (cfg.image_size, cfg.channels)
        self.encoder1 = Encoder(*args, cfg.nz, cfg.width, cfg.norm)
        self.decoder = Decoder(*args, cfg.nz, cfg.width, cfg.norm)
        self.encoder2 = Encoder(*args, cfg.nz, cfg.width, cfg.norm)
        self.bounded = cfg.latent_constraint == "tanh"

    def encode(self, enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
        z = enc(x)
        return torch.tanh(z) if self.bounded else z

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encode(self.encoder1, x)
        x_hat = self.decoder(z)
        z_hat = self.encode(self.encoder2, x_hat)
        return z, x_hat, z_hat


def weights_init(module: nn.Module) -> None:
    """DCGAN init, applied to every conv and BN *inside* ``module`` (use ``module.apply``)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_generator(cfg: ModelConfig) -> Generator:
    g = Generator(cfg)
    g.apply(weights_init)
    return g


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    # D is never scored with: "batch-per-image" trains it as plain BatchNorm
    d = Discriminator(cfg.image_size, cfg.channels, cfg.width,
                      "instance" if cfg.norm == "instance" else "batch")
    d.apply(weights_init)
    return d
