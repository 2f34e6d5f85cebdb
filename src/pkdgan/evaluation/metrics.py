"""Metrics and thresholds. Thresholds come from held-out *normal* scores only."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from pkdgan.core.errors import DataError


def _summary(s: np.ndarray) -> dict[str, float]:
    if len(s) == 0:
        return {}
    q = np.quantile(s, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "n": int(len(s)), "mean": float(s.mean()), "std": float(s.std()),
        "min": float(s.min()), "q05": float(q[0]), "q25": float(q[1]), "median": float(q[2]),
        "q75": float(q[3]), "q95": float(q[4]), "max": float(s.max()),
    }


def has_both_labels(labels: np.ndarray) -> bool:
    """Whether a test set can be evaluated (AUROC needs normal and anomalous images)."""
    return len(np.unique(labels)) == 2


def evaluate_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """AUROC, AUPR (anomalous = positive) and score summaries per group."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if scores.shape != labels.shape:
        raise DataError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise DataError("scores contain NaN or Inf; the model diverged")
    if not has_both_labels(labels):
        raise DataError("the test set needs both normal and anomalous images for AUROC")
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "aupr": float(average_precision_score(labels, scores)),
        "n_test": int(len(labels)),
        "n_anomalous": int(labels.sum()),
        "scores_normal": _summary(scores[labels == 0]),
        "scores_anomalous": _summary(scores[labels == 1]),
    }


def threshold_from_normal(
    normal_scores: np.ndarray, fpr: float = 0.05, contamination: float | None = None
) -> float:
    """Score above which an image is flagged, from held-out normal scores.

    ``fpr`` is the target false-positive rate on normal data; ``contamination`` (PyOD's name)
    overrides it when given. Never computed from test labels.
    """
    s = np.asarray(normal_scores, dtype=np.float64)
    if len(s) == 0:
        raise DataError("no held-out normal scores to fit a threshold on")
    rate = contamination if contamination is not None else fpr
    if not 0.0 < rate < 1.0:
        raise DataError(f"false-positive rate / contamination must be in (0, 1), got {rate}")
    return float(np.quantile(s, 1.0 - rate, method="higher"))
