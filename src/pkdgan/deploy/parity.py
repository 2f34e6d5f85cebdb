"""Parity with PyTorch: the one measure every backend must pass before it scores a run.

The difference is relative to the largest score (max |got - expected| / max |expected|), so it
measures the error against the scale of the scores themselves; NaN never passes. Nothing here
imports torch: the native kernels check a freshly built object with it on a torch-free machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pkdgan.core.errors import PkdganError

PARITY_RTOL = 1e-4


def differences(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max absolute, max relative) difference; (0, 0) for no images."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        raise PkdganError(f"parity check failed: output shape {got.shape} != {expected.shape}")
    if not len(got):
        return 0.0, 0.0
    abs_diff = float(np.abs(got - expected).max())
    return abs_diff, abs_diff / max(float(np.abs(expected).max()), 1e-12)


def parity(runner: Any, expected: np.ndarray, images: np.ndarray, strict: bool = True,
           rtol: float = PARITY_RTOL) -> dict[str, Any]:
    """A runner's scores of ``images`` against PyTorch's ``expected``; ``strict`` raises past
    ``rtol``, otherwise ``ok`` says whether it passed."""
    name = getattr(runner, "backend", "runner")
    try:
        abs_diff, rel = differences(runner(images), expected)
    except PkdganError as e:
        raise PkdganError(f"{name} {e}") from None
    ok = rel <= rtol  # False for NaN
    if strict and not ok:
        raise PkdganError(f"{name} parity check failed: max relative difference {rel:.3g} > {rtol:g} "
                          f"(max abs {abs_diff:.3g})")
    return {"n_images": int(len(images)), "max_abs_diff": abs_diff, "max_rel_diff": rel, "ok": ok}
