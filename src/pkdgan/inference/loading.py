"""Reading any run folder back as a fitted detector (``pkdgan.api.load``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pkdgan.core import runs
from pkdgan.core.config import (
    ModelConfig,
    from_dict,
)
from pkdgan.core.errors import UsageError
from pkdgan.evaluation.score_kinds import (
    AUTO,
    BASE_KINDS,
    KINDS,
    standardization,
)
from pkdgan.inference.detector import CALIBRATION_KEYS, DECISION_KEY, HOLDOUT_PREFIX, OneClassDetector
from pkdgan.inference.estimators import EDEGAN, PKDGAN
from pkdgan.models.nets import build_discriminator
from pkdgan.training.checkpoints import load_run_generator


def _params_from_config(cls: type[OneClassDetector], cfg: dict[str, Any]) -> dict[str, Any]:
    """Detector parameters of a run folder: saved ones, else what its configs imply."""
    saved = cfg.get("detector", {}).get("params")
    if isinstance(saved, dict):
        params = dict(saved)
        if cls is PKDGAN and isinstance(params.get("student"), dict):
            params["student"] = from_dict(ModelConfig, params["student"])
        return params
    model, train, data = cfg["model"], cfg.get("train", {}), cfg.get("data", {})
    common = {k: train[k] for k in ("batch_size", "lr", "seed", "score") if k in train}
    common |= {k: data[k] for k in ("resize", "holdout_fraction") if k in data}
    if not 0 < common.get("holdout_fraction", 0.1) < 0.5:
        common.pop("holdout_fraction")
    if cls is PKDGAN:
        distill_cfg = cfg.get("distill", {})
        names = set(PKDGAN().get_params()) - {"teacher", "student"}
        params = {k: v for k, v in distill_cfg.items() if k in names} | common
        return params | {"student": cfg.get("student_name") or from_dict(ModelConfig, model)}
    loss = cfg.get("loss", {})
    params = {k: model[k] for k in ("image_size", "channels", "nz", "width", "latent_constraint",
                                    "constraint_weight", "norm") if k in model}
    params |= {f"w_{k[:3]}": loss[k] for k in ("adversarial", "contextual", "latent") if k in loss}
    return params | common | ({"epochs": train["epochs"]} if "epochs" in train else {})


def load(run_dir: str | Path, *, score: str | None = None, fpr: float | None = None,
         contamination: float | None = None, normalize: bool = False, device: str = "cpu"
         ) -> OneClassDetector:
    """A fitted detector from any run folder: ``pkdgan train`` / ``distill`` runs or ``save``.

    The threshold is refitted from the run's held-out normal scores when ``fpr``,
    ``contamination`` or another ``score`` is asked for; otherwise it is the run's own
    (``calibration.json``). Test labels are never read. It scores with PyTorch; ``deploy.load``
    (``pkdgan.api.load``) adds the exported runtimes.
    """
    run_dir = Path(run_dir)
    cfg, generator = load_run_generator(run_dir)
    cls: type[OneClassDetector] = PKDGAN if cfg.get("kind") == "distill" else EDEGAN
    params = _params_from_config(cls, cfg) | {"normalize": normalize, "device": device}
    if score is not None:
        params["score"] = score
    det = cls(**{k: v for k, v in params.items() if k in cls().get_params()})
    det._check_params()
    ckpt = runs.load_tensors(run_dir / runs.CHECKPOINT)
    discriminator = _discriminator(cfg, ckpt, run_dir)
    det._set_model(generator, discriminator, {k: v for k, v in cfg.items() if k != "detector"})
    det.holdout_scores_ = _holdout_scores(run_dir, ckpt)
    if DECISION_KEY in ckpt:
        det._decision_raw = ckpt[DECISION_KEY].numpy()
    saved = runs.read_json(run_dir / runs.CALIBRATION) if (run_dir / runs.CALIBRATION).is_file() else {}
    det.score_choice_ = _recorded_choice(run_dir, det.score, saved, det.holdout_scores_)
    same_score = saved.get("score", cfg.get("train", {}).get("score", "latent")) == det.score_
    if same_score and fpr is None and contamination is None and saved.get("threshold") is not None:
        det.calibration_ = dict(saved)
    elif len(det._held()):
        det.calibrate(fpr, contamination)
    else:
        det.calibration_ = det.score_choice_ | {"threshold": None, "n_holdout": 0}
    return det


def _recorded_choice(run_dir: Path, requested: str, saved: dict[str, Any],
                     holdout: dict[str, np.ndarray]) -> dict[str, Any]:
    """``score_kinds.resolve``'s answer for a saved run: ``auto`` reads the choice made at training."""
    kind = requested
    if requested == AUTO:
        kind = saved.get("score")
        if saved.get("requested") != AUTO or kind not in KINDS:
            raise UsageError(f"{run_dir}: the run records no automatic score choice (it was trained "
                             f"with score {saved.get('score', 'latent')!r}); pass a score: "
                             f"{', '.join(KINDS)}")
    out = {"score": kind, "requested": requested, "standardization": standardization(holdout)}
    if kind == saved.get("score"):  # the run's own kind: keep how it was chosen
        out |= {k: v for k, v in saved.items() if k not in CALIBRATION_KEYS}
    return out


def _discriminator(cfg: dict[str, Any], ckpt: dict[str, torch.Tensor], run_dir: Path) -> nn.Module | None:

    state = runs.unflatten_state("discriminator", ckpt)
    if not state:
        return None
    d = build_discriminator(from_dict(ModelConfig, cfg["model"]))
    runs.load_module_state(d, state, run_dir / runs.CHECKPOINT)
    return d


def _holdout_scores(run_dir: Path, ckpt: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Held-out normal scores saved by ``save`` (checkpoint) or by the CLI (``scores.npz``)."""
    out = {k: ckpt[HOLDOUT_PREFIX + k].numpy() for k in BASE_KINDS if HOLDOUT_PREFIX + k in ckpt}
    if not out and (run_dir / runs.SCORES).is_file():
        z = runs.read_npz(run_dir / runs.SCORES)
        out = {k: z[f"holdout_{k}"] for k in BASE_KINDS if f"holdout_{k}" in z}
    return out
