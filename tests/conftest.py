"""Shared fixtures: the real data folder when present, and small synthetic image sets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """``../shared/data`` beside the checkout (or $PKDGAN_SHARED_DATA) when it exists."""
    env = os.environ.get("PKDGAN_SHARED_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "mnist").is_dir():
            return candidate
    return None


@pytest.fixture
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("../shared/data not available")
    return root


@pytest.fixture(autouse=True)
def _quiet_torch():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


def bars(n: int, size: int, vertical: bool, seed: int) -> np.ndarray:
    """uint8 images with one bright bar at a random position: a clearly separable toy set."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 30, size=(n, size, size), dtype=np.uint8)
    for i in range(n):
        p = rng.integers(2, size - 4)
        if vertical:
            x[i, :, p : p + 3] = 255
        else:
            x[i, p : p + 3, :] = 255
    return x
