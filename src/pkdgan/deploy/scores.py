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
from pkdgan.deploy.export import parity_images
from pkdgan.deploy.parity import parity
from pkdgan.deploy.writers import torch_scores
from pkdgan.evaluation.score_kinds import KINDS, Stats, check_kind, kind_scores
from pkdgan.inference.scoring import TorchScorer


def exported_runner(generator: nn.Module, model_cfg: ModelConfig, backend: str, score: str = "latent",
                    stats: Stats | None = None, threads: int | None = None) -> backends.Runner:
    """A parity-checked runner of ``backend`` on ``generator``'s export (kept with the runner)."""
    b = backends.get(backend)
    if b.file is None:
        raise UsageError(f"{backend} scores in PyTorch; choose one of {', '.join(backends.runtimes())}")
    b.require()
    images = parity_images(model_cfg, 16)
    expected = torch_scores(generator, images, score, stats)
    tmp = tempfile.TemporaryDirectory(prefix="pkdgan-scores-")
    path = b.write(Path(tmp.name) / Path(b.file).name, generator, model_cfg, score, stats, images, expected)
    runner = b.open(path, "fp32", threads)
    runner.tmp_dir = tmp  # type: ignore[attr-defined]  # the files live as long as the runner
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
