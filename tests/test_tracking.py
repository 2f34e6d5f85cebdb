"""Experiment tracking (issue 33): TensorBoard event files and MLflow runs, read back with the
libraries' own readers, mirror the run folder (per-epoch losses, test metrics, artifacts)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pkdgan.cli import main
from pkdgan.core import runs

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

needs = {m: pytest.mark.skipif(importlib.util.find_spec(m) is None, reason=f"{m} not installed")
         for m in ("tensorboard", "mlflow")}


def train(root: Path, out: Path, *extra: str) -> int:
    return main(["train", "--dataset", "digits", "--normal-class", "3", "--image-size", "16",
                 "--width", "4", "--nz", "8", "--epochs", "3", "--batch-size", "32", "--max-train", "120",
                 "--no-progress", "--out", str(out), *extra])


@needs["tensorboard"]
def test_tensorboard_events_hold_epochs_metrics_and_figures(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert train(tmp_path, run, "--logger", "tensorboard") == 0
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    history = runs.read_history(run / runs.HISTORY)
    losses = acc.Scalars("train/g_total")
    assert [e.step for e in losses] == [1, 2, 3]
    assert [e.value for e in losses] == pytest.approx([float(r["g_total"]) for r in history], rel=1e-5)
    metrics = runs.read_json(run / runs.METRICS)
    assert acc.Scalars("test/auroc")[-1].value == pytest.approx(metrics["auroc"], rel=1e-6)
    assert "figures/roc" in tags["images"]
    assert "config/text_summary" in tags["tensors"]  # the run's configuration as text


@needs["mlflow"]
def test_mlflow_run_holds_params_epochs_metrics_and_artifacts(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    uri = (tmp_path / "store").as_uri()
    assert train(tmp_path, run, "--logger", "mlflow", "--tracking-uri", uri) == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("pkdgan")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.data.params["model.width"] == "4" and found.data.params["train.epochs"] == "3"
    history = client.get_metric_history(found.info.run_id, "g_total")
    assert sorted(m.step for m in history) == [1, 2, 3]
    metrics = runs.read_json(run / runs.METRICS)
    assert found.data.metrics["test.auroc"] == pytest.approx(metrics["auroc"], rel=1e-9)
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"metrics.json", "model"} <= names
    model = {a.path for a in client.list_artifacts(found.info.run_id, "model")}
    if importlib.util.find_spec("onnx") is not None:
        assert "model/model.onnx" in model and "model/model.onnx.json" in model


def test_bad_tracking_options_stop_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    assert train(tmp_path, run, "--logger", "tensorboard", "--tracking-uri", "file:/x") == 2
    assert "--tracking-uri is for --logger mlflow" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert train(tmp_path, run, "--logger", "mlflow") == 2
    assert "pip install 'pkdgan[tracking]'" in capsys.readouterr().err
    assert not (run / runs.METRICS).exists()
