"""Which torch device a run uses: one place, so training, detectors and commands agree."""

from __future__ import annotations

import torch

from pkdgan.core.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; a named CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name} requested but CUDA is not available")
    return torch.device(name)
