"""``pkdgan export``'s formats and what travels with an exported file: its parity check on
ONNX Runtime, the preprocessing a non-Python runtime must follow, the sidecar's name.

The graph itself and its ONNX writer are ``inference.graph`` (a fitted detector offers
``to_onnx``); the deploy cache's forms are ``deploy.build``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import UsageError
from pkdgan.deploy.parity import parity
from pkdgan.evaluation.score_kinds import Stats
from pkdgan.inference.graph import INPUT_NAME, OUTPUT_NAME, ScoreGraph

FORMATS = ("onnx", "openvino")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}


def onnx_scores(path: Path, images: np.ndarray) -> np.ndarray:
    """Scores from the exported graph in onnxruntime (CPU), for parity checks and users."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("running ONNX models needs onnxruntime: pip install 'pkdgan[onnx]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, np.float32)})[0]


def torch_scores(generator: nn.Module, images: torch.Tensor, score: str, stats: Stats | None
                 ) -> np.ndarray:
    """The reference: ``ScoreGraph`` (what the export computes) in PyTorch, float64 out."""
    graph = ScoreGraph(copy.deepcopy(generator).float().cpu().eval(), score, stats).eval()
    with torch.inference_mode():
        return graph(images.float().cpu()).numpy().astype(np.float64)


def check_parity(path: Path, generator: nn.Module, images: torch.Tensor,
                 score: str = "latent", stats: Stats | None = None) -> dict[str, Any]:
    """onnxruntime's scores of an exported file against PyTorch's (``parity.parity``; raises
    past ``PARITY_RTOL``)."""

    def ort(x: np.ndarray) -> np.ndarray:
        return onnx_scores(path, x)

    ort.backend = "ONNX"  # type: ignore[attr-defined]  # parity's name for it in messages
    out = parity(ort, torch_scores(generator, images, score, stats), images.numpy())
    del out["ok"]  # it raised otherwise
    return out


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
