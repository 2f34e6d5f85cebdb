"""Vectorised multi-model training must equal training each model alone (``train.fit``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, LossWeights, ModelConfig, RunConfig, TrainConfig
from pkdgan.core.errors import DivergenceError, UsageError
from pkdgan.data.datasets import OneClassSplit
from pkdgan.data.images import to_tensor
from pkdgan.models.edegan import score_both
from pkdgan.models.stacked import stacked_conv2d, stacked_conv_transpose2d
from pkdgan.pipeline.train_run import train_run, train_runs
from pkdgan.training.multi import fit_many
from pkdgan.training.train import fit
from tests.conftest import bars


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def split(n_train: int, seed: int, dtype: torch.dtype = torch.float32) -> OneClassSplit:
    x = to_tensor(bars(n_train + 12, 16, vertical=bool(seed % 2), seed=seed), 16).to(dtype)
    labels = np.r_[np.zeros(6), np.ones(6)].astype(np.int64)
    test = torch.cat([x[n_train:n_train + 6], x[n_train:n_train + 6].transpose(2, 3)])
    return OneClassSplit(x[:n_train], x[n_train + 6:n_train + 9], test, labels, labels.copy())


def config(seed: int, norm: str = "batch", **train: object) -> RunConfig:
    return RunConfig(
        model=ModelConfig(image_size=16, channels=1, nz=8, width=4, latent_constraint="l2",
                          norm=norm),  # type: ignore[arg-type]
        loss=LossWeights(),
        data=DataConfig(dataset="folder", normal_class=seed),
        train=TrainConfig(epochs=2, batch_size=1, seed=seed, device="cpu", **train),  # type: ignore[arg-type]
    )


def assert_same_model(a: torch.nn.Module, b: torch.nn.Module, rtol: float, atol: float) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=rtol, atol=atol, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_three_models_equal_fit_float64(float64: None, norm: str) -> None:
    """Same seeds -> same weights, buffers, D re-inits and scores as three separate fits.

    Datasets of different sizes exercise models whose epochs end at different steps; the high
    re-init threshold makes D re-initialise, which must draw from each model's own RNG stream.
    """
    sizes = (5, 8, 6)
    cfgs = [config(seed, norm, d_reinit_threshold=0.69) for seed in range(3)]
    splits = [split(n, seed, torch.float64) for seed, n in enumerate(sizes)]
    results = fit_many(cfgs, splits, progress=False)
    reinits = 0
    for cfg, sp, res in zip(cfgs, splits, results, strict=True):
        assert res.error is None
        alone, info = fit(cfg, sp, progress=False)
        assert res.info["d_reinits"] == info["d_reinits"]
        reinits += info["d_reinits"]
        assert res.info["n_train"] == len(sp.train)
        assert_same_model(res.model, alone, rtol=1e-9, atol=1e-11)
        for got, want in zip(score_both(res.model.generator, sp.test), score_both(alone.generator, sp.test),
                             strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert reinits > 0, "the test should exercise D re-initialisation"


@pytest.mark.slow
def test_run_folders_match_single_runs(tmp_path: Path) -> None:
    """float32, bundled digits, through run folders: files agree with ``train_run``'s."""
    cfgs = [dataclasses.replace(config(seed), data=DataConfig(dataset="digits", normal_class=seed,
                                                              max_train=n, max_test=40))
            for seed, n in ((3, 7), (4, 5))]
    dirs = [tmp_path / f"many_{i}" for i in range(2)]
    metrics = train_runs(cfgs, dirs, progress=False)
    for cfg, d, m in zip(cfgs, dirs, metrics, strict=True):
        alone = d.with_name(d.name + "_alone")
        want = train_run(cfg, alone, progress=False)
        a, b = runs.load_tensors(d / runs.CHECKPOINT), runs.load_tensors(alone / runs.CHECKPOINT)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
        assert [int(r["epoch"]) for r in runs.read_history(d / runs.HISTORY)] == [1, 2]
        assert runs.is_finished(d) and not (d / runs.TRAIN_STATE).exists()
        assert m["n_train"] == want["n_train"] and m["trained_together"] == 2
        np.testing.assert_allclose(runs.read_npz(d / runs.SCORES)["scores"],
                                   runs.read_npz(alone / runs.SCORES)["scores"], rtol=1e-3, atol=1e-6)
        assert abs(m["auroc"] - want["auroc"]) < 0.02


def test_stacked_layers_match_torch() -> None:
    """Each model's slice of a stacked conv / transposed conv is that model's torch layer."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 2, 8, 8, generator=g)
    w = torch.randn(3, 5, 4, 4, 4, generator=g)
    out = stacked_conv2d(x, w, None, 2, 1)
    wt = torch.randn(3, 4, 5, 4, 4, generator=g)
    out_t = stacked_conv_transpose2d(x, wt, None, 2, 1)
    for k in range(3):
        for j in range(2):
            xi = x[k, :, j][None]
            torch.testing.assert_close(out[k, :, j], torch.conv2d(xi, w[k], stride=2, padding=1)[0])
            want_t = torch.conv_transpose2d(xi, wt[k], stride=2, padding=1)[0]
            torch.testing.assert_close(out_t[k, :, j], want_t)


def test_incompatible_configs_are_refused() -> None:
    a = config(0)
    with pytest.raises(UsageError, match="batch size 1"):
        fit_many([dataclasses.replace(a, train=dataclasses.replace(a.train, batch_size=2))], [split(4, 0)])
    b = dataclasses.replace(a, model=dataclasses.replace(a.model, width=8))
    with pytest.raises(UsageError, match="share model"):
        fit_many([a, b], [split(4, 0), split(4, 1)])


@pytest.mark.slow
def test_cli_trains_classes_together_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--normal-class 0-2`` at batch 1: one folder per class; ``--resume`` reads finished ones back."""
    from pkdgan.cli import main

    args = ["train", "--dataset", "digits", "--image-size", "16", "--width", "4", "--nz", "8",
            "--epochs", "1", "--batch-size", "1", "--max-train", "9", "--max-test", "30",
            "--normal-class", "0-2",
            "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out.splitlines()
    assert len(first) == 3
    for k in range(3):
        metrics = runs.read_json(tmp_path / f"class_{k}" / runs.METRICS)
        assert metrics["normal_class"] == k and metrics["trained_together"] == 3
    assert main(args + ["--resume"]) == 0
    assert capsys.readouterr().out.splitlines() == first


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["reinit", "stop"])
def test_divergence_of_one_model_is_handled_as_alone(float64: None, policy: str) -> None:
    """A NaN image diverges one model: ``reinit`` recovers it exactly as ``fit`` does, ``stop``
    stops only that model; the other model is unaffected either way."""
    cfgs = [config(seed, on_divergence=policy) for seed in (0, 1)]
    splits = [split(6, seed, torch.float64) for seed in (0, 1)]
    splits[1].train[2] = float("nan")
    results = fit_many(cfgs, splits, progress=False)
    alone, _ = fit(cfgs[0], splits[0], progress=False)
    assert results[0].error is None
    assert_same_model(results[0].model, alone, rtol=1e-9, atol=1e-11)
    if policy == "stop":
        with pytest.raises(DivergenceError):
            fit(cfgs[1], splits[1], progress=False)
        assert results[1].error is not None and "NaN" in str(results[1].error)
        return
    alone, info = fit(cfgs[1], splits[1], progress=False)
    assert results[1].error is None and results[1].info["recoveries"] == info["recoveries"] == 2
    assert_same_model(results[1].model, alone, rtol=1e-9, atol=1e-11)
