"""Divergence: NaN/Inf losses or weights stop the run with one clear line (exit 1), keep the
last good checkpoint exactly as it was, and never mark the run finished — or, with
``--on-divergence reinit``, roll back to the last good state with a fresh discriminator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pkdgan.data.datasets import one_class_split
from pkdgan.training import train as train_mod
from pkdgan.training.train import fit

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

# 38 training images at batch 4 -> 10 steps per epoch.
STEPS = 10
ARGS = ["train", "--dataset", "digits", "--image-size", "16", "--width", "4", "--nz", "8",
        "--batch-size", "4", "--no-drop-last", "--max-train", "40", "--max-test", "40", "--seed", "2",
        "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def _no_plots() -> Iterator[None]:
    """Run plots are another feature (and seconds per run on 2 cores); not what is tested here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pkdgan.pipeline.results.write_plots", lambda *a, **k: None, raising=False)
        yield


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Weights after epoch 1 (the first epoch does not depend on how many follow)."""
    out = tmp_path_factory.mktemp("one") / "run"
    assert main([*ARGS, "--epochs", "1", "--out", str(out)]) == 0
    return runs.load_tensors(out / runs.CHECKPOINT)


def poison_loss(monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> None:
    """The generator's total loss turns NaN on the given (1-based) step calls."""
    real, n = train_mod.generator_loss, [0]

    def loss(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        terms = real(*args, **kwargs)
        n[0] += 1
        if n[0] in calls:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(train_mod, "generator_loss", loss)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def assert_checkpoint_is(path: Path, expected: dict[str, torch.Tensor], epoch: str) -> None:
    got = runs.load_tensors(path)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["epoch"] == epoch


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
        tmp_path: Path, one_epoch: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    poison_loss(monkeypatch, {STEPS + 4})
    assert main([*ARGS, "--epochs", "3", "--out", str(out)]) == 1
    line = one_error_line(capsys)
    ckpt = out / runs.CHECKPOINT
    assert "training diverged at epoch 2, step 4: g_total is NaN/Inf" in line
    assert f"kept the last good checkpoint {ckpt} (epoch 1)" in line
    assert_checkpoint_is(ckpt, one_epoch, "1")
    assert not runs.is_finished(out) and not (out / runs.SCORES).exists()
    assert [r["epoch"] for r in runs.read_history(out / runs.HISTORY)] == ["1"]
    monkeypatch.undo()
    assert main([*ARGS, "--epochs", "3", "--out", str(out), "--resume"]) == 0  # and it continues
    assert runs.is_finished(out)


def test_nan_weights_after_an_epochs_last_step_never_reach_the_checkpoint(
        tmp_path: Path, one_epoch: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The loss of the last step is computed before its update, so only a weight check can
    catch an update that blew up the parameters just before the checkpoint is written."""
    real, n = train_mod.gan_step, [0]

    def step(state, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        out = real(state, *args, **kwargs)
        n[0] += 1
        if n[0] == 2 * STEPS:
            next(state.model.generator.parameters()).data.fill_(float("inf"))
        return out

    monkeypatch.setattr(train_mod, "gan_step", step)
    out = tmp_path / "run"
    assert main([*ARGS, "--epochs", "3", "--out", str(out)]) == 1
    line = one_error_line(capsys)
    assert f"epoch 2, step {STEPS}: weights is NaN/Inf" in line and "(epoch 1)" in line
    assert_checkpoint_is(out / runs.CHECKPOINT, one_epoch, "1")
    assert not runs.is_finished(out)


def test_real_divergence_from_a_huge_learning_rate(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main([*ARGS, "--epochs", "2", "--lr", "1e30", "--out", str(out)]) == 1
    line = one_error_line(capsys)
    assert "training diverged at epoch 1" in line and "NaN/Inf" in line
    assert f"no epoch had completed, so {out} holds no checkpoint" in line
    assert not (out / runs.CHECKPOINT).exists() and not runs.is_finished(out)


@pytest.mark.parametrize("bad_call", [3, STEPS + 4], ids=["epoch-1", "epoch-2"])
def test_reinit_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_call: int) -> None:
    """Recovery restores the state at the start of the epoch (in memory, so epoch 1 works too)
    with a fresh discriminator, and the run finishes with finite weights and scores."""
    poison_loss(monkeypatch, {bad_call})
    out = tmp_path / "run"
    assert main([*ARGS, "--epochs", "2", "--on-divergence", "reinit", "--out", str(out)]) == 0
    metrics = runs.read_json(out / runs.METRICS)
    assert metrics["recoveries"] == 1
    assert all(torch.isfinite(t).all() for t in runs.load_tensors(out / runs.CHECKPOINT).values())
    assert all(torch.isfinite(torch.from_numpy(a)).all() for a in runs.read_npz(out / runs.SCORES).values())


def test_reinit_gives_up_after_repeated_divergence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    poison_loss(monkeypatch, set(range(STEPS + 2, 10 * STEPS)))
    out = tmp_path / "run"
    assert main([*ARGS, "--epochs", "2", "--on-divergence", "reinit", "--out", str(out)]) == 1
    line = one_error_line(capsys)
    assert f"after {train_mod.MAX_RECOVERIES} recoveries" in line and "(epoch 1)" in line
    assert not runs.is_finished(out)


def test_collapsed_discriminator_is_reinitialised() -> None:
    """D's loss under the threshold counts as a collapse: D is re-initialised and counted."""
    def run(threshold: float) -> tuple[int, torch.Tensor]:
        cfg = RunConfig(model=ModelConfig(image_size=16, channels=1, nz=8, width=4),
                        data=DataConfig(dataset="digits", max_train=16),
                        train=TrainConfig(epochs=1, batch_size=4, device="cpu",
                                          d_reinit_threshold=threshold))
        split = one_class_split(cfg.data, 16, 1)
        model, info = fit(cfg, split, progress=False)
        return info["d_reinits"], next(model.discriminator.parameters()).detach().clone()

    never, d_never = run(0.0)
    always, d_always = run(10.0)  # BCE of D is always below 10: every step is a "collapse"
    assert never == 0 and always == 4
    assert not torch.equal(d_never, d_always)
