"""The PyOD/sklearn-style detectors: inputs of every form, thresholds from normal data, save/load."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.base import clone

from pkdgan.api import EDEGAN, PKDGAN, holdout_split, load
from pkdgan.core import runs
from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import DataError, UsageError
from pkdgan.data.images import to_tensor
from tests.conftest import bars

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

NORMAL = bars(120, 16, vertical=False, seed=0)
TEST_NORMAL = bars(20, 16, vertical=False, seed=1)
TEST_ABNORMAL = bars(20, 16, vertical=True, seed=2)
# the threshold machinery is tested on the paper's latent score (the default, auto, in
# test_score_kinds) at batch 1: the cpu preset's batch 16 would take six steps an epoch on these images
TINY = {"image_size": 16, "nz": 16, "width": 8, "epochs": 2, "batch_size": 1, "holdout_fraction": 0.2,
        "device": "cpu", "score": "latent"}


@pytest.fixture(scope="module")
def detector() -> EDEGAN:
    return EDEGAN(**TINY).fit(NORMAL)


def test_fit_predict_separates_and_threshold_is_heldout_quantile(detector: EDEGAN) -> None:
    flagged_normal = detector.predict(TEST_NORMAL).mean()
    flagged_abnormal = detector.predict(TEST_ABNORMAL).mean()
    assert flagged_abnormal >= 0.8 and flagged_normal <= 0.25, (flagged_normal, flagged_abnormal)
    held = detector.holdout_scores_["latent"]
    assert len(held) == 24 and detector.calibration_["n_holdout"] == 24
    # the threshold is the held-out normal scores' 95 % quantile, nothing from test images
    assert detector.threshold_ == pytest.approx(np.quantile(held, 0.95, method="higher"))
    assert detector.decision_scores_.shape == (len(NORMAL),)
    _, hold_idx = holdout_split(len(NORMAL), 0.2, 0)
    np.testing.assert_allclose(detector.decision_scores_[hold_idx.numpy()], held)
    np.testing.assert_array_equal(detector.score_samples(TEST_NORMAL),
                                  -detector.decision_function(TEST_NORMAL))
    fresh = clone(detector)  # sklearn-compatible parameters: an unfitted copy with the same settings
    assert fresh.get_params() == detector.get_params() and not hasattr(fresh, "generator_")


def test_every_input_form_gives_the_same_scores(detector: EDEGAN, tmp_path: Path) -> None:
    x = TEST_ABNORMAL[:5]
    for i, a in enumerate(x):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    paths = sorted(tmp_path.glob("*.png"))
    expected = detector.decision_function(x)
    forms = [torch.from_numpy(x), x[..., None], to_tensor(x, 16), to_tensor(x, 16).numpy(),
             paths, [str(p) for p in paths], tmp_path, str(tmp_path), np.stack([x] * 3, -1)]
    for form in forms:
        np.testing.assert_allclose(detector.decision_function(form), expected, rtol=1e-6, atol=1e-9)


def test_calibrate_contamination_and_normalize(detector: EDEGAN) -> None:
    det = copy.deepcopy(detector)
    strict = det.threshold_
    det.calibrate(contamination=0.5)
    assert det.threshold_ < strict and det.calibration_["contamination"] == 0.5
    det.calibrate()
    assert det.threshold_ == strict
    raw_labels = det.predict(TEST_ABNORMAL)
    det.set_params(normalize=True)
    z = det.decision_function(TEST_NORMAL)
    held = det.holdout_scores_["latent"]
    np.testing.assert_allclose(z, (detector.decision_function(TEST_NORMAL) - held.mean()) / held.std(),
                               rtol=1e-5)
    np.testing.assert_array_equal(det.predict(TEST_ABNORMAL), raw_labels)
    det.set_threshold(0.0)  # in normalised units: the held-out mean
    assert det.threshold_raw_ == pytest.approx(held.mean())


def test_save_load_round_trip_without_pickle(detector: EDEGAN, tmp_path: Path) -> None:
    path = detector.save(tmp_path / "det")
    assert {p.name for p in path.iterdir()} == {runs.CONFIG, runs.CHECKPOINT, runs.CALIBRATION}
    assert "detector.holdout_latent" in load_file(str(path / runs.CHECKPOINT))
    loaded = load(path)
    assert isinstance(loaded, EDEGAN) and loaded.get_params() == detector.get_params()
    assert loaded.threshold_ == detector.threshold_
    np.testing.assert_array_equal(loaded.decision_function(TEST_ABNORMAL),
                                  detector.decision_function(TEST_ABNORMAL))
    np.testing.assert_array_equal(loaded.decision_scores_, detector.decision_scores_)
    # another score or false-positive rate refits the threshold from the saved held-out scores
    recon = load(path, score="reconstruction", fpr=0.5)
    assert recon.threshold_ == pytest.approx(np.quantile(detector.holdout_scores_["reconstruction"], 0.5,
                                                         method="higher"))
    with pytest.raises(UsageError, match="already holds a run"):
        detector.save(path)


def test_bad_inputs_raise_clear_errors(detector: EDEGAN) -> None:
    with pytest.raises(UsageError, match="not fitted"):
        EDEGAN().decision_function(TEST_NORMAL)
    with pytest.raises(UsageError, match="preprocessed"):
        detector.decision_function(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(UsageError, match=r"\[-1, 1\]"):
        detector.decision_function(np.full((2, 1, 16, 16), 5.0, np.float32))
    with pytest.raises(UsageError, match="0..255"):
        detector.decision_function(np.full((2, 16, 16), 300, np.int64))
    with pytest.raises(DataError, match="no such file"):
        detector.decision_function(["/nonexistent/image.png"])
    with pytest.raises(UsageError, match="holdout_fraction"):
        EDEGAN(**TINY | {"holdout_fraction": 0.0}).fit(NORMAL)
    with pytest.raises(UsageError, match="score must be"):  # refused before any training
        EDEGAN(**TINY | {"score": "pixels"}).fit(NORMAL)


def test_small_holdout_warns() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        holdout_split(30, 0.1, 0)
    assert any("coarse" in str(w.message) for w in caught)


def test_student_detector_fit_save_load(detector: EDEGAN, tmp_path: Path) -> None:
    student = PKDGAN(teacher=detector, student=ModelConfig(image_size=16, channels=1, nz=8, width=2),
                     step1_epochs=1, step2_epochs=1, holdout_fraction=0.2, device="cpu")
    teacher_before = {k: v.clone() for k, v in detector.generator_.state_dict().items()}
    student.fit(NORMAL)
    # joint fine-tuning (step 2) worked on a copy: the user's teacher is unchanged
    assert all(torch.equal(v, detector.generator_.state_dict()[k]) for k, v in teacher_before.items())
    assert student.model_config_.width == 2 and student.kind_ == "distill"
    assert student.threshold_ is not None and student.predict(TEST_ABNORMAL).shape == (20,)
    loaded = load(student.save(tmp_path / "student"))
    assert isinstance(loaded, PKDGAN) and loaded.model_config_ == student.model_config_
    np.testing.assert_array_equal(loaded.decision_function(TEST_ABNORMAL),
                                  student.decision_function(TEST_ABNORMAL))
