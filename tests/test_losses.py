import pytest
import torch

from pkdgan.core.config import LossWeights, ModelConfig
from pkdgan.models.losses import (
    adversarial_loss,
    contextual_loss,
    discriminator_loss,
    generator_loss,
    latent_constraint_loss,
    latent_loss,
    latent_score,
    reconstruction_score,
)


def test_adversarial_is_mean_squared_feature_difference() -> None:
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    fake = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert adversarial_loss(real, fake).item() == pytest.approx((0 + 4 + 9 + 0) / 4)


def test_contextual_is_mean_absolute_error() -> None:
    x = torch.tensor([0.5, -0.5, 1.0, 0.0])
    x_hat = torch.tensor([0.0, 0.0, 0.0, 0.0])
    assert contextual_loss(x, x_hat).item() == pytest.approx(2.0 / 4)


def test_latent_is_mean_squared_code_difference() -> None:
    z = torch.tensor([[1.0, -1.0, 0.0]])
    z_hat = torch.tensor([[0.0, 1.0, 0.0]])
    assert latent_loss(z, z_hat).item() == pytest.approx(5.0 / 3)


def test_discriminator_loss_hand_computed() -> None:
    # logits 0 -> p = 0.5: BCE = ln 2 for both halves
    assert discriminator_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(0.693147, 1e-5)
    # confident and right: real logit +20, fake logit -20 -> ~0
    assert discriminator_loss(torch.full((2,), 20.0), torch.full((2,), -20.0)).item() < 1e-8
    # p_real = sigmoid(1), p_fake = sigmoid(-1): 0.5*(-ln s(1) - ln(1 - s(-1))) = -ln s(1)
    expected = -torch.log(torch.sigmoid(torch.tensor(1.0))).item()
    assert discriminator_loss(torch.tensor([1.0]), torch.tensor([-1.0])).item() == pytest.approx(expected)


def test_generator_loss_weights_each_term() -> None:
    x = torch.zeros(1, 1, 2, 2)
    x_hat = torch.ones(1, 1, 2, 2)  # contextual = 1
    z = torch.zeros(1, 2)
    z_hat = torch.full((1, 2), 2.0)  # latent = 4
    f_real, f_fake = torch.zeros(1, 3), torch.full((1, 3), 3.0)  # adversarial = 9
    t = generator_loss(x, z, x_hat, z_hat, f_real, f_fake, LossWeights(2.0, 50.0, 0.5), ModelConfig())
    assert t["adversarial"].item() == 9 and t["contextual"].item() == 1 and t["latent"].item() == 4
    assert t["total"].item() == pytest.approx(2 * 9 + 50 * 1 + 0.5 * 4)


def test_l2_latent_constraint() -> None:
    z = torch.tensor([[1.0, 3.0]])
    assert latent_constraint_loss(z, ModelConfig(latent_constraint="l2", constraint_weight=0.1)).item() == \
        pytest.approx(0.1 * 5.0)
    assert latent_constraint_loss(z, ModelConfig(latent_constraint="none")).item() == 0
    assert latent_constraint_loss(z, ModelConfig(latent_constraint="tanh")).item() == 0


def test_scores_per_image() -> None:
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    z_hat = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    assert latent_score(z, z_hat).tolist() == [1.0, 2.0]
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.5)])
    assert reconstruction_score(x, x_hat).tolist() == [0.0, 0.25]
