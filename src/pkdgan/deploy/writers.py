"""Each runtime's export of a generator's scoring path (torch side), in the form it runs fastest.

``backends.REGISTRY`` names these as each backend's ``write``; ``deploy.build`` puts them into a
run's deploy cache and checks every one against PyTorch (``parity``) before any use.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.deploy.dense import GATHER_COST, MatrixScoreGraph
from pkdgan.deploy.export import parity_images, torch_scores
from pkdgan.deploy.native.plan import native_plan
from pkdgan.deploy.native.runner import write_parity
from pkdgan.deploy.native.source import write_source
from pkdgan.deploy.parity import PARITY_RTOL
from pkdgan.deploy.polyphase import PolyphaseScoreGraph, supported
from pkdgan.evaluation.score_kinds import Stats
from pkdgan.inference.graph import (
    INPUT_NAME,
    OUTPUT_NAME,
    ScoreGraph,
    export_onnx,
    quiet_exporter,
    require_onnx,
)
from pkdgan.inference.scoring import InferenceGenerator

# the bf16 form of a graph the matrix form does not fit (a teacher): layers with at most this
# many matrix entries become matrix products (its 1x1-code layers: 1.16x faster than none)
AMX_DENSE_LIMIT = 1 << 20


def scoring_graph(generator: nn.Module, model_cfg: ModelConfig, score: str = "latent",
                  stats: Stats | None = None, precision: str = "fp32") -> nn.Module:
    """The scoring graph in the form OpenVINO runs fastest at ``precision`` (fp32 or bf16), all
    equal to ``graph.ScoreGraph`` up to float rounding, BatchNorm folded in every one:

    - a generator whose every layer is a matrix of at most ``dense.MATRIX_LIMIT`` entries:
      every layer a (row-banded) matrix product (``dense.MatrixScoreGraph``; measured faster for
      the registry's MNIST and Fashion-MNIST students, widths 3 and 1: images/s at batch 256, fp32
      95k vs 77k polyphase and 213k vs 84k, bf16 241k vs 119k and 425k vs 143k; other small
      generators take it unmeasured: ``benchmarks/matrix_forms.py RUN`` compares the forms);
    - otherwise the polyphase graph (``pkdgan.polyphase``; its transposed convolutions are slow
      in OpenVINO), in bf16 with its small layers as matrices;
    - otherwise ``ScoreGraph`` of the folded, sub-pixel generator.
    """
    if precision not in GATHER_COST:
        raise UsageError(f"graph forms exist for {', '.join(GATHER_COST)}, not {precision!r}")
    net = InferenceGenerator(copy.deepcopy(generator).float().cpu().eval())
    image = (model_cfg.channels, model_cfg.image_size, model_cfg.image_size)
    with contextlib.suppress(ValueError):  # not every layer a small linear one
        return MatrixScoreGraph(net, image, score, stats, GATHER_COST[precision]).eval()
    if supported(net):
        graph = PolyphaseScoreGraph(net, score, stats)
        return (graph.densified(image, AMX_DENSE_LIMIT) if precision == "bf16" else graph).eval()
    return ScoreGraph(net, score, stats).eval()


def export_folded_onnx(generator: nn.Module, model_cfg: ModelConfig, path: Path,
                       score: str = "latent", stats: Stats | None = None, precision: str = "fp32") -> Path:
    """``scoring_graph`` as ONNX with a dynamic batch axis (OpenVINO's input)."""
    require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = scoring_graph(generator, model_cfg, score, stats, precision)
    example = torch.zeros(2, model_cfg.channels, model_cfg.image_size, model_cfg.image_size)
    try:
        with quiet_exporter():
            torch.onnx.export(graph, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamo=True,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                              external_data=False, verbose=False)
    except Exception as e:
        raise PkdganError(f"ONNX export failed: {type(e).__name__}: {str(e)[:300]}") from e
    return path


def export_openvino(generator: nn.Module, model_cfg: ModelConfig, path: Path,
                    score: str = "latent", stats: Stats | None = None, precision: str = "fp32") -> Path:
    """OpenVINO IR (``path`` = ``.xml``, weights in ``.bin`` beside it) of the graph's form for
    ``precision`` (``scoring_graph``), fp32 weights; the precision itself is a runtime hint."""
    try:
        import openvino as ov
    except ImportError:
        raise UsageError("the openvino backend is not installed: pip install 'pkdgan[openvino]'") from None

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_folded_onnx(generator, model_cfg, Path(tmp) / "folded.onnx", score, stats,
                                       precision)
        ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
    return path


def export_native(generator: nn.Module, model_cfg: ModelConfig, path: Path, score: str = "latent",
                  stats: Stats | None = None, images: torch.Tensor | None = None,
                  expected: np.ndarray | None = None) -> Path:
    """``native/model.c``: the scoring path as C (``native.source``), and beside it the check
    every object compiled from it must pass on its CPU (``native.runner.PARITY_FILE``:
    ``images``, default seeded ones, with PyTorch's ``expected`` scores). Raises ValueError for a
    generator outside the form (wider than ``native.form.MAX_CHANNELS``): the runtimes serve it."""
    net = copy.deepcopy(generator).float().cpu().eval()
    image = (model_cfg.channels, model_cfg.image_size, model_cfg.image_size)
    c_path = write_source(native_plan(net, image, score, stats), Path(path))
    if images is None:
        images = parity_images(model_cfg, 16)
    if expected is None:
        expected = torch_scores(generator, images, score, stats)
    write_parity(c_path, images.numpy(), expected, PARITY_RTOL)
    return c_path


def quantize_openvino(model_xml: Path, calibration: np.ndarray, path: Path) -> Path:
    """NNCF post-training int8 of an IR, calibrated on ``calibration`` images (held-out normal
    training images: never test images)."""
    try:
        import nncf
    except ImportError:
        raise UsageError("int8 quantization needs nncf: pip install 'pkdgan[openvino]'") from None
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    calib = np.ascontiguousarray(calibration, np.float32)
    if len(calib) == 0:
        raise UsageError("int8 calibration needs held-out normal images; this run has none")
    batches = [calib[i:i + 64] for i in range(0, len(calib), 64)]
    model = ov.Core().read_model(str(model_xml))
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(calib))
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


# --- each backend's writer: (path, generator, model config, score, stats, images, expected) ------

def write_onnx(path: Path, generator: nn.Module, model_cfg: ModelConfig, score: str, stats: Stats,
               images: torch.Tensor, expected: np.ndarray) -> Path:
    """The plain scoring graph (ONNX Runtime runs it fastest: docs/performance.md)."""
    return export_onnx(generator, model_cfg, path, score, stats)


def write_openvino(path: Path, generator: nn.Module, model_cfg: ModelConfig, score: str, stats: Stats,
                   images: torch.Tensor, expected: np.ndarray) -> Path:
    return export_openvino(generator, model_cfg, path, score, stats)


def write_native(path: Path, generator: nn.Module, model_cfg: ModelConfig, score: str, stats: Stats,
                 images: torch.Tensor, expected: np.ndarray) -> Path:
    """``model.c`` and the parity check its objects must pass on every CPU (ValueError: a
    generator outside the kernels' form)."""
    return export_native(generator, model_cfg, path, score, stats, images, expected)
