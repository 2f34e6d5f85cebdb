"""Experiment tracking (optional extras): TensorBoard event files or an MLflow run per run folder.

What is logged, for both: the run's configuration (hyper-parameters), every ``history.csv`` row
as per-epoch scalars (losses, seconds, images/s) with the epoch as the step, and at the end the
scalar test metrics (AUROC per score kind, per defect type, pixel AUROC / PRO), the ROC and
histogram figures. MLflow also stores ``metrics.json``, the HTML report (when written) and the
exported ONNX model as artifacts. The run folder stays the source of truth: a tracker only
mirrors it, and a tracker that fails warns and never un-finishes a run.

``pip install 'pkdgan[tracking]'`` (tensorboard, mlflow-skinny).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Protocol

from pkdgan.core import runs
from pkdgan.core.errors import UsageError

LOGGERS = ("tensorboard", "mlflow")
TENSORBOARD_DIR = "tensorboard"
FIGURES = ("roc.png", "score_histogram.png")


class Tracker(Protocol):
    def params(self, config: dict[str, Any]) -> None: ...
    def epoch(self, row: dict[str, Any]) -> None: ...
    def finish(self, run_dir: Path, metrics: dict[str, Any]) -> None: ...


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a.b`` keys (hyper-parameters and metrics are flat in both trackers)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, f"{key}.")
        else:
            out[key] = v
    return out


def scalars(d: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a (flattened) row or metrics dict, as floats."""
    out = {}
    for k, v in flatten(d).items():
        if isinstance(v, bool) or v is None:
            continue
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(f"--logger needs {module}: pip install 'pkdgan[tracking]'")


class TensorBoardTracker:
    """Event files under ``RUN/tensorboard`` (``tensorboard --logdir RUN/tensorboard``)."""

    def __init__(self, run_dir: Path) -> None:
        _require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        self.config: dict[str, Any] = {}
        self.last_epoch = 0

    def params(self, config: dict[str, Any]) -> None:
        self.config = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                       for k, v in flatten(config).items()}
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```")

    def epoch(self, row: dict[str, Any]) -> None:
        self.last_epoch = int(row["epoch"])
        for k, v in scalars({k: v for k, v in row.items() if k != "epoch"}).items():
            self.writer.add_scalar(f"train/{k}", v, self.last_epoch)
        self.writer.flush()

    def finish(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        final = scalars(metrics)
        for k, v in final.items():
            self.writer.add_scalar(f"test/{k}", v, self.last_epoch)
        for name in FIGURES:
            path = run_dir / "plots" / name
            if path.is_file():
                import numpy as np
                from PIL import Image

                img = np.asarray(Image.open(path).convert("RGB"))
                self.writer.add_image(f"figures/{path.stem}", img, self.last_epoch, dataformats="HWC")
        self.writer.add_hparams({k: v for k, v in self.config.items() if v is not None},
                                {f"hparam/{k}": v for k, v in final.items() if k.startswith("auroc")},
                                run_name=".")
        self.writer.close()


class MlflowTracker:
    """One MLflow run: a local file store (``mlruns`` beside the run folder) or ``uri``."""

    def __init__(self, run_dir: Path, uri: str | None) -> None:
        _require("mlflow")
        import mlflow

        self.mlflow = mlflow
        self.uri = uri or (run_dir.resolve().parent / "mlruns").as_uri()
        if self.uri.startswith("file:"):
            # MLflow 3 keeps its file store only behind this opt-in (a database backend needs
            # SQLAlchemy, which mlflow-skinny lacks); a tracking URI of the user's is used as given
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment("pkdgan")
        self.run = mlflow.start_run(run_name=run_dir.name)

    def params(self, config: dict[str, Any]) -> None:
        self.mlflow.log_params({k: str(v)[:500] for k, v in flatten(config).items()})

    def epoch(self, row: dict[str, Any]) -> None:
        self.mlflow.log_metrics(scalars({k: v for k, v in row.items() if k != "epoch"}),
                                step=int(row["epoch"]))

    def finish(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        try:
            self.mlflow.log_metrics({f"test.{k}": v for k, v in scalars(metrics).items()})
            for path in [run_dir / runs.METRICS, run_dir / "report.html",
                         *[run_dir / "plots" / f for f in FIGURES]]:
                if path.is_file():
                    self.mlflow.log_artifact(str(path))
            self._log_model(run_dir)
        finally:
            self.mlflow.end_run()

    def _log_model(self, run_dir: Path) -> None:
        import importlib.util

        if importlib.util.find_spec("onnx") is None:
            return
        from pkdgan.deploy.export_run import export_run

        with tempfile.TemporaryDirectory() as tmp:
            try:
                export_run(run_dir, Path(tmp) / "model.onnx", "onnx")
            except Exception as e:  # an export failure is the export's business, not the run's
                warnings.warn(f"mlflow: the model was not exported ({type(e).__name__}: {e})", stacklevel=2)
                return
            for path in Path(tmp).iterdir():
                self.mlflow.log_artifact(str(path), artifact_path="model")


def check(kind: str | None, uri: str | None = None) -> None:
    """Before any training: the logger exists, its package is installed, the URI fits it."""
    if kind is None:
        if uri is not None:
            raise UsageError("--tracking-uri is for --logger mlflow")
        return
    if kind not in LOGGERS:
        raise UsageError(f"unknown logger {kind!r}; choose one of {', '.join(LOGGERS)}")
    if kind == "tensorboard" and uri is not None:
        raise UsageError("--tracking-uri is for --logger mlflow")
    _require("tensorboard" if kind == "tensorboard" else "mlflow")


def log_run(kind: str | None, run_dir: Path, uri: str | None = None) -> None:
    """Mirror a finished run folder into the tracker: its config, every ``history.csv`` row as
    per-epoch scalars, the final metrics and artifacts. Failures warn; the run stays finished."""
    if kind is None:
        return
    run_dir = Path(run_dir)
    try:
        tracker: Tracker = (TensorBoardTracker(run_dir) if kind == "tensorboard"
                            else MlflowTracker(run_dir, uri))
        tracker.params(runs.read_json(run_dir / runs.CONFIG))
        for row in runs.read_history(run_dir / runs.HISTORY):
            tracker.epoch(row)
        tracker.finish(run_dir, runs.read_json(run_dir / runs.METRICS))
    except Exception as e:  # whatever a tracking backend raises
        warnings.warn(f"{run_dir}: {kind} logging failed ({type(e).__name__}: {e}); the run folder "
                      "is complete", stacklevel=2)
