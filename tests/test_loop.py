"""The one training loop (issue 14): what the four former loops did differently is now one
behaviour. Distillation honours ``on_divergence`` (stop / reinit) and checks weights like EDE-GAN
training, stacked or not; a finished distillation folder is read back on ``--resume`` like a
teacher run; old configs keep their hashes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.config import DataConfig, DistillConfig, ModelConfig, from_dict
from pkdgan.core.errors import DivergenceError, UsageError
from pkdgan.data.datasets import one_class_split
from pkdgan.pipeline.distill_run import distill_run, load_teacher
from pkdgan.training import distill as distill_mod
from pkdgan.training import multi_distill as multi_distill_mod
from pkdgan.training.distill import distill
from pkdgan.training.multi_distill import Job, distill_many

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

# 38 training images at batch 4 -> 10 steps per epoch (as in test_divergence).
STEPS = 10
ARGS = ["train", "--dataset", "digits", "--image-size", "16", "--width", "4", "--nz", "8",
        "--batch-size", "4", "--no-drop-last", "--max-train", "40", "--max-test", "40", "--seed", "2",
        "--no-progress", "--device", "cpu", "--epochs", "1"]
DCFG = {"mode": "single", "structure": 2, "epochs": 2, "batch_size": 4, "seed": 0, "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def _no_plots() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pkdgan.pipeline.results.write_plots", lambda *a, **k: None, raising=False)
        yield


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def student(teacher: Path) -> ModelConfig:
    """Half the teacher's latent size: the student-side projection takes part too."""
    return ModelConfig(**runs.read_json(teacher / runs.CONFIG)["model"] | {"nz": 4})


def poison(monkeypatch: pytest.MonkeyPatch, module: object, calls: set[int]) -> None:
    """K's total turns NaN on the given (1-based) calls of ``module.distillation_loss``."""
    real, n = module.distillation_loss, [0]  # type: ignore[attr-defined]

    def loss(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        terms = real(*args, **kwargs)
        n[0] += 1
        if n[0] in calls:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(module, "distillation_loss", loss)


def test_distillation_stop_keeps_the_last_good_checkpoint(teacher: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    poison(monkeypatch, distill_mod, {STEPS + 4})
    out = tmp_path / "run"
    with pytest.raises(DivergenceError, match="epoch 2, step 4") as e:
        distill_run(teacher, student(teacher), DistillConfig(**DCFG), out, progress=False)
    assert f"kept the last good checkpoint {out / runs.CHECKPOINT} (epoch 1)" in str(e.value)
    with safe_open(str(out / runs.CHECKPOINT), "pt") as f:
        assert f.metadata()["epoch"] == "1"
    assert not runs.is_finished(out)


def test_distillation_reinit_recovers(teacher: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    poison(monkeypatch, distill_mod, {3})
    out = tmp_path / "run"
    m = distill_run(teacher, student(teacher), DistillConfig(**DCFG, on_divergence="reinit"), out,
                    progress=False)
    assert m["recoveries"] == 1 and runs.is_finished(out)
    assert all(torch.isfinite(t).all() for t in runs.load_tensors(out / runs.CHECKPOINT).values())


def test_stacked_distillation_recovers_as_one_by_one(teacher: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The same poisoned step in a stack of two and in each run alone: the same recovery."""
    t_model, tcfg = load_teacher(teacher)
    s_cfg = student(teacher)
    dcfgs = [DistillConfig(**DCFG | {"batch_size": 1, "epochs": 1, "seed": s},
                           on_divergence="reinit") for s in (0, 1)]
    split = one_class_split(from_dict(DataConfig, tcfg["data"]), s_cfg.image_size, s_cfg.channels,
                            int(tcfg["train"]["seed"]))
    bad = 7  # the 7th image of every member's first epoch
    with monkeypatch.context() as mp:
        poison(mp, multi_distill_mod, {bad})
        stacked = distill_many([Job(t_model, s_cfg, split, d) for d in dcfgs], progress=False)
    for d, got in zip(dcfgs, stacked, strict=True):
        with monkeypatch.context() as mp:
            poison(mp, distill_mod, {bad})
            alone, _, info = distill(t_model, s_cfg, split, d, progress=False)
        assert got.error is None and got.info["recoveries"] == info["recoveries"] == 1
        a, b = got.student.state_dict(), alone.state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_finished_distillation_is_read_back_on_resume(teacher: Path, tmp_path: Path) -> None:
    """As ``train_run`` does: ``resume`` on a finished folder with the same config returns its
    metrics; without ``resume`` the folder is refused."""
    dcfg = DistillConfig(**DCFG | {"epochs": 1})
    out = tmp_path / "run"
    m = distill_run(teacher, student(teacher), dcfg, out, progress=False)
    assert distill_run(teacher, student(teacher), dcfg, out, progress=False, resume=True) == m
    with pytest.raises(UsageError, match="finished"):
        distill_run(teacher, student(teacher), dcfg, out, progress=False)


def test_on_divergence_keeps_earlier_distillation_hashes() -> None:
    assert "on_divergence" not in DistillConfig().to_dict()
    assert DistillConfig(on_divergence="reinit").to_dict()["on_divergence"] == "reinit"
    assert DistillConfig.from_dict(DistillConfig().to_dict()) == DistillConfig()
