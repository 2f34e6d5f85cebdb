"""Training: one loop (``loop``) with module and stacked engines for EDE-GAN, P-KDGAN
distillation and K models at once."""
