"""End to end on a PNG folder dataset written here: train -> plots -> predict -> export -> onnxruntime."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pkdgan.reports.plots
from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.config import ModelConfig
from pkdgan.data.datasets import OneClassSplit
from pkdgan.data.images import to_tensor
from pkdgan.deploy.export import onnx_scores, sidecar_path
from pkdgan.inference.predict import read_files
from pkdgan.models.nets import build_generator
from pkdgan.pipeline.results import finish_run
from pkdgan.reports.plots import HISTOGRAM, LOSSES, PLOTS_DIR, RECONSTRUCTIONS, ROC
from tests.conftest import bars

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

PLOT_FILES = {ROC, HISTOGRAM, RECONSTRUCTIONS, LOSSES}


def write_pngs(folder: Path, images: np.ndarray, rgb: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(images):
        p = folder / f"img_{i:03d}.png"
        Image.fromarray(np.stack([a] * 3, -1) if rgb else a).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder dataset (horizontal bars normal, vertical abnormal) and a run trained on it."""
    root = tmp_path_factory.mktemp("folder_data")
    write_pngs(root / "train", bars(120, 16, vertical=False, seed=0))
    write_pngs(root / "test" / "normal", bars(20, 16, vertical=False, seed=1))
    write_pngs(root / "test" / "abnormal", bars(20, 16, vertical=True, seed=2))
    run = tmp_path_factory.mktemp("runs") / "folder_run"
    rc = main(["train", "--dataset", "folder", "--data-root", str(root), "--image-size", "16",
               "--width", "8", "--nz", "16", "--epochs", "2", "--batch-size", "1",
               "--holdout-fraction", "0.2",
               "--no-progress", "--out", str(run)])
    assert rc == 0
    return root, run


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_train_writes_plots(trained: tuple[Path, Path]) -> None:
    _, run = trained
    assert {p.name for p in (run / PLOTS_DIR).iterdir()} == PLOT_FILES
    for name in PLOT_FILES:
        with Image.open(run / PLOTS_DIR / name) as im:
            assert im.format == "PNG" and min(im.size) > 200


def test_predict_flags_abnormal_and_matches_run_scores(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, run = trained
    out, panels = tmp_path / "pred.csv", tmp_path / "panels"
    rc = main(["predict", str(run), str(root / "test" / "normal"), str(root / "test" / "abnormal"),
               "--output", str(out), "--save-reconstructions", str(panels)])
    assert rc == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "score", "label"] and len(rows) == 40
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    abnormal = np.array(["abnormal" in r["path"] for r in rows])
    # same images, same model, same order as the run's test set: the same scores
    np.testing.assert_allclose(scores, runs.read_npz(run / runs.SCORES)["scores"], rtol=1e-5)
    # the threshold (fitted on held-out normal training images) separates the toy set
    assert labels[abnormal].mean() >= 0.8 and labels[~abnormal].mean() <= 0.25, (labels, abnormal)
    threshold = runs.read_json(run / runs.CALIBRATION)["threshold"]
    assert np.array_equal(labels, (scores > threshold).astype(int))
    assert len(list(panels.glob("*.png"))) == 40


def test_predict_json_resizes_rgb_with_warning(trained: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _, run = trained
    big = write_pngs(tmp_path / "big", bars(3, 20, vertical=True, seed=5), rgb=True)
    out = tmp_path / "pred.json"
    with pytest.warns(UserWarning, match="20x20 converted to 16x16"):
        assert main(["predict", str(run), *map(str, big), "--output", str(out), "--fpr", "0.5"]) == 0
    result = json.loads(out.read_text())
    assert [r["path"] for r in result["predictions"]] == [str(p) for p in big]
    assert result["n_images"] == 3 and result["score"] == runs.read_json(run / runs.CALIBRATION)["score"]
    # --fpr 0.5 refits the threshold on the held-out normal scores: lower than the run's 5 %
    assert result["threshold"] < runs.read_json(run / runs.CALIBRATION)["threshold"]
    assert "3 image(s)" in capsys.readouterr().out


def test_export_onnx_scores_equal_pytorch(trained: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    root, run = trained
    model = tmp_path / "detector.onnx"
    assert main(["export", str(run), "--format", "onnx", "--output", str(model)]) == 0
    sidecar = json.loads(sidecar_path(model).read_text())
    pre = sidecar["preprocessing"]
    assert (pre["image_size"], pre["channels"], pre["value_range"]) == (16, 1, [-1.0, 1.0])
    assert sidecar["threshold"] == runs.read_json(run / runs.CALIBRATION)["threshold"]
    assert sidecar["parity"]["max_rel_diff"] <= 1e-4
    # real images, preprocessed as the sidecar says, in batches of two sizes (dynamic axis)
    pred = tmp_path / "pred.csv"
    main(["predict", str(run), str(root / "test"), "--output", str(pred)])
    rows = read_csv(pred)
    x = read_files([Path(r["path"]) for r in rows], pre["channels"], pre["image_size"], pre["resize"])
    torch_scores = np.array([float(r["score"]) for r in rows])
    got = np.concatenate([onnx_scores(model, x[:7].numpy()), onnx_scores(model, x[7:].numpy())])
    max_abs = float(np.abs(got - torch_scores).max())
    print(f"onnxruntime vs PyTorch on {len(rows)} images: max abs diff {max_abs:.3g}")
    assert max_abs <= 1e-4 * np.abs(torch_scores).max()
    flagged = (got > sidecar["threshold"]).astype(int)
    assert np.array_equal(flagged, [int(r["label"]) for r in rows])


def test_plot_command_regenerates(trained: tuple[Path, Path]) -> None:
    _, run = trained
    for name in PLOT_FILES:
        (run / PLOTS_DIR / name).unlink()
    assert main(["plot", str(run)]) == 0
    assert {p.name for p in (run / PLOTS_DIR).iterdir()} == PLOT_FILES


@pytest.mark.parametrize("bad", ["corrupt", "missing", "not_a_run"])
def test_cli_errors_are_one_line(trained: tuple[Path, Path], tmp_path: Path, bad: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    _, run = trained
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"not a png")
    argv = {
        "corrupt": ["predict", str(run), str(corrupt)],
        "missing": ["predict", str(run), str(tmp_path / "nowhere")],
        "not_a_run": ["export", str(tmp_path), "--output", str(tmp_path / "m.onnx")],
    }[bad]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pkdgan {argv[0]}: error:") and "\n" not in err and "Traceback" not in err


def test_plot_failure_only_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no display")

    monkeypatch.setattr(pkdgan.reports.plots, "write_run_plots", broken)
    x = to_tensor(bars(30, 16, vertical=False, seed=0), 16)
    labels = np.r_[np.zeros(5), np.ones(5)].astype(np.int64)
    split = OneClassSplit(x[:10], x[10:20], x[20:], labels, labels.copy())
    generator = build_generator(ModelConfig(image_size=16, nz=4, width=2))
    with pytest.warns(UserWarning, match="plots not written .*no display"):
        finish_run(tmp_path, generator, split, "latent", {})
    assert runs.is_finished(tmp_path)


def test_folder_without_test_set_trains_calibrates_and_predicts(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Only normal images (no test/ folder): trained and calibrated, not evaluated; predict works."""
    root = tmp_path / "data"
    write_pngs(root / "train", bars(120, 16, vertical=False, seed=0))
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="not evaluated"):
        rc = main(["train", "--dataset", "folder", "--data-root", str(root), "--image-size", "16",
                   "--width", "8", "--nz", "16", "--epochs", "2", "--batch-size", "1",
                   "--holdout-fraction", "0.2",
                   "--no-progress", "--out", str(run)])
    assert rc == 0 and runs.is_finished(run)
    metrics = runs.read_json(run / runs.METRICS)
    assert metrics["auroc"] is None and metrics["evaluated"] is False and metrics["n_test"] == 0
    assert runs.read_json(run / runs.CALIBRATION)["threshold"] > 0
    assert {p.name for p in (run / PLOTS_DIR).iterdir()} == {LOSSES}
    new = tmp_path / "new"
    write_pngs(new / "normal", bars(20, 16, vertical=False, seed=1))
    write_pngs(new / "abnormal", bars(20, 16, vertical=True, seed=2))
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(new), "--output", str(out)]) == 0
    rows = read_csv(out)
    abnormal = np.array(["abnormal" in r["path"] for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    assert labels[abnormal].mean() >= 0.8 and labels[~abnormal].mean() <= 0.25, labels
    capsys.readouterr()
    with pytest.warns(UserWarning):
        assert main(["test", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pkdgan test: error:") and "no test set" in err[-1]
