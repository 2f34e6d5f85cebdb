"""Scores of an in-memory generator with any registered backend, for scripts and benchmarks.

``fast_scores`` is the one-call form: PyTorch (``inference.scoring.TorchScorer``) or a runtime of
``backends.REGISTRY`` on the generator's export in a temporary folder, checked against PyTorch
before it scores (``parity.parity``), as every deployed runtime is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import UsageError
from pkdgan.deploy import backends
from pkdgan.deploy.export import parity_images, torch_scores
from pkdgan.deploy.parity import parity
from pkdgan.evaluation.score_kinds import KINDS, Stats, check_kind, kind_scores
from pkdgan.inference.scoring import TorchScorer


def parity_set(generator: nn.Module, model_cfg: ModelConfig, score: str = "latent",
               stats: Stats | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """The images every export of ``generator`` is checked on, and PyTorch's scores of them."""
    images = parity_images(model_cfg, 16)
    return images, torch_scores(generator, images, score, stats)


def open_export(backend: str, generator: nn.Module, model_cfg: ModelConfig, score: str,
                stats: Stats | None, checked: tuple[torch.Tensor, np.ndarray],
                threads: int | None = None) -> backends.Runner:
    """``backend``'s export of ``generator`` written to a temporary folder (kept as long as the
    runner) and opened; the caller checks parity on ``checked`` (``parity_set``)."""
    b = backends.get(backend)
    assert b.file is not None, f"{backend} scores in PyTorch"
    tmp = tempfile.TemporaryDirectory(prefix="pkdgan-deploy-")
    path = b.write(Path(tmp.name) / Path(b.file).name, generator, model_cfg, score, stats, *checked)
    runner = b.open(path, "fp32", threads)
    runner.tmp_dir = tmp  # type: ignore[attr-defined]
    return runner


def exported_runner(generator: nn.Module, model_cfg: ModelConfig, backend: str, score: str = "latent",
                    stats: Stats | None = None, threads: int | None = None) -> backends.Runner:
    """A parity-checked runner of ``backend`` on ``generator``'s export (kept with the runner)."""
    b = backends.get(backend)
    if b.file is None:
        raise UsageError(f"{backend} scores in PyTorch; choose one of {', '.join(backends.runtimes())}")
    b.require()
    images, expected = checked = parity_set(generator, model_cfg, score, stats)
    runner = open_export(backend, generator, model_cfg, score, stats, checked, threads)
    parity(runner, expected, images.numpy())
    return runner


def fast_scores(generator: nn.Module, x: torch.Tensor, model_cfg: ModelConfig | None = None,
                score: str = "latent", backend: str = "torch", batch_size: int = 256,
                stats: Stats | None = None) -> np.ndarray:
    """Anomaly scores of ``x`` (higher = more anomalous) with any registered backend.

    ``stats`` (held-out standardisation, ``score_kinds.standardization``) is needed for ``combined``.
    """
    check_kind(score, KINDS)
    if backends.get(backend).file is None:
        lat, rec = TorchScorer(generator, batch_size).scores(x)
        return np.asarray(kind_scores(lat.numpy(), rec.numpy(), score, stats or {}))
    if model_cfg is None:
        raise UsageError(f"{backend} scoring needs the model config (image size, channels)")
    run = exported_runner(generator, model_cfg, backend, score, stats)
    return np.asarray(run(np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)))
