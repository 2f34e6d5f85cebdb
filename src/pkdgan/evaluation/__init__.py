"""Metrics on score arrays: AUROC/AUPR, thresholds and the score kinds (latent, reconstruction, combined)."""
