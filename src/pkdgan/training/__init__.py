"""Training loops: EDE-GAN, P-KDGAN distillation, and K models at once."""
