"""Scoring a trained generator on a one-class split and writing the run's results.

Shared by ``train``, ``distill`` and ``test`` so every run folder has the same files.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from pkdgan import runs
from pkdgan.data import OneClassSplit
from pkdgan.edegan import score_both
from pkdgan.evaluate import evaluate_scores, has_both_labels, threshold_from_normal
from pkdgan.score_kinds import BASE_KINDS, KINDS, kind_aurocs, resolve, score_warning, with_combined

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


def finish_run(run_dir: Path, generator: nn.Module, split: OneClassSplit, score: str,
               extra: dict[str, Any]) -> dict[str, Any]:
    """Write calibration, raw scores and — last, marking the run finished — metrics.

    ``score`` may be ``auto``: calibration and metrics then record the kind chosen, and why.
    """
    s, choice = scores_and_choice(generator, split, score)
    kind = choice["score"]
    primary = s[kind]
    holdout = s.get(f"holdout_{kind}", np.empty(0, np.float32))
    calibration = calibrate(holdout) | choice
    if has_both_labels(split.test_labels):
        metrics = evaluate_scores(primary, split.test_labels)
        aurocs = kind_aurocs(s, split.test_labels)
        metrics |= aurocs
        warning = score_warning(kind, aurocs)
        if warning:
            warnings.warn(f"{run_dir}: {warning}", stacklevel=2)
    else:  # a folder dataset without test images: trained and calibrated, not evaluated
        metrics = {"auroc": None, "aupr": None, **{f"auroc_{k}": None for k in KINDS},
                   "n_test": int(len(split.test_labels)), "evaluated": False}
    if calibration["threshold"] is not None and metrics["auroc"] is not None:
        flagged = primary > calibration["threshold"]
        labels = split.test_labels.astype(bool)
        metrics["test_fpr_at_threshold"] = float(flagged[~labels].mean())
        metrics["test_tpr_at_threshold"] = float(flagged[labels].mean())
    metrics |= {"score": kind, "note": split.note, **extra}
    if score != kind:
        metrics |= {"score_requested": score} | {
            k: choice[k] for k in ("synthetic_auroc", "fallback") if k in choice}
    runs.write_json(run_dir / runs.CALIBRATION, calibration)
    runs.write_npz(
        run_dir / runs.SCORES,
        scores=primary,
        labels=split.test_labels,
        classes=split.test_classes,
        **s,
    )
    runs.write_json(run_dir / runs.METRICS, metrics)
    write_plots(run_dir, generator, split)
    return metrics


def write_plots(run_dir: Path, generator: nn.Module, split: OneClassSplit) -> None:
    """Plots are a convenience: any failure warns and never un-finishes the run."""
    try:
        from pkdgan.plots import write_run_plots

        write_run_plots(run_dir, generator, split.test, split.test_labels)
    except Exception as e:  # whatever matplotlib raises, the run stays finished
        warnings.warn(f"{run_dir}: plots not written ({type(e).__name__}: {e})", stacklevel=2)


def load_run_generator(run_dir: Path) -> tuple[dict[str, Any], nn.Module]:
    """Config dict and eval-mode generator of any finished or checkpointed run folder.

    Works for teacher and student runs alike: ``config.json`` names the scoring model's
    ``model`` config and the checkpoint holds its weights under ``generator.``.
    """
    from pkdgan.config import ModelConfig, from_dict
    from pkdgan.errors import UsageError
    from pkdgan.nets import build_generator

    run_dir = runs.require_run(Path(run_dir))
    cfg = runs.read_json(run_dir / runs.CONFIG)
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise runs.DataError(f"{run_dir / runs.CONFIG}: no model config in it")
    try:
        model_cfg = from_dict(ModelConfig, cfg["model"])
    except UsageError as e:  # a bad value in a saved run is a broken file, not a bad argument
        raise runs.DataError(f"{run_dir / runs.CONFIG}: {e}") from None
    generator = build_generator(model_cfg)
    path = run_dir / runs.CHECKPOINT
    state = runs.unflatten_state("generator", runs.load_tensors(path))
    runs.load_module_state(generator, state, path)
    return cfg, generator.eval()
