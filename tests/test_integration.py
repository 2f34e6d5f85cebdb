"""Short end-to-end training on a clearly separable synthetic set: AUROC must be well above chance."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, LossWeights, ModelConfig, RunConfig, TrainConfig
from pkdgan.data.datasets import OneClassSplit
from pkdgan.data.images import to_tensor
from pkdgan.evaluation.metrics import evaluate_scores
from pkdgan.pipeline.results import finish_run
from pkdgan.training.checkpoints import load_run_generator
from pkdgan.training.train import fit
from tests.conftest import bars

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)


def bars_split() -> OneClassSplit:
    normal = to_tensor(bars(160, 16, vertical=False, seed=0), 16)
    test_x = np.concatenate([bars(40, 16, vertical=False, seed=1), bars(40, 16, vertical=True, seed=2)])
    labels = np.r_[np.zeros(40), np.ones(40)].astype(np.int64)
    return OneClassSplit(normal[:150], normal[150:], to_tensor(test_x, 16), labels, labels.copy())


def test_training_separates_bars(tmp_path: Path) -> None:
    cfg = RunConfig(
        model=ModelConfig(image_size=16, channels=1, nz=16, width=8),
        loss=LossWeights(),
        data=DataConfig(dataset="folder"),
        train=TrainConfig(epochs=3, batch_size=1, seed=0),
    )
    split = bars_split()
    model, info = fit(cfg, split, tmp_path, progress=False)
    assert info["n_train"] == 150 and info["images_per_second"] > 0
    metrics = finish_run(tmp_path, model.generator, split, "latent", {})
    assert metrics["auroc"] > 0.85, metrics
    # the saved raw scores reproduce the reported AUROC, and the checkpoint reloads
    z = runs.read_npz(tmp_path / runs.SCORES)
    assert evaluate_scores(z["scores"], z["labels"])["auroc"] == metrics["auroc"]
    _, g = load_run_generator(tmp_path)
    z1, _, z1_hat = g(split.test[:4])
    with torch.no_grad():
        model.generator.eval()
        z2, _, z2_hat = model.generator(split.test[:4])
    assert torch.allclose(z1, z2) and torch.allclose(z1_hat, z2_hat)
    history = runs.read_history(tmp_path / runs.HISTORY)
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    cal = runs.read_json(tmp_path / runs.CALIBRATION)
    assert cal["n_holdout"] == 10 and cal["threshold"] is not None
