"""Exporting a run folder: its scoring model (ONNX or OpenVINO IR) plus a JSON sidecar.

Separate from ``export`` (the formats' shared pieces) because it reads the run back as a detector."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pkdgan import __version__
from pkdgan.core import runs
from pkdgan.core.errors import UsageError
from pkdgan.deploy.export import (
    FORMATS,
    SUFFIXES,
    check_parity,
    ort_version,
    ov_version,
    parity_images,
    preprocessing,
    sidecar_path,
    torch_scores,
)
from pkdgan.deploy.parity import parity
from pkdgan.deploy.runtimes import OvRunner
from pkdgan.deploy.writers import export_openvino
from pkdgan.evaluation.score_kinds import COMBINED
from pkdgan.inference.graph import INPUT_NAME, OUTPUT_NAME, SCORE_RULES, export_onnx
from pkdgan.inference.loading import load


def export_run(run_dir: Path, output: Path | None = None, fmt: str = "onnx",
               score: str | None = None, check: bool = True) -> Path:
    """Export a run folder's scoring model plus a JSON sidecar (preprocessing, threshold).

    ``score`` defaults to the run's own; the threshold and normalisation statistics are the
    run's held-out normal calibration for that score (never test labels).
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    detector = load(run_dir, score=score)
    run_dir = Path(run_dir)
    output = Path(output) if output is not None else run_dir / f"model{SUFFIXES[fmt]}"
    cfg = detector.model_config_
    kind, stats = detector.score_, detector.score_choice_["standardization"]
    if fmt == "openvino":  # the form writers.scoring_graph picks for fp32, as IR
        export_openvino(detector.generator_, cfg, output, kind, stats)
    else:
        export_onnx(detector.generator_, cfg, output, kind, stats)
    sidecar = {
        "format": fmt,
        "file": output.name,
        "pkdgan_version": __version__,
        "run_dir": str(run_dir.resolve()),
        "kind": detector.kind_,
        "model": dataclasses.asdict(cfg),
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW",
                  "shape": ["N", cfg.channels, cfg.image_size, cfg.image_size]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["N"],
                   "meaning": "anomaly score, higher = more anomalous"},
        "preprocessing": preprocessing(cfg, detector.resize),
        "score": kind,
        "standardization": stats if kind == COMBINED else None,
        "score_rule": SCORE_RULES[kind],
        "threshold": detector.threshold_raw_,
        "label_rule": "label = 1 (anomalous) if score > threshold else 0",
        "calibration": detector.calibration_,
    }
    if check and fmt == "openvino":
        images = parity_images(cfg)
        expected = torch_scores(detector.generator_, images, kind, stats)
        sidecar["parity"] = parity(OvRunner(output), expected, images.numpy())
        sidecar["parity"]["openvino"] = ov_version()
    elif check:
        sidecar["parity"] = check_parity(output, detector.generator_, parity_images(cfg), kind, stats)
        sidecar["parity"]["onnxruntime"] = ort_version()
    runs.write_json(sidecar_path(output), sidecar)
    return output
