"""Same seed and settings -> bit-identical weights and scores on CPU; another seed -> not."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pkdgan.data.datasets import one_class_split
from pkdgan.evaluation.split_scores import score_split
from pkdgan.pipeline.train_run import train_run
from pkdgan.training.train import fit

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)


@pytest.fixture(scope="module", autouse=True)
def _no_plots() -> Iterator[None]:
    """Run plots are another feature (and seconds per run on 2 cores); not what is tested here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pkdgan.pipeline.results.write_plots", lambda *a, **k: None, raising=False)
        yield


def config(seed: int, reinit_threshold: float = 1e-5) -> RunConfig:
    return RunConfig(
        model=ModelConfig(image_size=16, channels=1, nz=8, width=4),
        data=DataConfig(dataset="digits", normal_class=7, max_train=32, max_test=40),
        train=TrainConfig(epochs=2, batch_size=4, seed=seed, device="cpu",
                          d_reinit_threshold=reinit_threshold),
    )


def disturb_global_rngs() -> None:
    """Whatever ran before must not matter: fit seeds everything it uses itself."""
    torch.rand(17)
    np.random.rand(3)
    random.random()


# A threshold above any BCE value re-initialises D after every step: that path draws from the
# global RNG mid-training, so it must be seeded as well.
@pytest.mark.parametrize("reinit_threshold", [1e-5, 10.0], ids=["plain", "d-reinit-every-step"])
def test_same_seed_gives_bit_identical_runs(tmp_path: Path, reinit_threshold: float) -> None:
    a = train_run(config(0, reinit_threshold), tmp_path / "a", progress=False)
    disturb_global_rngs()
    b = train_run(config(0, reinit_threshold), tmp_path / "b", progress=False)
    sa, sb = runs.read_npz(tmp_path / "a" / runs.SCORES), runs.read_npz(tmp_path / "b" / runs.SCORES)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    assert a["auroc"] == b["auroc"] and a["d_reinits"] == b["d_reinits"]
    if reinit_threshold > 1:
        assert a["d_reinits"] == 2 * 8  # 2 epochs x 8 steps: every D step was a collapse
    ta = runs.load_tensors(tmp_path / "a" / runs.CHECKPOINT)
    tb = runs.load_tensors(tmp_path / "b" / runs.CHECKPOINT)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_checkpointing_does_not_change_the_result(tmp_path: Path) -> None:
    """Training with and without a run folder gives the same model: saving draws no randomness."""
    cfg = config(0)
    train_run(cfg, tmp_path / "a", progress=False)
    split = one_class_split(cfg.data, 16, 1, cfg.train.seed)
    disturb_global_rngs()
    model, _ = fit(cfg, split, progress=False)
    saved = runs.read_npz(tmp_path / "a" / runs.SCORES)
    assert np.array_equal(score_split(model.generator, split)["latent"], saved["latent"])


def test_another_seed_gives_other_scores(tmp_path: Path) -> None:
    cfg0, cfg1 = config(0), config(1)
    split = one_class_split(cfg0.data, 16, 1, 0)
    s0 = score_split(fit(cfg0, split, progress=False)[0].generator, split)["latent"]
    s1 = score_split(fit(cfg1, split, progress=False)[0].generator, split)["latent"]
    assert not np.array_equal(s0, s1)
