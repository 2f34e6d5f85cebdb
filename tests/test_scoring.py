"""The fast scorers must give ``edegan.score_both``'s scores (up to float rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import UsageError
from pkdgan.deploy import backends
from pkdgan.deploy.scores import fast_scores
from pkdgan.inference.scoring import InferenceGenerator, SubPixel, TorchScorer
from pkdgan.models.edegan import score_both
from pkdgan.models.nets import build_generator


def trained_like(cfg: ModelConfig) -> nn.Module:
    """A generator whose BatchNorm running statistics are not the initial 0/1."""
    torch.manual_seed(0)
    g = build_generator(cfg)
    with torch.no_grad():
        for _ in range(3):
            g(torch.rand(6, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1)
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return g.eval()


@pytest.mark.parametrize("constraint", ["none", "tanh"])
def test_torch_scorer_matches_score_both(constraint: str) -> None:
    cfg = ModelConfig(image_size=32, channels=3, nz=8, width=4, latent_constraint=constraint)
    g = trained_like(cfg)
    x = torch.rand(37, 3, 32, 32) * 2 - 1
    want = score_both(g, x)
    got = TorchScorer(g, batch_size=16).scores(x)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert all(p.requires_grad for p in g.parameters()), "the caller's generator is left as it was"
    assert not any(p.requires_grad for p in InferenceGenerator(g).parameters())


def test_sub_pixel_equals_transposed_conv() -> None:
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(5, 7, 4, 4, generator=g), torch.randn(7, generator=g)
    x = torch.randn(2, 5, 6, 6, generator=g)
    want = torch.conv_transpose2d(x, w, b, stride=2, padding=1)
    torch.testing.assert_close(SubPixel(w, b)(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", backends.names())
def test_every_registered_backend_scores_like_the_training_modules(backend: str) -> None:
    if not backends.installed(backend):
        pytest.skip(backends.get(backend).unavailable())
    cfg = ModelConfig(image_size=16, channels=1, nz=8, width=4)
    g = trained_like(cfg)
    x = torch.rand(20, 1, 16, 16) * 2 - 1
    want = score_both(g, x)[0].numpy()
    np.testing.assert_allclose(fast_scores(g, x, cfg, backend=backend, batch_size=8), want,
                               rtol=1e-4, atol=1e-6)


def test_unknown_backend_is_refused() -> None:
    cfg = ModelConfig(image_size=16, channels=1, nz=8, width=4)
    with pytest.raises(UsageError, match="backend"):
        fast_scores(build_generator(cfg), torch.zeros(1, 1, 16, 16), cfg, backend="tpu")
