"""pkdgan: one-class novelty detection with EDE-GAN and P-KDGAN distillation."""

__version__ = "0.1.0"
