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

import copy
import dataclasses
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from pkdgan import runs
from pkdgan.config import (
    DataConfig,
    DistillConfig,
    LossWeights,
    ModelConfig,
    RunConfig,
    TrainConfig,
    from_dict,
)
from pkdgan.data import OneClassSplit
from pkdgan.edegan import EDEGANModel, score_both
from pkdgan.errors import DataError, UsageError
from pkdgan.evaluate import threshold_from_normal
from pkdgan.losses import latent_score, reconstruction_score
from pkdgan.predict import as_images, infer_channels
from pkdgan.presets import DEFAULT_PRESET, PRESETS
from pkdgan.score_kinds import AUTO, BASE_KINDS, KINDS, check_kind, kind_scores, resolve, standardization

HOLDOUT_PREFIX = "detector.holdout_"
# calibration.json keys that describe the threshold, not how the score kind was chosen
CALIBRATION_KEYS = ("threshold", "fpr", "contamination", "n_holdout", "holdout_mean", "holdout_std",
                    "source")
DECISION_KEY = "detector.decision_scores"
MIN_HOLDOUT_WARN = 20

_CPU = PRESETS[DEFAULT_PRESET]  # the API's schedule defaults


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
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    return perm[n_hold:], perm[:n_hold]


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
        from pkdgan.train import resolve_device

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
        device = next(self.generator_.parameters()).device
        scores, recons = [], []
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            z, x_hat, z_hat = self.generator_(xb)
            lat, rec = latent_score(z, z_hat).float().cpu(), reconstruction_score(xb, x_hat).float().cpu()
            scores.append(self._kind(lat, rec))
            recons.append(x_hat.float().cpu())
        return self._normalized(torch.cat(scores).numpy()), torch.cat(recons)

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly score per image (higher = more anomalous), normalised if ``normalize``."""
        runner = getattr(self, "_runner", None)
        if runner is not None:  # an exported runtime (use_backend); equal within the parity tolerance
            return self._normalized(runner(self._images(X).numpy()))
        return self.score_and_reconstruct(self._images(X))[0]

    def use_backend(self, backend: str = "auto", run_dir: str | Path | None = None) -> OneClassDetector:
        """Score ``decision_function`` / ``predict`` with ``torch``, ``onnxruntime`` or ``openvino``.

        ``auto``: the fastest parity-checked runtime installed (``pkdgan.deploy_export``); the
        choice is in ``backend_``. Reconstructions always come from PyTorch.
        """
        from pkdgan.deploy_export import detector_runner

        self._check_fitted()
        self._runner, self.backend_ = detector_runner(self, backend, run_dir)
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
        from pkdgan.export import export_onnx

        self._check_fitted()
        return export_onnx(self.generator_, self.model_config_, Path(path), self.score_,
                           self.score_choice_["standardization"])


class EDEGAN(OneClassDetector):
    """The EDE-GAN teacher as a detector (defaults: the paper's network, the ``cpu`` preset's
    schedule; ``epochs=15, batch_size=1, drop_last=False`` is the paper's).

    Parameters mirror ``pkdgan train``: model shape (``image_size``, ``channels`` inferred from
    X when None, ``nz``, ``width``, ``latent_constraint``), loss weights (``w_adv``, ``w_con``,
    ``w_lat``), schedule (``epochs``, ``batch_size`` 1 = the paper's best, ``drop_last``,
    ``precision``, ``lr``), ``score``
    (``auto``, the default: the kind that best separates synthetic anomalies of the held-out
    images, see ``score_kinds``; or ``latent``, the paper's, ``reconstruction``, ``combined``;
    ``score_`` is the kind in use), and the threshold settings above.
    """

    def __init__(self, *, image_size: int = 32, channels: int | None = None, nz: int = 100,
                 width: int = 64, latent_constraint: str = "none", constraint_weight: float = 1.0,
                 w_adv: float = 1.0, w_con: float = 50.0, w_lat: float = 1.0,
                 epochs: int = _CPU.epochs, batch_size: int = _CPU.batch_size,
                 drop_last: bool = _CPU.drop_last, precision: str = _CPU.precision,
                 lr: float = 2e-4, score: str = AUTO, fpr: float = 0.05,
                 contamination: float | None = None, holdout_fraction: float = 0.1,
                 normalize: bool = False, resize: str = "pad", seed: int = 0, device: str = "auto",
                 progress: bool = False) -> None:
        self.image_size = image_size
        self.channels = channels
        self.nz = nz
        self.width = width
        self.latent_constraint = latent_constraint
        self.constraint_weight = constraint_weight
        self.w_adv = w_adv
        self.w_con = w_con
        self.w_lat = w_lat
        self.epochs = epochs
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.precision = precision
        self.lr = lr
        self.score = score
        self.fpr = fpr
        self.contamination = contamination
        self.holdout_fraction = holdout_fraction
        self.normalize = normalize
        self.resize = resize
        self.seed = seed
        self.device = device
        self.progress = progress

    def _image_size(self) -> int:
        return self.image_size

    def _channels(self, X: Any) -> int:
        return self.channels if self.channels is not None else infer_channels(X)

    def run_config(self, channels: int) -> RunConfig:
        """The ``RunConfig`` these parameters mean (validates them)."""
        return RunConfig(
            model=ModelConfig(image_size=self.image_size, channels=channels, nz=self.nz,
                              width=self.width, latent_constraint=self.latent_constraint,  # type: ignore[arg-type]
                              constraint_weight=self.constraint_weight),
            loss=LossWeights(adversarial=self.w_adv, contextual=self.w_con, latent=self.w_lat),
            data=DataConfig(dataset="folder", resize=self.resize,  # type: ignore[arg-type]
                            holdout_fraction=self.holdout_fraction),
            train=TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                              seed=self.seed, device=self.device, score=self.score,  # type: ignore[arg-type]
                              drop_last=self.drop_last, precision=self.precision),  # type: ignore[arg-type]
        )

    def _train(self, split: OneClassSplit, channels: int
               ) -> tuple[nn.Module, nn.Module | None, dict[str, Any], dict[str, Any]]:
        from pkdgan.train import fit

        cfg = self.run_config(channels)
        model, info = fit(cfg, split, None, progress=self.progress)
        config = cfg.to_dict() | {"kind": "edegan", "config_hash": cfg.hash()}
        return model.generator, model.discriminator, config, info

    def model(self) -> EDEGANModel:
        """A copy of the fitted generator + discriminator (what distillation needs as teacher)."""
        self._check_fitted()
        if self.discriminator_ is None:
            raise UsageError("this detector has no discriminator; it cannot serve as a teacher")
        m = EDEGANModel(self.model_config_)
        m.generator.load_state_dict(self.generator_.state_dict())
        m.discriminator.load_state_dict(self.discriminator_.state_dict())
        return m.eval()


class PKDGAN(OneClassDetector):
    """A P-KDGAN student distilled from an EDE-GAN teacher, as a detector.

    ``teacher`` is an ``EDEGAN`` detector: fitted ones are used as they are (a copy, so joint
    fine-tuning leaves yours untouched); unfitted ones (or None: default ``EDEGAN()``) are
    first trained on the same images. ``student`` is a registry name (``student-mnist``...) or a
    ``ModelConfig``; its image shape follows the teacher. The rest are ``DistillConfig`` fields
    (``mode`` ``progressive`` = the paper's best, structures, epochs, weights ``w1``/``wx``/``w2``,
    whose defaults are ``DistillConfig``'s: Kx only, chosen by the weight study in
    docs/results_distillation.md).
    After ``fit``, ``teacher_`` is the teacher that was used.
    """

    def __init__(self, *, teacher: EDEGAN | None = None, student: str | ModelConfig = "student-mnist",
                 mode: str = "progressive", structure: int = 2,
                 epochs: int = _CPU.student_schedule()[0], step1_structure: int = 2,
                 step2_structure: int = 3,
                 step1_epochs: int = _CPU.student_schedule()[0] - _CPU.student_schedule()[1],
                 step2_epochs: int = _CPU.student_schedule()[1], w1: float = 0.0, wx: float = 1.0,
                 w2: float = 0.0, batch_size: int = _CPU.student_batch_size,
                 drop_last: bool = _CPU.drop_last, precision: str = _CPU.precision,
                 lr: float = 2e-4, teacher_lr: float | None = None,
                 score: str = AUTO, fpr: float = 0.05, contamination: float | None = None,
                 holdout_fraction: float = 0.1, normalize: bool = False, resize: str = "pad",
                 seed: int = 0, device: str = "auto", progress: bool = False) -> None:
        self.teacher = teacher
        self.student = student
        self.mode = mode
        self.structure = structure
        self.epochs = epochs
        self.step1_structure = step1_structure
        self.step2_structure = step2_structure
        self.step1_epochs = step1_epochs
        self.step2_epochs = step2_epochs
        self.w1 = w1
        self.wx = wx
        self.w2 = w2
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.precision = precision
        self.lr = lr
        self.teacher_lr = teacher_lr
        self.score = score
        self.fpr = fpr
        self.contamination = contamination
        self.holdout_fraction = holdout_fraction
        self.normalize = normalize
        self.resize = resize
        self.seed = seed
        self.device = device
        self.progress = progress

    def _teacher(self) -> EDEGAN:
        return self.teacher if self.teacher is not None else EDEGAN()

    def _image_size(self) -> int:
        t = self._teacher()
        return t.model_config_.image_size if hasattr(t, "generator_") else t.image_size

    def _channels(self, X: Any) -> int:
        t = self._teacher()
        return t.model_config_.channels if hasattr(t, "generator_") else t._channels(X)

    def distill_config(self) -> DistillConfig:
        names = {f.name for f in dataclasses.fields(DistillConfig)}
        return DistillConfig(**{k: v for k, v in self.get_params(deep=False).items() if k in names})

    def _train(self, split: OneClassSplit, channels: int
               ) -> tuple[nn.Module, nn.Module | None, dict[str, Any], dict[str, Any]]:
        from pkdgan.distill import distill, resolve_student

        dcfg = self.distill_config()
        teacher = self._teacher()
        if not hasattr(teacher, "generator_"):
            teacher = copy.deepcopy(teacher)
            generator, discriminator, tconfig, _ = teacher._train(split, channels)
            teacher._set_model(generator, discriminator, tconfig)
            teacher._calibrate_on(split.holdout)
        self.teacher_ = teacher
        student_cfg, student_name = resolve_student(self.student, teacher.model_config_)
        student, _, info = distill(teacher.model(), student_cfg, split, dcfg, None, self.progress)
        config = {
            "kind": "distill", "model": dataclasses.asdict(student_cfg),
            "data": dataclasses.asdict(DataConfig(dataset="folder", resize=self.resize,  # type: ignore[arg-type]
                                                  holdout_fraction=self.holdout_fraction)),
            "loss": dataclasses.asdict(dcfg.gan), "train": dataclasses.asdict(dcfg.train_config()),
            "distill": dcfg.to_dict(), "teacher_model": dataclasses.asdict(teacher.model_config_),
            "student_name": student_name,
        }
        return student.generator, student.discriminator, config, info

    def _json_params(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        params.pop("teacher")
        if isinstance(params["student"], ModelConfig):
            params["student"] = dataclasses.asdict(params["student"])
        return params


# --- loading run folders -------------------------------------------------------------------------


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
                                    "constraint_weight") if k in model}
    params |= {f"w_{k[:3]}": loss[k] for k in ("adversarial", "contextual", "latent") if k in loss}
    return params | common | ({"epochs": train["epochs"]} if "epochs" in train else {})


def load(run_dir: str | Path, *, score: str | None = None, fpr: float | None = None,
         contamination: float | None = None, normalize: bool = False, device: str = "cpu",
         backend: str = "auto") -> OneClassDetector:
    """A fitted detector from any run folder: ``pkdgan train`` / ``distill`` runs or ``save``.

    The threshold is refitted from the run's held-out normal scores when ``fpr``,
    ``contamination`` or another ``score`` is asked for; otherwise it is the run's own
    (``calibration.json``). Test labels are never read. ``backend`` (``use_backend``): ``auto``
    scores with the run's cached export when one exists (``pkdgan export``/``predict``/``bench``
    made it) and with PyTorch otherwise; ``onnxruntime`` / ``openvino`` export once if needed.
    """
    from pkdgan.results import load_run_generator

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
    if backend != "torch" and device == "cpu":
        det.use_backend(backend, run_dir)
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
    from pkdgan.nets import build_discriminator

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
