"""Score kinds: combined (held-out standardised max), auto (label-free choice on synthetic
anomalies), and a folder dataset where the latent score fails but the default does not."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pkdgan.api import EDEGAN, load
from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.config import DataConfig, RunConfig, TrainConfig, from_dict
from pkdgan.core.errors import UsageError
from pkdgan.data.datasets import one_class_split
from pkdgan.data.synthetic import CORRUPTIONS, synthetic_anomalies
from pkdgan.evaluation.score_kinds import (
    AUTO,
    KINDS,
    below_chance_note,
    combine,
    default_score,
    pick,
    score_warning,
    standardization,
)
from pkdgan.evaluation.split_scores import scores_and_choice
from pkdgan.training.checkpoints import load_run_generator
from tests.conftest import REPO, bars

STATS = {"latent": {"mean": 1.0, "std": 0.5}, "reconstruction": {"mean": 0.2, "std": 0.1}}


def _generator_script():  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location("make_synthetic_folders",
                                                  REPO / "scripts" / "make_synthetic_folders.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- units ---------------------------------------------------------------------------------------


def test_combined_is_the_larger_held_out_z_score_in_numpy_and_torch() -> None:
    lat, rec = np.array([1.0, 0.0, 2.0]), np.array([0.5, 0.2, 0.1])
    expected = np.maximum((lat - 1.0) / 0.5, (rec - 0.2) / 0.1)
    np.testing.assert_allclose(combine(lat, rec, STATS), expected)
    got = combine(torch.tensor(lat), torch.tensor(rec), STATS)
    np.testing.assert_allclose(got.numpy(), expected)
    # one score calling an anomaly extra-normal (z = -2) cannot hide the other's evidence (z = 3)
    assert combine(np.array([0.0]), np.array([0.5]), STATS)[0] == pytest.approx(3.0)


def test_combined_needs_held_out_statistics() -> None:
    assert standardization({"latent": np.ones(3)}) == {}
    with pytest.raises(UsageError, match="held-out"):
        combine(np.ones(2), np.ones(2), {})


def test_pick_prefers_combined_on_near_ties_only() -> None:
    assert pick({"latent": 0.9, "reconstruction": 0.6, "combined": 0.7}) == "latent"
    assert pick({"latent": 0.9, "reconstruction": 0.6, "combined": 0.898}) == "combined"
    assert pick({"latent": 0.5, "reconstruction": 0.8, "combined": 0.7}) == "reconstruction"


def test_pick_drops_a_score_inverted_on_synthetic_anomalies_and_combined_with_it() -> None:
    # blob/stripe seed 0 as recorded: combined within TIE of reconstruction, latent inverted
    seed0 = {"latent": 0.392, "reconstruction": 0.5419, "combined": 0.5369}
    assert pick(seed0) == "reconstruction"
    assert pick({"latent": 0.45, "reconstruction": 0.40, "combined": 0.44}) == "latent"  # all inverted
    assert pick({"latent": 0.8, "reconstruction": 0.45, "combined": 0.81}) == "latent"


def test_synthetic_anomalies_are_seeded_bounded_and_leave_input_alone() -> None:
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    before = x.clone()
    a, which, names = synthetic_anomalies(x, seed=3)
    b, _, _ = synthetic_anomalies(x, seed=3)
    assert names == list(CORRUPTIONS) and torch.equal(a, b) and torch.equal(x, before)
    per = len(a) // len(names)
    assert per >= 32 and np.array_equal(which, np.repeat(np.arange(len(names)), per))
    assert a.min() >= -1 and a.max() <= 1
    base = x.repeat(per // 5, 1, 1, 1)
    for i, name in enumerate(names):  # every corruption changes (nearly) every image
        changed = (a[which == i] - base).abs().flatten(1).amax(1) > 1e-3
        assert changed.float().mean() > 0.9, name
    assert not torch.equal(synthetic_anomalies(x, seed=4)[0], a)


def test_score_warning_reads_only_the_synthetic_check_and_says_one_line() -> None:
    assert score_warning("latent", {"latent": 0.9, "reconstruction": 0.95, "combined": 0.94}) is None
    assert score_warning("latent", None) is None and score_warning("latent", {}) is None
    low = score_warning("latent", {"latent": 0.392, "reconstruction": 0.5419, "combined": 0.5369})
    assert low is not None and "0.392 < 0.5" in low and "reconstruction: 0.542" in low
    assert "--score auto" in low and "synthetic" in low and "\n" not in low
    far = score_warning("latent", {"latent": 0.7, "reconstruction": 0.72, "combined": 0.85})
    assert far is not None and "far worse than the combined" in far and "\n" not in far
    # auto chose by this very check: only "every kind fails" is left to say
    assert score_warning("reconstruction", {"latent": 0.45, "reconstruction": 0.6, "combined": 0.75},
                         AUTO) is None
    every = score_warning("latent", {"latent": 0.47, "reconstruction": 0.40, "combined": 0.44}, AUTO)
    assert every is not None and every.startswith("every score kind") and "--score" not in every
    # a test AUROC is a statement of the evaluation, never a suggestion of another score
    note = below_chance_note("latent", {"auroc_latent": 0.2, "auroc_reconstruction": 0.99})
    assert note is not None and "0.200 < 0.5" in note and "--score" not in note
    assert below_chance_note("latent", {"auroc_latent": 0.7, "auroc_reconstruction": 0.99}) is None


def test_defaults_keep_the_papers_score_and_old_hashes() -> None:
    assert default_score("folder") == AUTO
    assert all(default_score(d) == "latent" for d in ("mnist", "fmnist", "cifar10", "digits"))
    assert RunConfig().train.score == "latent"
    # hashes of runs made before score kinds were added (no new config field)
    assert RunConfig().hash() == "9aac4289035a"
    cfg = RunConfig(data=DataConfig(dataset="folder"), train=TrainConfig(score="reconstruction"))
    assert cfg.hash() == "0dfd7f1db0a7"
    with pytest.raises(UsageError, match="score must be one of"):
        TrainConfig(score="best")


# --- the case: blobs normal, stripes abnormal; the latent score fails ----------------------


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The issue's folder dataset and command, with the default score."""
    data = _generator_script().make(tmp_path_factory.mktemp("synth"), "blobs_stripes", 0, 200, 40)
    run = tmp_path_factory.mktemp("runs") / "blobs"
    rc = main(["train", "--dataset", "folder", "--data-root", str(data), "--epochs", "3",
               "--batch-size", "8", "--width", "16", "--seed", "0", "--no-progress", "--out", str(run)])
    assert rc == 0
    return data, run


@pytest.mark.slow
def test_auto_picks_a_kind_that_works_where_latent_fails(blob_run: tuple[Path, Path]) -> None:
    _, run = blob_run
    metrics = runs.read_json(run / runs.METRICS)
    calibration = runs.read_json(run / runs.CALIBRATION)
    assert metrics["auroc_latent"] < 0.5  # the failure the issue reports
    assert calibration["requested"] == AUTO and metrics["score_requested"] == AUTO
    assert calibration["score"] == metrics["score"] != "latent"
    assert metrics["auroc"] >= 0.9 and metrics["auroc"] == metrics[f"auroc_{metrics['score']}"]
    assert set(calibration["synthetic_auroc"]) == set(KINDS) == set(metrics["synthetic_auroc"])
    assert {f"auroc_{k}" for k in KINDS} <= set(metrics)


@pytest.mark.slow
def test_predict_uses_the_chosen_kind(blob_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = blob_run
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(data / "test" / "normal"), str(data / "test" / "abnormal"),
                 "--output", str(out)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array(["abnormal" in r["path"] for r in rows])
    # the bar with default settings: auto drops the inverted latent score (and combined,
    # built on it) and picks reconstruction: 0.958 (1 thread) / 0.962 (2 threads) on the Xeon,
    # docs/scores.md; 0.9494 on a 2-core AMD EPYC run alone (one of the 1,600 normal/anomalous
    # pairs the other way: float rounding of a trained GAN), hence 0.945 here
    assert runs.read_json(run / runs.CALIBRATION)["score"] == "reconstruction"
    assert roc_auc_score(labels, scores) >= 0.945
    np.testing.assert_allclose(scores, runs.read_npz(run / runs.SCORES)["scores"], rtol=1e-4, atol=1e-5)


def test_choice_never_reads_test_labels(blob_run: tuple[Path, Path]) -> None:
    """Shuffled test labels (and test images) give the same choice and synthetic AUROCs."""
    data, run = blob_run
    cfg, generator = load_run_generator(run)
    split = one_class_split(from_dict(DataConfig, cfg["data"]), 32, 1, cfg["train"]["seed"])
    _, choice = scores_and_choice(generator, split, AUTO)
    perm = np.random.default_rng(0).permutation(len(split.test_labels))
    split.test_labels = split.test_labels[np.random.default_rng(1).permutation(len(perm))]
    split.test = split.test[torch.as_tensor(perm)]
    _, shuffled = scores_and_choice(generator, split, AUTO)
    assert shuffled == choice
    recorded = runs.read_json(run / runs.CALIBRATION)
    assert recorded["score"] == choice["score"]
    assert recorded["synthetic_auroc"] == pytest.approx(choice["synthetic_auroc"])


@pytest.mark.slow
def test_an_inverted_latent_score_warns_from_the_label_free_check(
        blob_run: tuple[Path, Path], tmp_path: Path) -> None:
    """``--score latent`` on the blob/stripe folder: the one-line warning comes from synthetic
    anomalies of held-out training images, so it is the same with shuffled test labels and is
    there for a folder that has no test images at all."""
    data, run = blob_run
    cfg, generator = load_run_generator(run)
    split = one_class_split(from_dict(DataConfig, cfg["data"]), 32, 1, cfg["train"]["seed"])
    _, choice = scores_and_choice(generator, split, "latent")
    assert choice["score"] == "latent" and set(choice["synthetic_auroc"]) == set(KINDS)
    line = score_warning("latent", choice["synthetic_auroc"])
    assert line is not None and choice["synthetic_auroc"]["latent"] < 0.5
    split.test_labels = split.test_labels[np.random.default_rng(1).permutation(len(split.test_labels))]
    assert scores_and_choice(generator, split, "latent")[1] == choice
    train_only = tmp_path / "train_only"
    train_only.mkdir()
    (train_only / "train").symlink_to(data / "train")
    out = tmp_path / "latent_run"
    with pytest.warns(UserWarning, match="synthetic AUROC .* < 0.5") as caught:
        assert main(["train", "--dataset", "folder", "--data-root", str(train_only), "--epochs", "3",
                     "--batch-size", "8", "--width", "16", "--seed", "0", "--score", "latent",
                     "--no-progress", "--out", str(out)]) == 0
    assert not any("test AUROC" in str(w.message) for w in caught)
    calibration = runs.read_json(out / runs.CALIBRATION)
    assert calibration["score"] == "latent" and calibration["synthetic_auroc"]["latent"] < 0.5


def test_combined_onnx_export_matches_pytorch(blob_run: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from pkdgan.deploy.export import onnx_scores, sidecar_path

    data, run = blob_run
    model = tmp_path / "combined.onnx"
    # export checks onnxruntime-vs-PyTorch parity itself and fails if it is off
    assert main(["export", str(run), "--score", "combined", "--output", str(model)]) == 0
    sidecar = runs.read_json(sidecar_path(model))
    assert sidecar["score"] == "combined" and set(sidecar["standardization"]) == {"latent", "reconstruction"}
    det = load(run, score="combined")
    x = det._images(data / "test")
    np.testing.assert_allclose(onnx_scores(model, x.numpy()), det.decision_function(x), rtol=1e-4, atol=1e-4)


# --- the Python API ------------------------------------------------------------------------------


def test_api_defaults_to_auto_and_round_trips(tmp_path: Path) -> None:
    normal = bars(60, 16, vertical=False, seed=0)
    det = EDEGAN(image_size=16, nz=8, width=8, epochs=1, batch_size=8, holdout_fraction=0.2).fit(normal)
    assert det.score == AUTO and det.score_ in KINDS
    assert det.calibration_["requested"] == AUTO and set(det.calibration_["synthetic_auroc"]) == set(KINDS)
    new = np.concatenate([bars(5, 16, vertical=False, seed=1), bars(5, 16, vertical=True, seed=2)])
    back = load(det.save(tmp_path / "det"))
    assert back.score_ == det.score_
    np.testing.assert_allclose(back.decision_function(new), det.decision_function(new), rtol=1e-5)
    assert np.array_equal(back.predict(new), det.predict(new))


def test_auto_on_a_run_without_a_recorded_choice_is_one_clear_error(tmp_path: Path) -> None:
    normal = bars(40, 16, vertical=False, seed=0)
    det = EDEGAN(image_size=16, nz=8, width=8, epochs=1, batch_size=8, score="latent",
                 holdout_fraction=0.2).fit(normal)
    path = det.save(tmp_path / "det")
    with pytest.raises(UsageError, match="records no automatic score choice"):
        load(path, score=AUTO)
    combined = load(path, score="combined")  # computed from the saved held-out scores
    assert combined.score_ == "combined" and combined.threshold_ is not None


def test_colour_cast_shifts_rgb_channels_apart_and_bends_grey_tones() -> None:
    from pkdgan.data.synthetic import colour

    g = torch.Generator().manual_seed(0)
    rgb = torch.zeros(64, 3, 8, 8)
    shift = (colour(rgb, g) - rgb).mean(dim=(2, 3))  # (N, 3) per-channel shifts
    assert (shift.abs() >= 0.2 - 1e-6).all() and (shift.abs() <= 0.5 + 1e-6).all()
    assert (shift.std(dim=1) > 0.05).float().mean() > 0.5  # a cast, not a brightness change
    grey = torch.linspace(-1, 1, 64).view(1, 1, 8, 8).repeat(16, 1, 1, 1)
    out = colour(grey, g)
    assert torch.equal(out[:, :, 0, 0], grey[:, :, 0, 0])  # black and white stay
    assert torch.allclose(out[:, :, -1, -1], grey[:, :, -1, -1])
    assert (out - grey).abs().flatten(1).amax(1).min() > 0.1  # the mid-tones move
