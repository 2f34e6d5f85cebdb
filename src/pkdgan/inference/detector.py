"""PyOD/sklearn-style detectors: fit on normal images, then score and flag new ones.

``EDEGAN().fit(X)`` trains the teacher, ``PKDGAN(teacher=...).fit(X)`` distils a small student;
``decision_function`` gives anomaly scores (higher = more anomalous, as in PyOD), ``predict``
0/1 labels (1 = anomalous), ``score_samples`` the sklearn sign (higher = more normal).

X is only normal data, so the threshold cannot come from labels: ``fit`` holds out a seeded
slice of X (``holdout_fraction``) that training never sees and puts the threshold at the
``1 - fpr`` quantile of its scores (``contamination``, PyOD's name, overrides ``fpr``). With
``normalize`` every score is standardised by the same held-out mean and std. The score kind
defaults to ``auto``: chosen on synthetic anomalies of that held-out slice (``score_kinds``).

A fitted detector saves to, and ``load`` reads from, an ordinary run folder (``config.json``,
``checkpoint.safetensors``, ``calibration.json``), so ``pkdgan predict`` / ``export`` accept it
and ``load`` accepts every run folder the CLI writes, students included. Never pickle.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from pkdgan.core import runs
from pkdgan.core.config import (
    ModelConfig,
    from_dict,
)
from pkdgan.core.device import resolve_device
from pkdgan.core.errors import DataError, UsageError
from pkdgan.core.presets import DEFAULT_PRESET, PRESETS
from pkdgan.data.datasets import OneClassSplit, holdout_indices
from pkdgan.evaluation.metrics import threshold_from_normal
from pkdgan.evaluation.score_kinds import (
    BASE_KINDS,
    check_kind,
    kind_scores,
    resolve,
    score_warning,
)
from pkdgan.inference.graph import export_onnx
from pkdgan.inference.predict import as_images
from pkdgan.models.edegan import score_batches, score_both

HOLDOUT_PREFIX = "detector.holdout_"
# calibration.json keys that describe the threshold, not how the score kind was chosen
CALIBRATION_KEYS = ("threshold", "fpr", "contamination", "n_holdout", "holdout_mean", "holdout_std",
                    "source")
DECISION_KEY = "detector.decision_scores"
MIN_HOLDOUT_WARN = 20

CPU_PRESET = PRESETS[DEFAULT_PRESET]  # the API's schedule defaults


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, held-out) indices; at least one image on each side."""
    if not 0.0 < fraction < 0.5:
        raise UsageError(f"holdout_fraction must be in (0, 0.5), got {fraction}")
    n_hold = max(1, int(round(n * fraction)))
    if n - n_hold < 1:
        raise DataError(f"need at least 2 normal images to train and hold out some, got {n}")
    if n_hold < MIN_HOLDOUT_WARN:
        warnings.warn(f"the threshold is fitted on only {n_hold} held-out normal image(s); "
                      "it will be coarse (give more images or a larger holdout_fraction)",
                      stacklevel=3)
    return holdout_indices(n, n_hold, seed)


class OneClassDetector(BaseEstimator, ABC):
    """Scoring, thresholds and persistence shared by the teacher and the student detectors.

    Fitted attributes: ``generator_`` (the scoring network, eval mode), ``model_config_``,
    ``calibration_`` (raw threshold and held-out statistics), ``holdout_scores_`` (raw latent and
    reconstruction scores of the held-out normal images), ``kind_`` and ``config_`` (the run
    config dict). ``threshold_`` and ``decision_scores_`` are in ``decision_function``'s units.
    """

    # set by subclasses' __init__ (sklearn stores every parameter as given)
    score: str
    fpr: float
    contamination: float | None
    holdout_fraction: float
    normalize: bool
    resize: str
    seed: int
    device: str
    progress: bool

    # --- fitting -------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> OneClassDetector:
        """Train on normal images X (``y`` is ignored, as in PyOD); fit the threshold on a held-out slice."""
        self._check_params()
        channels = self._channels(X)
        x = as_images(X, channels, self._image_size(), self.resize)
        train_idx, hold_idx = holdout_split(len(x), self.holdout_fraction, self.seed)
        split = OneClassSplit(x[train_idx], x[hold_idx], x[:0], np.zeros(0, np.int64),
                              np.zeros(0, np.int64))
        generator, discriminator, config, info = self._train(split, channels)
        self._set_model(generator, discriminator, config)
        self._calibrate_on(split.holdout)
        lat, rec = score_both(self.generator_, x)
        self._decision_raw = self._kind(lat.numpy(), rec.numpy())
        self.fit_info_ = info
        return self

    def _calibrate_on(self, holdout: torch.Tensor) -> None:
        """Held-out scores, the score kind (``auto``: chosen on synthetic anomalies of these
        images, no labels) and the threshold, from normal images training never saw."""
        lat, rec = score_both(self.generator_, holdout)
        self.holdout_scores_ = {"latent": lat.numpy(), "reconstruction": rec.numpy()}
        self.score_choice_ = resolve(self.score, self.generator_, holdout, self.holdout_scores_)
        warning = score_warning(self.score_choice_["score"], self.score_choice_.get("synthetic_auroc"),
                                self.score)
        if warning:
            warnings.warn(warning, stacklevel=3)
        self.calibrate()

    def _check_params(self) -> None:
        """Settings that would otherwise only fail after training."""
        check_kind(self.score)
        if self.resize not in ("pad", "bilinear"):
            raise UsageError(f"resize must be 'pad' or 'bilinear', got {self.resize!r}")
        for name in ("fpr", "contamination"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise UsageError(f"{name} must be in (0, 1), got {value}")

    @abstractmethod
    def _train(self, split: OneClassSplit, channels: int
               ) -> tuple[nn.Module, nn.Module | None, dict[str, Any], dict[str, Any]]:
        """(generator, discriminator or None, run config dict, training info) from ``split.train``."""

    @abstractmethod
    def _image_size(self) -> int:
        """Side of the square images the model takes."""

    @abstractmethod
    def _channels(self, X: Any) -> int:
        """Channels of the model to fit on X."""

    def _set_model(self, generator: nn.Module, discriminator: nn.Module | None,
                   config: dict[str, Any]) -> None:

        device = resolve_device(self.device)
        self.generator_ = generator.to(device).eval()
        self.discriminator_ = None if discriminator is None else discriminator.to(device).eval()
        self.config_ = config
        self.kind_ = str(config.get("kind", "edegan"))
        self.model_config_ = from_dict(ModelConfig, config["model"])

    def calibrate(self, fpr: float | None = None, contamination: float | None = None
                  ) -> OneClassDetector:
        """(Re)fit the threshold from the held-out normal scores: ``fpr`` or ``contamination``.

        Without arguments, the detector's own ``fpr`` / ``contamination`` are used.
        """
        self._check_fitted()
        if fpr is None and contamination is None:
            fpr, contamination = self.fpr, self.contamination
        held = self._held()
        if len(held) == 0:
            raise DataError("no held-out normal scores for this score: the threshold cannot be refitted")
        self.calibration_ = self.score_choice_ | {
            "score": self.score_,
            "threshold": threshold_from_normal(held, fpr if fpr is not None else self.fpr, contamination),
            "fpr": None if contamination is not None else fpr,
            "contamination": contamination,
            "n_holdout": int(len(held)),
            "holdout_mean": float(held.mean()),
            "holdout_std": float(held.std()),
        }
        return self

    def set_threshold(self, value: float) -> OneClassDetector:
        """Use a threshold of your own, in ``decision_function``'s units."""
        self._check_fitted()
        raw = float(value)
        if self.normalize:
            raw = raw * max(self._stat("holdout_std"), 1e-12) + self._stat("holdout_mean")
        self.calibration_ = self.calibration_ | {"threshold": raw, "fpr": None, "contamination": None,
                                                 "source": "user"}
        return self

    # --- scoring -------------------------------------------------------------------------------

    @property
    def score_(self) -> str:
        """The kind this detector scores with: ``score``, or what ``auto`` chose at fit."""
        self._check_fitted()
        return str(self.score_choice_["score"])

    def _kind(self, latent: Any, reconstruction: Any) -> Any:
        """This detector's kind from the two raw scores (arrays or tensors)."""
        return kind_scores(latent, reconstruction, self.score_, self.score_choice_["standardization"])

    def _held(self) -> np.ndarray:
        """Held-out normal scores of this detector's kind (empty when the run kept none)."""
        h = self.holdout_scores_
        if not all(len(h.get(k, ())) for k in BASE_KINDS):
            return np.asarray(h.get(self.score_, np.empty(0)))
        return np.asarray(self._kind(h["latent"], h["reconstruction"]))

    def _check_fitted(self) -> None:
        if not hasattr(self, "generator_"):
            raise UsageError(f"this {type(self).__name__} is not fitted yet: call fit(X) or load(run_dir)")

    def _images(self, X: Any) -> torch.Tensor:
        self._check_fitted()
        cfg = self.model_config_
        return as_images(X, cfg.channels, cfg.image_size, self.resize)

    def _stat(self, name: str) -> float:
        value = self.calibration_.get(name)
        if value is None:
            raise UsageError("normalize=True needs held-out normal statistics, which this run lacks")
        return float(value)

    def _normalized(self, raw: Any) -> Any:
        if not self.normalize or raw is None:
            return raw
        return (raw - self._stat("holdout_mean")) / max(self._stat("holdout_std"), 1e-12)

    @torch.no_grad()
    def score_and_reconstruct(self, x: torch.Tensor, batch_size: int = 256
                              ) -> tuple[np.ndarray, torch.Tensor]:
        """Scores (``decision_function`` units) and reconstructions of a preprocessed batch."""
        self._check_fitted()
        scores, recons = [], []
        for lat, rec, x_hat in score_batches(self.generator_, x, batch_size):
            scores.append(self._kind(lat, rec))
            recons.append(x_hat.float().cpu())
        return self._normalized(torch.cat(scores).numpy()), torch.cat(recons)

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly score per image (higher = more anomalous), normalised if ``normalize``."""
        runner = getattr(self, "runner_", None)
        if runner is not None:  # an exported runtime (deploy.load.use_backend); equal within parity
            return self._normalized(runner(self._images(X).numpy()))
        return self.score_and_reconstruct(self._images(X))[0]

    def use_runner(self, runner: Callable[[np.ndarray], np.ndarray] | None, backend: str) -> OneClassDetector:
        """Score ``decision_function`` / ``predict`` with ``runner`` (preprocessed float32 images ->
        raw scores; None: PyTorch). ``deploy.load.use_backend`` makes one that passed its parity
        check; reconstructions and maps always come from PyTorch."""
        self._check_fitted()
        self.runner_, self.backend_ = runner, backend
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """sklearn's convention: the opposite of ``decision_function`` (lower = more abnormal)."""
        return -self.decision_function(X)

    def predict(self, X: Any) -> np.ndarray:
        """1 = anomalous (score above ``threshold_``), 0 = normal, as in PyOD."""
        scores = self.decision_function(X)
        threshold = self.threshold_
        if threshold is None:
            raise UsageError("this detector has no threshold (no held-out normal scores)")
        return (scores > threshold).astype(np.int64)

    def reconstruct(self, X: Any) -> np.ndarray:
        """Reconstructions x_hat (N, C, S, S) in [-1, 1]."""
        return self.score_and_reconstruct(self._images(X))[1].numpy()

    @property
    def threshold_raw_(self) -> float | None:
        self._check_fitted()
        return self.calibration_.get("threshold")

    @property
    def threshold_(self) -> float | None:
        """Decision threshold in ``decision_function``'s units (normalised if ``normalize``)."""
        return self._normalized(self.threshold_raw_)

    @property
    def decision_scores_(self) -> np.ndarray | None:
        """Scores of the training X (PyOD); ``None`` for runs trained by the CLI."""
        self._check_fitted()
        return self._normalized(getattr(self, "_decision_raw", None))

    # --- persistence ---------------------------------------------------------------------------

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write a run folder (state dicts in safetensors + JSON) that ``load`` and the CLI read."""
        self._check_fitted()
        path = Path(path)
        if (path / runs.CONFIG).exists() and not overwrite:
            raise UsageError(f"{path} already holds a run; pass overwrite=True to replace it")
        path.mkdir(parents=True, exist_ok=True)
        tensors = runs.flatten_state("generator", self.generator_.state_dict())
        if self.discriminator_ is not None:
            tensors |= runs.flatten_state("discriminator", self.discriminator_.state_dict())
        for k, v in self.holdout_scores_.items():
            tensors[HOLDOUT_PREFIX + k] = torch.from_numpy(np.asarray(v, np.float32))
        if getattr(self, "_decision_raw", None) is not None:
            tensors[DECISION_KEY] = torch.from_numpy(np.asarray(self._decision_raw, np.float32))
        config = self.config_ | {"detector": {"class": type(self).__name__, "params": self._json_params()}}
        runs.write_json(path / runs.CONFIG, config)
        runs.save_tensors(path / runs.CHECKPOINT, tensors, {"kind": self.kind_})
        runs.write_json(path / runs.CALIBRATION, self.calibration_)
        return path

    def _json_params(self) -> dict[str, Any]:
        return self.get_params(deep=False)

    def to_onnx(self, path: str | Path) -> Path:
        """Export the scoring path (image batch -> raw scores) as one ONNX graph."""

        self._check_fitted()
        return export_onnx(self.generator_, self.model_config_, Path(path), self.score_,
                           self.score_choice_["standardization"])


# --- loading run folders -------------------------------------------------------------------------


