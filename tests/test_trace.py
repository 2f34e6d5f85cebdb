"""``--trace-test``: the test AUROC after every epoch is written, and only written: the trained
model, its scores and metrics are the same bit for bit as without it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, DistillConfig, RunConfig, TrainConfig
from pkdgan.core.registry import get_config
from pkdgan.pipeline.distill_run import distill_runs
from pkdgan.pipeline.train_run import train_run

CFG = RunConfig(model=dataclasses.replace(get_config("student-mnist"), image_size=16, width=4, nz=16),
                data=DataConfig(dataset="digits", normal_class=1, max_train=24, max_test=40),
                train=TrainConfig(epochs=2, batch_size=4, seed=0, device="cpu"))


def same_run(a: Path, b: Path) -> None:
    ta, tb = runs.load_tensors(a / runs.CHECKPOINT), runs.load_tensors(b / runs.CHECKPOINT)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    sa, sb = runs.read_npz(a / runs.SCORES), runs.read_npz(b / runs.SCORES)
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    ma, mb = runs.read_json(a / runs.METRICS), runs.read_json(b / runs.METRICS)
    for k in ("auroc", "auroc_latent", "auroc_reconstruction", "teacher_auroc_after"):
        assert ma.get(k) == mb.get(k), k


def last_row_is_the_final_model(run: Path, epochs: int) -> list[dict[str, str]]:
    rows = runs.read_history(run / runs.TEST_TRACE)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    m = runs.read_json(run / runs.METRICS)
    assert float(rows[-1]["auroc_latent"]) == pytest.approx(m["auroc_latent"], abs=1e-6)
    assert float(rows[-1]["auroc_reconstruction"]) == pytest.approx(m["auroc_reconstruction"], abs=1e-6)
    return rows


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    train_run(CFG, out, progress=False)
    return out


def test_train_trace_describes_and_changes_nothing(teacher: Path, tmp_path: Path) -> None:
    traced = tmp_path / "traced"
    train_run(CFG, traced, progress=False, trace=True)
    same_run(teacher, traced)
    assert not (teacher / runs.TEST_TRACE).exists()
    rows = last_row_is_the_final_model(traced, 2)
    assert all(r["teacher_auroc_latent"] == "" for r in rows)


@pytest.mark.parametrize("mode", ["progressive", "alone"])
def test_distill_trace_describes_and_changes_nothing(teacher: Path, tmp_path: Path, mode: str) -> None:
    dcfg = DistillConfig(mode=mode, step1_epochs=2, step2_epochs=1, epochs=3, batch_size=4, seed=0,
                         device="cpu")
    plain, traced = tmp_path / "plain", tmp_path / "traced"
    distill_runs([teacher], ["student-mnist"], dcfg, [plain], progress=False)
    distill_runs([teacher], ["student-mnist"], dcfg, [traced], progress=False, trace=True)
    same_run(plain, traced)
    rows = last_row_is_the_final_model(traced, 3)
    # the teacher is scored in the epochs that train it (P-KDGAN's joint step) and only there
    assert [r["teacher_auroc_latent"] != "" for r in rows] == (
        [False, False, True] if mode == "progressive" else [False] * 3)
    if mode == "progressive":
        m = runs.read_json(traced / runs.METRICS)
        assert float(rows[-1]["teacher_auroc_latent"]) == pytest.approx(m["teacher_auroc_after"], abs=1e-6)


def test_cli_flag(teacher: Path, tmp_path: Path) -> None:
    from pkdgan.cli import main

    assert main(["distill", "--teacher", str(teacher), "--mode", "single", "--epochs", "1",
                 "--batch-size", "4", "--device", "cpu", "--no-progress", "--trace-test",
                 "--out", str(tmp_path / "d")]) == 0
    assert len(runs.read_history(tmp_path / "d" / runs.TEST_TRACE)) == 1
