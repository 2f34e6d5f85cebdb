"""Score kinds beyond the two raw ones: a standardised combination, and a label-free choice.

The raw scores can fail silently and in opposite directions: on a user's own folder the
latent score ranked stripe images *more* normal than every blob (AUROC 0.015) while the
reconstruction error separated them perfectly (docs/scores.md). Nothing in an unlabelled run
tells the user, so:

- ``combined`` standardises each raw score by the mean and std of the held-out *normal* images
  and takes the larger of the two z-scores. The maximum, not the sum: an anomaly that one score
  ranks as extra-normal (a very negative z) would cancel the other score's evidence in a sum,
  whereas the maximum only needs one score to notice it (measured in docs/scores.md).
- ``auto`` picks, per run, the kind that best separates synthetic anomalies made from the
  held-out normal images (``pkdgan.synthetic``) from those clean images. Test labels are never
  read: the choice uses only the held-out slice of the *training* images.

Everything here works on numpy arrays and, for the ONNX graph, on torch tensors alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from pkdgan.config import SCORES as SCORE_CHOICES  # what a user may ask for
from pkdgan.errors import UsageError

BASE_KINDS = ("latent", "reconstruction")
COMBINED = "combined"
AUTO = "auto"
KINDS = (*BASE_KINDS, COMBINED)  # what a run's scores can be
# among kinds whose synthetic AUROC ties exactly, the first of these wins: combined needs only
# one of its scores to notice an anomaly, so it is the safer bet on a tie
PREFERENCE = (COMBINED, "reconstruction", "latent")
SYNTHETIC_SEED = 0
STD_FLOOR = 1e-12

Array = TypeVar("Array", np.ndarray, torch.Tensor)
Stats = dict[str, dict[str, float]]


def check_kind(kind: str, allowed: tuple[str, ...] = SCORE_CHOICES) -> str:
    """``kind`` if it is allowed, else one clear UsageError."""
    if kind not in allowed:
        raise UsageError(f"score must be one of {', '.join(allowed)}, got {kind!r}")
    return kind


def default_score(dataset: str) -> str:
    """The score a run uses when none is asked for.

    ``auto`` for a user's own folder (where no one may have labels to notice a failing score);
    ``latent``, the paper's, for the benchmark datasets, so the paper's studies and their
    config hashes stay as they were.
    """
    return AUTO if dataset == "folder" else "latent"


def standardization(holdout: Mapping[str, np.ndarray]) -> Stats:
    """Mean and std of each raw score over the held-out normal images ({} without any)."""
    out: Stats = {}
    for k in BASE_KINDS:
        s = np.asarray(holdout.get(k, ()), dtype=np.float64)
        if len(s):
            out[k] = {"mean": float(s.mean()), "std": float(s.std())}
    return out if len(out) == len(BASE_KINDS) else {}


def _z(s: Array, stats: Mapping[str, float]) -> Array:
    return (s - stats["mean"]) / max(stats["std"], STD_FLOOR)


def combine(latent: Array, reconstruction: Array, stats: Stats) -> Array:
    """The larger of the two held-out-standardised scores, per image."""
    if not stats:
        raise UsageError("the combined score needs held-out normal images to standardise by")
    zl, zr = _z(latent, stats["latent"]), _z(reconstruction, stats["reconstruction"])
    if isinstance(zl, torch.Tensor):
        return torch.maximum(zl, zr)
    return np.maximum(zl, zr)


def kind_scores(latent: Array, reconstruction: Array, kind: str, stats: Stats) -> Array:
    """The scores of one resolved kind from the two raw ones (``auto`` must be resolved first)."""
    if kind == "latent":
        return latent
    if kind == "reconstruction":
        return reconstruction
    if kind == COMBINED:
        return combine(latent, reconstruction, stats)
    raise UsageError(f"score kind must be one of {', '.join(KINDS)}, got {kind!r}")


def with_combined(raw: Mapping[str, np.ndarray], stats: Stats, prefix: str = "") -> dict[str, np.ndarray]:
    """``raw`` plus ``{prefix}combined`` when both raw scores and the statistics are there."""
    out = dict(raw)
    lat, rec = raw.get(f"{prefix}latent"), raw.get(f"{prefix}reconstruction")
    if stats and lat is not None and rec is not None:
        out[f"{prefix}{COMBINED}"] = combine(np.asarray(lat), np.asarray(rec), stats).astype(np.float32)
    return out


def pick(aurocs: Mapping[str, float]) -> str:
    """The kind with the highest synthetic AUROC; only exact ties go by ``PREFERENCE``.

    Plain argmax, measured against two alternatives on the same recorded synthetic AUROCs
    (docs/scores.md, ``scripts/score_kinds_table.py --rules``): sending near-ties (within 0.005)
    to ``combined`` lost the blob/stripe case (seed 0: combined 0.537 vs reconstruction 0.542
    on synthetic anomalies → test AUROC 0.941 vs 0.958), and dropping a score inverted on
    synthetic anomalies lost colour-hue, where the latent score is inverted on the synthetic
    anomalies yet works on the real ones. Argmax was best or within 0.001 of best on all three
    tables (synthetic folders, MNIST / Fashion-MNIST / CIFAR-10 proxies).
    """
    best = max(aurocs.values())
    return next(k for k in PREFERENCE if k in aurocs and aurocs[k] == best)


def synthetic_aurocs(generator: nn.Module, holdout: torch.Tensor, holdout_raw: Mapping[str, np.ndarray],
                     stats: Stats, seed: int = SYNTHETIC_SEED) -> dict[str, Any]:
    """AUROC of every kind, synthetic anomalies (positive) vs the clean held-out images.

    Each corruption contributes equally many images, so the pooled AUROC is the mean of the
    per-corruption AUROCs (also returned, to show which anomalies a kind misses).
    """
    from pkdgan.edegan import score_both
    from pkdgan.synthetic import synthetic_anomalies

    x, which, names = synthetic_anomalies(holdout, seed)
    lat, rec = score_both(generator, x)
    fake = with_combined({"latent": lat.numpy(), "reconstruction": rec.numpy()}, stats)
    clean = with_combined(dict(holdout_raw), stats)

    def auc(kind: str, mask: np.ndarray) -> float:
        neg, pos = clean[kind], fake[kind][mask]
        return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))

    every = np.ones(len(x), bool)
    return {
        "synthetic_auroc": {k: auc(k, every) for k in KINDS},
        "synthetic_auroc_by_corruption": {
            name: {k: round(auc(k, which == i), 4) for k in KINDS} for i, name in enumerate(names)
        },
        "n_clean": int(len(clean["latent"])),
        "n_synthetic": int(len(x)),
        "seed": seed,
    }


def resolve(requested: str, generator: nn.Module, holdout: torch.Tensor,
            holdout_raw: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The kind a run scores with, and why: ``{"score", "requested", "standardization", ...}``.

    ``auto`` adds the synthetic AUROCs it chose by. Without held-out normal images neither
    ``combined`` nor ``auto`` can work; the run then falls back to ``latent`` with one warning
    rather than losing the training it has just done.
    """
    check_kind(requested)
    stats = standardization(holdout_raw)
    out: dict[str, Any] = {"score": requested, "requested": requested, "standardization": stats}
    if requested in BASE_KINDS:
        return out
    if not stats or len(holdout) < 2:
        warnings.warn(f"score {requested!r} needs held-out normal images (raise --holdout-fraction "
                      "or give more training images); using the latent score", stacklevel=2)
        return out | {"score": "latent", "fallback": "no held-out normal images"}
    if requested == COMBINED:
        return out
    choice = synthetic_aurocs(generator, holdout, holdout_raw, stats)
    return out | {"score": pick(choice["synthetic_auroc"])} | choice


def kind_aurocs(scores: Mapping[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """``auroc_<kind>`` of every kind present (labelled test sets only; for reporting)."""
    return {f"auroc_{k}": float(roc_auc_score(labels, scores[k])) for k in KINDS if k in scores}


FAR_BELOW = 0.1


def score_warning(chosen: str, aurocs: Mapping[str, float]) -> str | None:
    """One line when the chosen kind's test AUROC is below chance or far below another kind's."""
    mine = aurocs.get(f"auroc_{chosen}")
    if mine is None:
        return None
    best_key = max(aurocs, key=lambda k: aurocs[k])
    best, other = float(aurocs[best_key]), best_key.removeprefix("auroc_")
    if mine < 0.5:
        hint = f"; {other}: {best:.3f}, consider --score {other}" if best >= 0.5 else ""
        return (f"the {chosen} score ranks anomalies as more normal than normal images "
                f"(test AUROC {mine:.3f} < 0.5{hint})")
    if best - mine >= FAR_BELOW:
        return (f"the {chosen} score's test AUROC {mine:.3f} is far below the {other} score's "
                f"{best:.3f}; consider --score {other}")
    return None
