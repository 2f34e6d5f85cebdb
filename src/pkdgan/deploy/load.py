"""A fitted detector scored by the fastest parity-checked backend (``pkdgan.api.load``).

``inference.loading.load`` reads a run folder into a PyTorch detector; this layer attaches an
exported runtime to it (or to a detector fitted in memory). For a run folder the deploy cache is
used (``auto``: only one that already exists, so loading never exports on its own); a detector
fitted in memory is exported to a temporary folder. A runtime scores only after its scores
passed the parity check against PyTorch on seeded images.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pkdgan.core import runs
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.deploy import backends
from pkdgan.deploy.build import build
from pkdgan.deploy.cache import Fallback, choose_backend, find, read_info, runner
from pkdgan.deploy.parity import parity
from pkdgan.deploy.scores import open_export, parity_set
from pkdgan.inference import loading
from pkdgan.inference.detector import OneClassDetector


def load(run_dir: str | Path, *, score: str | None = None, fpr: float | None = None,
         contamination: float | None = None, normalize: bool = False, device: str = "cpu",
         backend: str = "auto") -> OneClassDetector:
    """``inference.loading.load`` (every run folder the CLI writes, students included), scored
    with ``backend`` (``use_backend``): ``auto`` uses the run's cached export when one exists
    (``pkdgan export``/``predict``/``bench`` made it) and PyTorch otherwise; ``onnxruntime`` /
    ``openvino`` / ``native`` export once if needed. On CUDA it always scores with PyTorch."""
    det = loading.load(run_dir, score=score, fpr=fpr, contamination=contamination,
                       normalize=normalize, device=device)
    if backend != "torch" and device == "cpu":
        use_backend(det, backend, run_dir)
    return det


def use_backend(detector: OneClassDetector, backend: str = "auto",
                run_dir: str | Path | None = None) -> OneClassDetector:
    """Score ``decision_function`` / ``predict`` with any backend of ``backends.REGISTRY``
    (``auto``: the fastest parity-checked one installed); the choice is in ``backend_``.
    Reconstructions always come from PyTorch."""
    detector.use_runner(None, "torch")  # PyTorch until a runtime passes its check
    made, name = detector_runner(detector, backend, run_dir)
    return detector.use_runner(made, name)


def detector_runner(detector: OneClassDetector, backend: str, run_dir: str | Path | None = None
                    ) -> tuple[Any | None, str]:
    """(runner or None for PyTorch, backend name) for a fitted detector."""
    if backend == "torch":
        return None, "torch"
    if backend != backends.AUTO:
        if backend not in backends.runtimes():
            backends.get(backend)  # the unknown-name error, with every choice
        backends.require(backend)
    if run_dir is not None:
        return _from_cache(detector, backend, Path(run_dir))
    return _exported(detector, backend)


def _from_cache(detector: OneClassDetector, backend: str, run_dir: Path) -> tuple[Any | None, str]:
    score = detector.score if detector.score != "auto" else None
    if score == _run_score(run_dir):
        score = None
    folder = find(run_dir, score)
    if folder is None and backend != backends.AUTO:
        folder = build(run_dir, score)
    if folder is None:
        return None, "torch"
    info = read_info(folder)
    try:
        return runner(folder, info, choose_backend(info, backend))
    except Fallback:
        if backend != backends.AUTO:
            raise PkdganError(f"{backend} is not parity-checked for {run_dir}") from None
        return None, "torch"


def _exported(detector: OneClassDetector, backend: str) -> tuple[Any | None, str]:
    """A detector fitted in memory: each candidate exported to a temporary folder and checked."""
    strict = backend != backends.AUTO
    names = [backend] if strict else [b for b in backends.runtimes() if backends.installed(b)]
    cfg, gen = detector.model_config_, detector.generator_
    kind, stats = detector.score_, detector.score_choice_["standardization"]
    images, expected = checked = parity_set(gen, cfg, kind, stats)
    for name in names:
        try:
            made = open_export(name, gen, cfg, kind, stats, checked)
        except ValueError as e:  # outside the backend's form (the native kernels' size limit)
            if strict:
                raise UsageError(f"the {name} backend does not fit this generator: {e}") from None
            continue
        except UsageError:
            raise
        except PkdganError as e:  # e.g. a native kernel that fails to compile or check here
            if strict:
                raise
            warnings.warn(f"{name} backend unavailable here ({e}); trying the next", stacklevel=3)
            continue
        if parity(made, expected, images.numpy(), strict=strict)["ok"]:
            return made, name
    return None, "torch"


def _run_score(run_dir: Path) -> str | None:
    """The score a run folder was calibrated with (its own), if recorded."""
    p = run_dir / runs.CALIBRATION
    return runs.read_json(p).get("score") if p.is_file() else None
