"""A trained generator's scores on a one-class split, and the score kind a run uses.

Pure functions of a generator and a split (no run folder): training calls them to report a
teacher's AUROC, the pipeline to finish a run, the API to calibrate a detector."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from pkdgan.data.datasets import OneClassSplit
from pkdgan.evaluation.metrics import threshold_from_normal
from pkdgan.evaluation.score_kinds import (
    BASE_KINDS,
    resolve,
    with_combined,
)
from pkdgan.models.edegan import score_both

DEFAULT_FPR = 0.05


def score_split(generator: nn.Module, split: OneClassSplit) -> dict[str, np.ndarray]:
    """Latent and reconstruction scores of the held-out normal images and the test set."""
    lat, rec = score_both(generator, split.test)
    out = {"latent": lat.numpy(), "reconstruction": rec.numpy()}
    if len(split.holdout):
        hl, hr = score_both(generator, split.holdout)
        out |= {"holdout_latent": hl.numpy(), "holdout_reconstruction": hr.numpy()}
    return out


def calibrate(holdout: np.ndarray, fpr: float = DEFAULT_FPR) -> dict[str, Any]:
    """Threshold and normalisation statistics from held-out normal scores only."""
    if len(holdout) == 0:
        return {"threshold": None, "fpr": fpr, "n_holdout": 0}
    return {
        "threshold": threshold_from_normal(holdout, fpr),
        "fpr": fpr,
        "n_holdout": int(len(holdout)),
        "holdout_mean": float(holdout.mean()),
        "holdout_std": float(holdout.std()),
    }


def scores_and_choice(generator: nn.Module, split: OneClassSplit, requested: str
                      ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every kind's scores (test and held-out) and the kind ``requested`` resolves to.

    The choice (``score_kinds.resolve``) sees the held-out normal images and their scores only,
    never the test set or its labels.
    """
    s = score_split(generator, split)
    held = {k: s[f"holdout_{k}"] for k in BASE_KINDS if f"holdout_{k}" in s}
    choice = resolve(requested, generator, split.holdout, held)
    stats = choice["standardization"]
    return with_combined(with_combined(s, stats), stats, "holdout_"), choice
