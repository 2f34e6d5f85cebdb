"""Foundations every layer uses: errors, configs (the run identity), presets, the model registry,
the run-folder format."""
