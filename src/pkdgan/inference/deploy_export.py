"""Building deployable scoring models of a run (torch side): OpenVINO IR, int8, the cache.

``pkdgan.deploy`` runs what this writes without torch. A run's deployment lives in
``RUN/deploy/<score>-<hash>/`` (or, for a read-only run folder, under the user cache), keyed by
the hash of the run's checkpoint, config and calibration (``lean.cache_key``): retraining or
recalibrating a run changes the key, so a stale export is never used.

- ``model.onnx``: the plain scoring graph (``export.export_onnx``), for ONNX Runtime;
- ``openvino/model.xml``: the scoring graph as OpenVINO IR in the form fp32 runs fastest in
  (``scoring_graph``: BatchNorm folded; matrix or polyphase form); ``openvino/model_bf16.xml``:
  the same function in the form bf16 runs fastest in; ``openvino/model_int8.xml``: NNCF
  post-training int8, calibrated on the run's held-out *normal* training images (both made by
  ``pkdgan bench``, never from test images);
- ``native/model.c``: the scoring path as generated C (``inference.native``; small generators
  only), compiled on first use into ``native/model-<cpu>.so`` for the CPU it runs on;
- ``deploy.json``: threshold, calibration, preprocessing and each backend's parity with PyTorch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pkdgan import __version__
from pkdgan.core import runs
from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.evaluation.score_kinds import Stats
from pkdgan.inference.deploy import OrtRunner, OvRunner, installed, require
from pkdgan.inference.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    PARITY_RTOL,
    ScoreGraph,
    export_onnx,
    parity_images,
    preprocessing,
    quiet_exporter,
    require_onnx,
)
from pkdgan.inference.lean import (
    DEPLOY_JSON,
    NATIVE_DIR,
    OV_DIR,
    Fallback,
    cache_dirs,
    cache_key,
    read_info,
    runner,
)
from pkdgan.inference.scoring import InferenceGenerator

# the bf16 form of a graph the matrix form does not fit (a teacher): layers with at most this
# many matrix entries become matrix products (its 1x1-code layers: 1.16x faster than none)
AMX_DENSE_LIMIT = 1 << 20


def scoring_graph(generator: nn.Module, model_cfg: ModelConfig, score: str = "latent",
                  stats: Stats | None = None, precision: str = "fp32") -> nn.Module:
    """The scoring graph in the form OpenVINO runs fastest at ``precision`` (fp32 or bf16), all
    equal to ``export.ScoreGraph`` up to float rounding, BatchNorm folded in every one:

    - a generator whose every layer is a matrix of at most ``dense.MATRIX_LIMIT`` entries:
      every layer a (row-banded) matrix product (``dense.MatrixScoreGraph``; measured faster for
      the registry's MNIST and Fashion-MNIST students, widths 3 and 1: images/s at batch 256, fp32
      95k vs 77k polyphase and 213k vs 84k, bf16 241k vs 119k and 425k vs 143k; other small
      generators take it unmeasured: ``benchmarks/matrix_forms.py RUN`` compares the forms);
    - otherwise the polyphase graph (``pkdgan.polyphase``; its transposed convolutions are slow
      in OpenVINO), in bf16 with its small layers as matrices;
    - otherwise ``ScoreGraph`` of the folded, sub-pixel generator.
    """
    from pkdgan.inference.dense import GATHER_COST, MatrixScoreGraph
    from pkdgan.inference.polyphase import PolyphaseScoreGraph, supported

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
    require("openvino")
    import openvino as ov

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
    """``native/model.c``: the scoring path as C (``native_source.source``), and beside it the
    check every object compiled from it must pass on its CPU (``native.PARITY_FILE``: ``images``,
    default seeded ones, with PyTorch's ``expected`` scores). Raises ValueError for a generator
    outside the form (wider than ``native_form.MAX_CHANNELS``, or normalising per image): the
    runtimes serve those."""
    from pkdgan.inference.native import write_parity
    from pkdgan.inference.native_plan import native_plan
    from pkdgan.inference.native_source import write_source

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
    require("openvino")
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


def torch_scores(generator: nn.Module, images: torch.Tensor, score: str, stats: Stats | None
                 ) -> np.ndarray:
    """The reference: ``ScoreGraph`` (what the export computes) in PyTorch, float64 out."""
    graph = ScoreGraph(copy.deepcopy(generator).float().cpu().eval(), score, stats).eval()
    with torch.inference_mode():
        return graph(images.float().cpu()).numpy().astype(np.float64)


def parity(runner: Any, expected: np.ndarray, images: np.ndarray, strict: bool = True) -> dict[str, Any]:
    """Max abs / relative (to the largest score) difference of a runner's scores from PyTorch's."""
    got = np.asarray(runner(images), np.float64)
    if got.shape != expected.shape:
        raise PkdganError(f"{runner.backend} parity check failed: shape {got.shape} != {expected.shape}")
    abs_diff = float(np.abs(got - expected).max()) if len(got) else 0.0
    rel = abs_diff / max(float(np.abs(expected).max()), 1e-12) if len(got) else 0.0
    ok = rel <= PARITY_RTOL
    if strict and not ok:
        raise PkdganError(f"{runner.backend} parity check failed: max relative difference {rel:.3g} "
                          f"> {PARITY_RTOL:g}")
    return {"n_images": int(len(images)), "max_abs_diff": abs_diff, "max_rel_diff": rel, "ok": ok}


def build(run_dir: Path, score: str | None = None, check_images: torch.Tensor | None = None,
          *, loader: Callable[..., Any]) -> Path:
    """Export a run's scoring model for every installed runtime into its deploy cache (once).

    Returns the cache folder. Parity with PyTorch is checked for each runtime (seeded images
    plus ``check_images``); a runtime that fails it is recorded as failed, never used by ``auto``.
    ``loader`` is ``inference.loading.load``, passed in because loading attaches backends made
    here (an import would close a cycle).
    """
    run_dir = Path(run_dir)
    runtimes = [b for b in ("onnxruntime", "openvino", "native") if installed(b)]
    if not runtimes:
        raise UsageError("exporting for deployment needs onnxruntime, openvino or a C compiler: "
                         "pip install 'pkdgan[onnx]' or 'pkdgan[openvino]'")
    key = cache_key(run_dir, score)
    for d in cache_dirs(run_dir, key):
        if (d / DEPLOY_JSON).is_file():
            return d
    detector = loader(run_dir, score=score, backend="torch")
    cfg, gen = detector.model_config_, detector.generator_
    kind, stats = detector.score_, detector.score_choice_["standardization"]
    images = parity_images(cfg, 16)
    if check_images is not None:
        images = torch.cat([images, check_images.float().cpu()])
    expected = torch_scores(gen, images, kind, stats)
    last_error: Exception | None = None
    for target in cache_dirs(run_dir, key):
        tmp = target.parent / f".{target.name}.tmp{time.time_ns()}"
        try:
            tmp.mkdir(parents=True)
        except OSError as e:
            last_error = e
            continue
        try:
            info = _write(tmp, detector, gen, cfg, kind, stats, runtimes, images.numpy(), expected)
            info |= {"key": key, "run_dir": str(run_dir.resolve())}
            runs.write_json(tmp / DEPLOY_JSON, info)
            try:
                tmp.rename(target)
            except OSError:  # another process made it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
            return target
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    raise PkdganError(f"cannot write a deployment cache for {run_dir}: {last_error}")


def _write(folder: Path, detector: Any, gen: nn.Module, cfg: ModelConfig, kind: str, stats: Stats,
           runtimes: list[str], images: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    files: dict[str, str] = {}
    checks: dict[str, Any] = {}
    if "onnxruntime" in runtimes:
        export_onnx(gen, cfg, folder / "model.onnx", kind, stats)
        files["onnxruntime"] = "model.onnx"
        checks["onnxruntime"] = parity(OrtRunner(folder / "model.onnx"), expected, images, strict=False)
    if "openvino" in runtimes:
        export_openvino(gen, cfg, folder / OV_DIR / "model.xml", kind, stats)
        files["openvino"] = f"{OV_DIR}/model.xml"
        checks["openvino"] = parity(OvRunner(folder / OV_DIR / "model.xml"), expected, images, strict=False)
    if "native" in runtimes:
        checks["native"] = _write_native(folder, gen, cfg, kind, stats, images, expected)
        if checks["native"].get("file"):
            files["native"] = checks["native"].pop("file")
    cal = detector.calibration_
    return {
        "pkdgan_version": __version__,
        "score": kind,
        "standardization": stats or None,
        "model": dataclasses.asdict(cfg),
        "preprocessing": preprocessing(cfg, detector.resize),
        "threshold": detector.threshold_raw_,
        "holdout_mean": cal.get("holdout_mean"),
        "holdout_std": cal.get("holdout_std"),
        "files": files,
        "parity": checks,
        "parity_rtol": PARITY_RTOL,
        "fastest": None,
    }


def _write_native(folder: Path, gen: nn.Module, cfg: ModelConfig, kind: str, stats: Stats,
                  images: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """The native kernel's source, compiled and parity-checked; a generator outside the form or
    a failed compile is recorded (``ok`` false, with the reason), never fatal: the other
    runtimes still serve the run."""
    from pkdgan.inference.native import NativeRunner

    path = folder / NATIVE_DIR / "model.c"
    try:
        export_native(gen, cfg, path, kind, stats, torch.from_numpy(images), expected)
        check = parity(NativeRunner(path), expected, images, strict=False)
    except (ValueError, PkdganError) as e:
        return {"ok": False, "reason": str(e)}
    return check | {"file": f"{NATIVE_DIR}/model.c"}


def detector_runner(detector: Any, backend: str, run_dir: str | Path | None = None,
                    *, loader: Callable[..., Any]) -> tuple[Any | None, str]:
    """(runner or None for torch, backend name) for a fitted detector.

    For a run folder, the deploy cache is used (``auto``: only when it already exists, so
    loading never exports on its own); a detector fitted in memory is exported to a temporary
    folder. A runtime is used only when its scores pass the parity check.
    """
    from pkdgan.inference.deploy import AUTO_ORDER, RUNTIMES, make_runner
    from pkdgan.inference.lean import choose_backend, find

    if backend == "torch":
        return None, "torch"
    if backend != "auto" and backend not in RUNTIMES:
        raise UsageError(f"unknown backend {backend!r}; choose one of auto, torch, {', '.join(RUNTIMES)}")
    if backend != "auto":
        require(backend)
    score = detector.score if detector.score != "auto" else None
    if run_dir is not None and score == _run_score(run_dir):
        score = None
    if run_dir is not None:
        folder = find(Path(run_dir), score)
        if folder is None and backend != "auto":
            folder = build(Path(run_dir), score, loader=loader)
        if folder is not None:
            info = read_info(folder)
            try:
                return runner(folder, info, choose_backend(info, backend))
            except Fallback:
                if backend != "auto":
                    raise PkdganError(f"{backend} is not parity-checked for {run_dir}") from None
                return None, "torch"
        return None, "torch"
    names = [b for b in AUTO_ORDER if b in RUNTIMES and installed(b)] if backend == "auto" else [backend]
    cfg, gen = detector.model_config_, detector.generator_
    kind, stats = detector.score_, detector.score_choice_["standardization"]
    images = parity_images(cfg, 16)
    expected = torch_scores(gen, images, kind, stats)
    for name in names:
        tmp = tempfile.TemporaryDirectory(prefix="pkdgan-deploy-")
        path = Path(tmp.name) / {"openvino": "model.xml", "native": "model.c"}.get(name, "model.onnx")
        if name == "openvino":
            export_openvino(gen, cfg, path, kind, stats)
        elif name == "native":
            try:
                export_native(gen, cfg, path, kind, stats, images, expected)
            except ValueError as e:
                if backend != "auto":
                    raise UsageError(f"the native backend does not fit this generator: {e}") from None
                continue
        else:
            export_onnx(gen, cfg, path, kind, stats)
        try:
            made = make_runner(name, path)
        except UsageError:
            raise
        except PkdganError as e:  # e.g. a native kernel that fails to compile or check here
            if backend != "auto":
                raise
            warnings.warn(f"{name} backend unavailable here ({e}); trying the next", stacklevel=2)
            continue
        made._tmp = tmp  # the files live as long as the runner
        if parity(made, expected, images.numpy(), strict=backend != "auto")["ok"]:
            return made, name
    return None, "torch"


def _run_score(run_dir: str | Path) -> str | None:
    """The score a run folder was calibrated with (its own), if recorded."""
    p = Path(run_dir) / runs.CALIBRATION
    return runs.read_json(p).get("score") if p.is_file() else None
