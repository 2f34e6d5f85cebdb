"""Every loss term of EDE-GAN and P-KDGAN, one named function each.

Reductions are means, so a term's value does not depend on batch size; with K models trained
together the per-model terms are summed, keeping each model's gradient its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pkdgan.core.config import LossWeights, ModelConfig


def adversarial_loss(feat_real: torch.Tensor, feat_fake: torch.Tensor) -> torch.Tensor:
    """Feature matching: L2 between the discriminator's last feature maps of x and x_hat."""
    return F.mse_loss(feat_fake, feat_real)


def contextual_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """L1 between the image and its reconstruction."""
    return F.l1_loss(x_hat, x)


def latent_loss(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """L2 between z = E1(x) and z_hat = E2(D(z)); the quantity the anomaly score measures."""
    return F.mse_loss(z_hat, z)


def latent_constraint_loss(z: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The optional latent-space penalty; ``tanh`` is a bound in the network, not a loss."""
    if cfg.latent_constraint == "l2":
        return cfg.constraint_weight * z.pow(2).mean()
    return z.new_zeros(())


def generator_loss(
    x: torch.Tensor,
    z: torch.Tensor,
    x_hat: torch.Tensor,
    z_hat: torch.Tensor,
    feat_real: torch.Tensor,
    feat_fake: torch.Tensor,
    weights: LossWeights,
    cfg: ModelConfig,
) -> dict[str, torch.Tensor]:
    """Weighted sum of the generator's terms; every term is returned for logging."""
    terms = {
        "adversarial": adversarial_loss(feat_real, feat_fake),
        "contextual": contextual_loss(x, x_hat),
        "latent": latent_loss(z, z_hat),
        "constraint": latent_constraint_loss(z, cfg),
    }
    terms["total"] = (
        weights.adversarial * terms["adversarial"]
        + weights.contextual * terms["contextual"]
        + weights.latent * terms["latent"]
        + terms["constraint"]
    )
    return terms


def discriminator_loss(logit_real: torch.Tensor, logit_fake: torch.Tensor) -> torch.Tensor:
    """BCE with real -> 1 and fake -> 0, averaged over the two halves (as GANomaly)."""
    real = F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
    fake = F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake))
    return 0.5 * (real + fake)


def latent_score(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """Anomaly score per image: mean over latent dims of (z - z_hat)^2 (higher = anomalous)."""
    return (z - z_hat).pow(2).mean(dim=1)


def reconstruction_score(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Image reconstruction error per image (mean squared), kept for the paper's comparison."""
    return (x - x_hat).pow(2).flatten(1).mean(dim=1)


# --- P-KDGAN distillation: student outputs against the teacher's (both from the same x) ---


def distillation_z_loss(z_student: torch.Tensor, z_teacher: torch.Tensor) -> torch.Tensor:
    """K1: L2 between the first latent vectors z = E1(x) of student and teacher."""
    return F.mse_loss(z_student, z_teacher)


def distillation_image_loss(x_hat_student: torch.Tensor, x_hat_teacher: torch.Tensor) -> torch.Tensor:
    """Kx: L1 between the reconstructions D(z) of student and teacher."""
    return F.l1_loss(x_hat_student, x_hat_teacher)


def distillation_zhat_loss(z_hat_student: torch.Tensor, z_hat_teacher: torch.Tensor) -> torch.Tensor:
    """K2: L2 between the second latent vectors z_hat = E2(x_hat) of student and teacher."""
    return F.mse_loss(z_hat_student, z_hat_teacher)


def relative(term: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``term`` divided by the reference code's mean square (a constant: no gradient through
    it): the fraction of the teacher code's energy the student misses, whatever the code's scale.
    Raw K1/K2 are in the units of the teacher's latent space, which training can inflate or
    shrink; relative, they sit on one scale with each other across models and datasets."""
    return term / (reference.detach().pow(2).mean() + eps)


def distillation_loss(
    student: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    w1: float,
    wx: float,
    w2: float,
    scale: str = "raw",
) -> dict[str, torch.Tensor]:
    """K = w1*K1 + wx*Kx + w2*K2 over (z, x_hat, z_hat) pairs; every term returned for logging.

    Latents must already share a size: when the student's nz differs, the caller projects the
    student's z and z_hat into the teacher's latent space first. ``scale="relative"`` divides K1
    and K2 by the teacher code's mean square (``relative``); Kx stays in image units, like the
    student's own contextual term.
    """
    k1 = distillation_z_loss(student[0], teacher[0])
    k2 = distillation_zhat_loss(student[2], teacher[2])
    if scale == "relative":
        k1, k2 = relative(k1, teacher[0]), relative(k2, teacher[2])
    terms = {"k1": k1, "kx": distillation_image_loss(student[1], teacher[1]), "k2": k2}
    terms["total"] = w1 * terms["k1"] + wx * terms["kx"] + w2 * terms["k2"]
    return terms
