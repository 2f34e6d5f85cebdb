"""Building deployable scoring models of a run (torch side): OpenVINO IR, int8, the cache.

``deploy.lean`` runs what this writes without torch. A run's deployment lives in
``RUN/deploy/<score>-<hash>/`` (or, for a read-only run folder, under the user cache), keyed by
the hash of the run's checkpoint, config and calibration (``cache.cache_key``): retraining or
recalibrating a run changes the key, so a stale export is never used.

- ``model.onnx``: the plain scoring graph (``inference.graph.export_onnx``), for ONNX Runtime;
- ``openvino/model.xml``: the scoring graph as OpenVINO IR in the form fp32 runs fastest in
  (``writers.scoring_graph``: BatchNorm folded; matrix or polyphase form); ``openvino/model_bf16.xml``:
  the same function in the form bf16 runs fastest in; ``openvino/model_int8.xml``: NNCF
  post-training int8, calibrated on the run's held-out *normal* training images (both made by
  ``pkdgan bench``, never from test images);
- ``native/model.c``: the scoring path as generated C (``deploy.native``; small generators
  only), compiled on first use into ``native/model-<cpu>.so`` for the CPU it runs on;
- ``deploy.json``: threshold, calibration, preprocessing and each backend's parity with PyTorch.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pkdgan import __version__
from pkdgan.core import runs
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.deploy import backends
from pkdgan.deploy.cache import DEPLOY_JSON, cache_dirs, cache_key
from pkdgan.deploy.export import parity_images, preprocessing, torch_scores
from pkdgan.deploy.parity import PARITY_RTOL, parity
from pkdgan.inference.detector import OneClassDetector
from pkdgan.inference.loading import load


def build(run_dir: Path, score: str | None = None, check_images: torch.Tensor | None = None,
          ) -> Path:
    """Export a run's scoring model for every installed runtime into its deploy cache (once).

    Returns the cache folder. Parity with PyTorch is checked for each runtime (seeded images
    plus ``check_images``); a runtime that fails it is recorded as failed, never used by ``auto``.
    """
    run_dir = Path(run_dir)
    runtimes = [b for b in backends.runtimes() if backends.installed(b)]
    if not runtimes:
        raise UsageError("exporting for deployment needs onnxruntime, openvino or a C compiler: "
                         "pip install 'pkdgan[onnx]' or 'pkdgan[openvino]'")
    key = cache_key(run_dir, score)
    for d in cache_dirs(run_dir, key):
        if (d / DEPLOY_JSON).is_file():
            return d
    detector = load(run_dir, score=score)
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
            info = _write(tmp, detector, runtimes, images, expected)
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


def _write(folder: Path, detector: OneClassDetector, runtimes: list[str], images: torch.Tensor,
           expected: np.ndarray) -> dict[str, Any]:
    """Every runtime's export, each checked against PyTorch. A generator outside a backend's
    form or a failed build is recorded (``ok`` false, with the reason), never fatal: the other
    runtimes still serve the run."""
    cfg, gen = detector.model_config_, detector.generator_
    kind, stats = detector.score_, detector.score_choice_["standardization"]
    files: dict[str, str] = {}
    checks: dict[str, Any] = {}
    for name in runtimes:
        backend = backends.get(name)
        assert backend.file is not None
        try:
            backend.write(folder / backend.file, gen, cfg, kind, stats, images, expected)
            checks[name] = parity(backend.open(folder / backend.file), expected, images.numpy(), strict=False)
        except (ValueError, PkdganError) as e:
            checks[name] = {"ok": False, "reason": str(e)}
            continue
        files[name] = backend.file
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
