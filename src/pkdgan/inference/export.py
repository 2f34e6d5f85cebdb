"""ONNX export: one graph from a preprocessed image batch to anomaly scores.

A deployed runtime needs neither PyTorch nor this package: the graph takes float32
``images (N, C, S, S)`` in [-1, 1] (dynamic N) and returns ``scores (N,)``; the JSON sidecar
beside it says how to turn an image file into that input and where the threshold lies.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.evaluation.score_kinds import KINDS, Stats, check_kind, kind_scores, require_stats
from pkdgan.models.losses import latent_score, reconstruction_score

INPUT_NAME = "images"
OUTPUT_NAME = "scores"
FORMATS = ("onnx", "openvino")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}
PARITY_RTOL = 1e-4
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


def onnx_scores(path: Path, images: np.ndarray) -> np.ndarray:
    """Scores from the exported graph in onnxruntime (CPU), for parity checks and users."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("running ONNX models needs onnxruntime: pip install 'pkdgan[onnx]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, np.float32)})[0]


def check_parity(path: Path, generator: nn.Module, images: torch.Tensor,
                 score: str = "latent", stats: Stats | None = None) -> dict[str, Any]:
    """Max absolute and relative difference between onnxruntime's and PyTorch's scores.

    Relative = max |onnx - torch| / max |torch|, so it measures the error against the scale
    of the scores themselves (raises when it exceeds ``PARITY_RTOL``).
    """
    graph = ScoreGraph(copy.deepcopy(generator).float().cpu().eval(), score, stats).eval()
    with torch.no_grad():
        expected = graph(images.float().cpu()).numpy().astype(np.float64)
    got = onnx_scores(path, images.numpy()).astype(np.float64)
    if got.shape != expected.shape:
        raise PkdganError(f"ONNX parity check failed: output shape {got.shape} != {expected.shape}")
    abs_diff = float(np.abs(got - expected).max())
    rel_diff = abs_diff / max(float(np.abs(expected).max()), 1e-12)
    if not rel_diff <= PARITY_RTOL:
        raise PkdganError(f"ONNX parity check failed: max relative difference {rel_diff:.3g} "
                          f"> {PARITY_RTOL:g} (max abs {abs_diff:.3g})")
    return {"n_images": int(len(images)), "max_abs_diff": abs_diff, "max_rel_diff": rel_diff}


def parity_images(model_cfg: ModelConfig, n: int = 8, seed: int = 0) -> torch.Tensor:
    """Seeded images in [-1, 1]; a batch size other than the export example's 2."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, model_cfg.channels, model_cfg.image_size, model_cfg.image_size)
    return torch.rand(shape, generator=g) * 2 - 1


def sidecar_path(output: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (never clobbers a run's ``config.json``)."""
    return output.with_name(output.name + ".json")


def preprocessing(cfg: ModelConfig, resize: str) -> dict[str, Any]:
    """How training turned image files into tensors, in words a non-Python runtime can follow."""
    return {
        "image_size": cfg.image_size,
        "channels": cfg.channels,
        "color_mode": "L" if cfg.channels == 1 else "RGB",
        "color_conversion": "Pillow Image.convert('L') (ITU-R 601-2 luma) or convert('RGB')",
        "value_range": [-1.0, 1.0],
        "scaling": "x = uint8_pixel / 127.5 - 1",
        "resize": resize,
        "pad_value": -1.0,
        "resize_rule": (
            "pad: centre the image, padding with -1, when it is smaller by an even number of "
            "pixels on both sides; otherwise (and always for 'bilinear') bilinear resize, "
            "antialiased when shrinking, then clamp to [-1, 1]"
        ),
    }


def ov_version() -> str:
    import openvino

    return openvino.__version__


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
