"""The scoring graph: one module from a preprocessed image batch to anomaly scores, and its ONNX form.

``ScoreGraph`` is what every deployed runtime computes (``pkdgan.deploy`` exports and runs it);
a deployed runtime needs neither PyTorch nor this package: the graph takes float32
``images (N, C, S, S)`` in [-1, 1] (dynamic N) and returns ``scores (N,)``. Writing it as ONNX
lives here, beside the graph, because a fitted detector offers it (``to_onnx``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.evaluation.score_kinds import KINDS, Stats, check_kind, kind_scores, require_stats
from pkdgan.models.losses import latent_score, reconstruction_score

INPUT_NAME = "images"
OUTPUT_NAME = "scores"
SCORE_RULES = {
    "latent": "mean over latent dims of (z - z_hat)^2",
    "reconstruction": "mean over pixels of (x - x_hat)^2",
    "combined": "max((latent - m_l) / s_l, (reconstruction - m_r) / s_r) with the standardization "
                "constants (held-out normal images) built into the graph",
}


class ScoreGraph(nn.Module):
    """The scoring path E1 -> D -> E2 reduced to one score per image, as ONNX will see it.

    For ``combined`` the held-out standardisation constants (``stats``) become constants of
    the graph, so a deployed runtime computes exactly the run's score.
    """

    def __init__(self, generator: nn.Module, score: str = "latent", stats: Stats | None = None) -> None:
        super().__init__()
        check_kind(score, KINDS)
        require_stats(score, stats)
        self.generator = generator
        self.score = score
        self.stats: Stats = stats or {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z, x_hat, z_hat = self.generator(images)
        lat, rec = latent_score(z, z_hat), reconstruction_score(images, x_hat)
        return kind_scores(lat, rec, self.score, self.stats)


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UsageError("ONNX export needs the onnx extra: pip install 'pkdgan[onnx]'") from None


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The torch.export-based exporter logs and warns a lot that is no concern of the user."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(generator: nn.Module, model_cfg: ModelConfig, path: Path,
                score: str = "latent", stats: Stats | None = None) -> Path:
    """Write ``generator``'s scoring path as a single ONNX graph with a dynamic batch axis.

    The generator is copied to CPU in eval mode (BatchNorm uses its running statistics, as
    when scoring), so the caller's module is left untouched.
    """
    require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = ScoreGraph(copy.deepcopy(generator).float().cpu().eval(), score, stats).eval()
    # batch 2 as the example: a batch of 1 may get specialised into the graph
    example = torch.zeros(2, model_cfg.channels, model_cfg.image_size, model_cfg.image_size)
    batch = torch.export.Dim("batch", min=1)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with quiet_exporter():
            torch.onnx.export(
                graph, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamo=True, dynamic_shapes=({0: batch},), external_data=False, verbose=False,
            )
        tmp.replace(path)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, PkdganError):
            raise
        raise PkdganError(f"ONNX export failed: {type(e).__name__}: {str(e)[:300]}") from e
    return path
