"""Scoring a trained generator on a one-class split and writing the run's results.

Shared by ``train``, ``distill`` and ``test`` so every run folder has the same files.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pkdgan.core import cpu, runs
from pkdgan.data.datasets import OneClassSplit
from pkdgan.evaluation.metrics import evaluate_scores, has_both_labels
from pkdgan.evaluation.score_kinds import (
    KINDS,
    below_chance_note,
    kind_aurocs,
    score_warning,
)
from pkdgan.evaluation.split_scores import calibrate, scores_and_choice
from pkdgan.reports import plots


def machine() -> dict[str, Any]:
    """Where a run was trained: CPU model and vector units, threads, torch (and a GPU's name)."""
    gpu = {"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {}
    return cpu.describe() | {"torch": torch.__version__, "threads": torch.get_num_threads()} | gpu


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
    warning = score_warning(kind, choice.get("synthetic_auroc"), score)  # label-free: folders too
    if warning:
        warnings.warn(f"{run_dir}: {warning}", stacklevel=2)
    if has_both_labels(split.test_labels):
        metrics = evaluate_scores(primary, split.test_labels)
        aurocs = kind_aurocs(s, split.test_labels)
        metrics |= aurocs
        note = below_chance_note(kind, aurocs)
        if note:
            warnings.warn(f"{run_dir}: {note}", stacklevel=2)
    else:  # a folder dataset without test images: trained and calibrated, not evaluated
        metrics = {"auroc": None, "aupr": None, **{f"auroc_{k}": None for k in KINDS},
                   "n_test": int(len(split.test_labels)), "evaluated": False}
    if calibration["threshold"] is not None and metrics["auroc"] is not None:
        flagged = primary > calibration["threshold"]
        labels = split.test_labels.astype(bool)
        metrics["test_fpr_at_threshold"] = float(flagged[~labels].mean())
        metrics["test_tpr_at_threshold"] = float(flagged[labels].mean())
    metrics |= {"score": kind, "note": split.note, **extra, "machine": machine()}
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
    if split.test_groups is not None and metrics["auroc"] is not None:
        metrics |= localisation(run_dir, generator, split, primary)
    runs.write_json(run_dir / runs.METRICS, metrics)
    write_plots(run_dir, generator, split)
    return metrics


def localisation(run_dir: Path, generator: nn.Module, split: OneClassSplit, primary: np.ndarray
                 ) -> dict[str, Any]:
    """MVTec-style metrics: image AUROC per defect type; with masks, pixel AUROC and PRO of the
    anomaly maps, which are written to ``maps.npz`` (at each image's original size) so anyone
    can recompute them."""
    from pkdgan.evaluation import pixel

    assert split.test_groups is not None
    out: dict[str, Any] = {"auroc_by_defect": pixel.per_group_auroc(primary, split.test_groups)}
    if split.test_masks is None or split.test_sizes is None:
        return out
    maps = pixel.to_original_sizes(pixel.anomaly_maps(generator, split.test), split.test_sizes)
    runs.write_npz(run_dir / runs.MAPS, groups=np.asarray(split.test_groups),
                   **{f"map_{i}": m for i, m in enumerate(maps)},
                   **{f"mask_{i}": k for i, k in enumerate(split.test_masks)})
    return out | {"pixel_auroc": pixel.pixel_auroc(maps, split.test_masks),
                  "pro": pixel.pro_score(maps, split.test_masks),
                  "pro_max_fpr": pixel.PRO_MAX_FPR, "map": "reconstruction error, smoothed"}


def write_plots(run_dir: Path, generator: nn.Module, split: OneClassSplit) -> None:
    """Plots are a convenience: any failure warns and never un-finishes the run."""
    try:

        plots.write_run_plots(run_dir, generator, split.test, split.test_labels)
    except Exception as e:  # whatever matplotlib raises, the run stays finished
        warnings.warn(f"{run_dir}: plots not written ({type(e).__name__}: {e})", stacklevel=2)


