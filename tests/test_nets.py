import math

import pytest
import torch
from torch import nn

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import UsageError
from pkdgan.models.nets import Decoder, Discriminator, Encoder, build_discriminator, build_generator


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_every_size_and_channel(size: int, channels: int) -> None:
    cfg = ModelConfig(image_size=size, channels=channels, nz=7, width=4)
    g, d = build_generator(cfg), build_discriminator(cfg)
    x = torch.rand(2, channels, size, size) * 2 - 1
    z, x_hat, z_hat = g(x)
    assert z.shape == (2, 7) and z_hat.shape == (2, 7)
    assert x_hat.shape == x.shape
    assert x_hat.abs().max() <= 1.0
    logit, feat = d(x)
    assert logit.shape == (2,)
    assert feat.shape == (2, 4 * 2 ** (int(math.log2(size)) - 3), 4, 4)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_layer_count_follows_image_size(size: int) -> None:
    enc = Encoder(size, 1, 10, 8)
    strided = [m for m in enc.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == int(math.log2(size)) - 2  # halve until 4x4
    dec = Decoder(size, 1, 10, 8)
    ups = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2)]
    assert len(ups) == len(strided)


def test_first_encoder_layer_has_no_batchnorm() -> None:
    enc = Encoder(32, 3, 100, 64)
    assert isinstance(enc.features[0], nn.Conv2d) and isinstance(enc.features[1], nn.LeakyReLU)
    assert [m.out_channels for m in enc.modules() if isinstance(m, nn.Conv2d)] == [64, 128, 256, 100]


def test_dcgan_init_is_applied_to_every_conv_and_bn() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=32, channels=3, nz=100, width=64)
    for net in (build_generator(cfg), build_discriminator(cfg)):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                w = m.weight.detach()
                # PyTorch's default (kaiming-uniform) would give std ~ 1/sqrt(3*fan_in), not 0.02
                assert abs(w.mean().item()) < 0.004
                assert 0.017 < w.std().item() < 0.023, m
            elif isinstance(m, nn.BatchNorm2d):
                assert torch.all(m.bias == 0)
                assert abs(m.weight.mean().item() - 1.0) < 0.01
                assert m.weight.std().item() < 0.05
                assert not torch.all(m.weight == 1.0)  # default BN init would be exactly 1


def test_encoder2_has_its_own_weights() -> None:
    g = build_generator(ModelConfig(image_size=16, nz=8, width=4))
    p1 = dict(g.encoder1.named_parameters())
    p2 = dict(g.encoder2.named_parameters())
    assert p1.keys() == p2.keys()
    assert all(p1[k].data_ptr() != p2[k].data_ptr() for k in p1)
    assert any(not torch.equal(p1[k], p2[k]) for k in p1)


def test_tanh_constraint_bounds_both_codes() -> None:
    g = build_generator(ModelConfig(image_size=16, nz=8, width=4, latent_constraint="tanh"))
    z, _, z_hat = g(torch.randn(3, 1, 16, 16) * 50)
    assert z.abs().max() < 1 and z_hat.abs().max() < 1


def test_discriminator_shares_encoder_shape() -> None:
    d = Discriminator(32, 1, 8)
    assert d.classifier.out_channels == 1


@pytest.mark.parametrize("size", [0, 8, 24, 100, 128])
def test_bad_image_sizes_are_rejected(size: int) -> None:
    with pytest.raises(UsageError, match="power of two"):
        ModelConfig(image_size=size)
