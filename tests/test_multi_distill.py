"""Stacked frozen-teacher distillation must equal ``distill`` run alone per student."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, DistillConfig, ModelConfig, RunConfig, TrainConfig
from pkdgan.core.errors import UsageError
from pkdgan.core.registry import get_config
from pkdgan.models.edegan import EDEGANModel, score_both
from pkdgan.pipeline.distill_run import distill_run, distill_runs
from pkdgan.pipeline.train_run import train_run
from pkdgan.training.distill import distill
from pkdgan.training.multi_distill import Job, distill_many, stack_reason
from tests.test_multi import float64, split  # noqa: F401 - float64 is a fixture

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

TEACHER = ModelConfig(image_size=16, channels=1, nz=16, width=8)
STUDENT = ModelConfig(image_size=16, channels=1, nz=8, width=2)


def teacher(seed: int) -> EDEGANModel:
    torch.manual_seed(100 + seed)
    return EDEGANModel(TEACHER).eval()


def clone(model: EDEGANModel) -> EDEGANModel:
    copy = EDEGANModel(model.cfg)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float,
                      atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


def check_members(dcfgs: list[DistillConfig], sizes: tuple[int, ...]) -> list[dict]:
    """Stacked vs alone for one member per dcfg; returns the alone infos."""
    teachers = [teacher(i) for i in range(len(dcfgs))]
    splits = [split(n, i, torch.float64) for i, n in enumerate(sizes)]
    jobs = [Job(clone(t), STUDENT, sp, d) for t, sp, d in zip(teachers, splits, dcfgs, strict=True)]
    results = distill_many(jobs, progress=False)
    infos = []
    for t, sp, d, res in zip(teachers, splits, dcfgs, results, strict=True):
        assert res.error is None
        student, _, info = distill(clone(t), STUDENT, sp, d, progress=False)
        infos.append(info)
        assert res.info["d_reinits"] == info["d_reinits"]
        assert res.info["trained_together"] == len(dcfgs)
        assert res.info["projection"] == info["projection"]
        assert_same_state(res.student.state_dict(), student.state_dict(), rtol=1e-9, atol=1e-11)
        for got, want in zip(score_both(res.student.generator, sp.test),
                             score_both(student.generator, sp.test), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
        assert res.info["teacher_auroc_before"] == info["teacher_auroc_before"]
    return infos


def test_structure_two_equals_distill_float64(float64: None) -> None:  # noqa: F811
    """Structure 2 with a trained projection (nz 8 -> 16, w1, w2 > 0), datasets of different
    sizes (epochs end at different steps) and D re-initialisations (high threshold)."""
    dcfgs = [DistillConfig(mode="single", structure=2, epochs=2, w1=0.5, wx=1.0, w2=0.5, seed=s,
                           batch_size=1, device="cpu", d_reinit_threshold=0.69) for s in range(3)]
    infos = check_members(dcfgs, (5, 8, 6))
    assert sum(i["d_reinits"] for i in infos) > 0, "the test should exercise D re-initialisation"


def test_structure_one_and_default_weights_equal_distill_float64(float64: None) -> None:  # noqa: F811
    """Structure 1 (generator step on K alone); then structure 2 with the default weights (Kx
    only: the projection gets zero gradients, yet its Adam steps count as in ``distill``)."""
    s1 = [DistillConfig(mode="single", structure=1, epochs=2, w1=1.0, w2=1.0, seed=s,
                        batch_size=1, device="cpu") for s in range(3)]
    check_members(s1, (4, 7, 5))
    s2 = [DistillConfig(mode="single", structure=2, epochs=2, seed=s, batch_size=1, device="cpu")
          for s in range(2)]
    check_members(s2, (6, 3))


def test_stack_reason() -> None:
    sp = split(3, 0)
    d = DistillConfig(mode="single", structure=2, epochs=1, batch_size=1, device="cpu")
    jobs = [Job(teacher(0), STUDENT, sp, d), Job(teacher(1), STUDENT, sp, d)]
    assert stack_reason(jobs) is None
    assert "batch size 1" in str(stack_reason([dataclasses.replace(j, dcfg=dataclasses.replace(
        d, batch_size=2)) for j in jobs]))
    assert "trains the teacher" in str(stack_reason([dataclasses.replace(j, dcfg=dataclasses.replace(
        d, structure=3)) for j in jobs]))
    other = dataclasses.replace(jobs[1], student_cfg=dataclasses.replace(STUDENT, width=3))
    assert "model configs differ" in str(stack_reason([jobs[0], other]))
    with pytest.raises(UsageError, match="together"):
        distill_many([jobs[0], other], progress=False)


# --- run folders: progressive = stacked step 1 + distill's step 2 ------------------------------


@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of class_K teacher runs, as ``pkdgan train --normal-class 1-2`` writes."""
    root = tmp_path_factory.mktemp("teachers")
    for k, n in ((1, 9), (2, 6)):
        cfg = RunConfig(model=dataclasses.replace(get_config("student-mnist"), image_size=16, width=4, nz=16),
                        data=DataConfig(dataset="digits", normal_class=k, max_train=n, max_test=30),
                        train=TrainConfig(epochs=1, batch_size=4, seed=0, device="cpu"))
        train_run(cfg, root / f"class_{k}", progress=False)
    return root


DCFG = DistillConfig(mode="progressive", step1_epochs=2, step2_epochs=1, batch_size=1, seed=0,
                     device="cpu")


def test_progressive_run_folders_equal_distill_run(teacher_runs: Path, tmp_path: Path) -> None:
    """Stacked step 1 hands over to ``distill``'s step 2: the folders equal ``distill_run``'s."""
    teachers = sorted(teacher_runs.glob("class_*"))
    outs = [tmp_path / "stacked" / t.name for t in teachers]
    metrics = distill_runs(teachers, ["student-mnist"] * 2, DCFG, outs, progress=False)
    for t, out, m in zip(teachers, outs, metrics, strict=True):
        want = distill_run(t, "student-mnist", DCFG, tmp_path / "alone" / t.name, progress=False)
        alone = tmp_path / "alone" / t.name
        assert m["trained_together"] == 2 and "trained_together" not in want
        assert runs.is_finished(out) and not (out / runs.TRAIN_STATE).exists()
        assert runs.read_json(out / runs.CONFIG) == runs.read_json(alone / runs.CONFIG)
        a, b = runs.load_tensors(out / runs.CHECKPOINT), runs.load_tensors(alone / runs.CHECKPOINT)
        assert_same_state(a, b, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(runs.read_npz(out / runs.SCORES)["scores"],
                                   runs.read_npz(alone / runs.SCORES)["scores"], rtol=1e-3, atol=1e-6)
        assert abs(m["auroc"] - want["auroc"]) < 0.02
        for k in ("n_train", "n_holdout", "d_reinits", "teacher_changed", "schedule", "projection",
                  "student_flops", "teacher_auroc_before", "config_hash"):
            assert m[k] == want[k], k
        rows, rows_alone = runs.read_history(out / runs.HISTORY), runs.read_history(alone / runs.HISTORY)
        assert [r.keys() for r in rows] == [r.keys() for r in rows_alone]
        assert [(r["epoch"], r["step"], r["structure"]) for r in rows] == [
            ("1", "1", "2"), ("2", "1", "2"), ("3", "2", "3")]
        for r, r_alone in zip(rows, rows_alone, strict=True):
            for k in ("kx", "k1", "s_g_total", "t_g_total", "s_d"):
                assert (r[k] == "") == (r_alone[k] == "")
                if r[k]:
                    assert float(r[k]) == pytest.approx(float(r_alone[k]), rel=1e-3, abs=1e-6), k


def test_cli_stacks_class_runs_and_resumes(teacher_runs: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Several teacher runs at batch 1 stack by default; ``--no-stack`` gives the same numbers;
    ``--resume`` reads finished runs back."""
    from pkdgan.cli import main

    common = ["distill", "--teacher", str(teacher_runs), "--device", "cpu", "--no-progress",
              "--step1-epochs", "2", "--step2-epochs", "1", "--batch-size", "1"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["normal_class"] for x in lines] == [1, 2]
    assert all(runs.read_json(tmp_path / "a" / f"class_{k}" / runs.METRICS)["trained_together"] == 2
               for k in (1, 2))
    assert main([*common, "--no-stack", "--out", str(tmp_path / "b")]) == 0
    seq = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    for x, y in zip(lines, seq, strict=True):
        assert abs(x["auroc"] - y["auroc"]) < 0.02
    assert "trained_together" not in runs.read_json(tmp_path / "b" / "class_1" / runs.METRICS)
    assert main([*common, "--resume", "--out", str(tmp_path / "a")]) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == lines


def test_interrupted_stacked_run_resumes(teacher_runs: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed during stacked epoch 2: ``resume`` goes on from each student's epoch-1 checkpoint
    (``distill``'s format) and ends where an uninterrupted run ends."""
    import pkdgan.training.multi_distill as mod

    teachers = sorted(teacher_runs.glob("class_*"))
    full = [tmp_path / "full" / t.name for t in teachers]
    cut = [tmp_path / "cut" / t.name for t in teachers]
    want = distill_runs(teachers, ["student-mnist"] * 2, DCFG, full, progress=False)
    real, calls = mod._end_epoch, {"n": 0}

    def interrupt(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] > 2:  # a student ends its second epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, "_end_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        distill_runs(teachers, ["student-mnist"] * 2, DCFG, cut, progress=False)
    monkeypatch.setattr(mod, "_end_epoch", real)
    assert all(len(runs.read_history(d / runs.HISTORY)) == 1 for d in cut)
    with pytest.raises(UsageError, match="--resume"):
        distill_runs(teachers, ["student-mnist"] * 2, DCFG, cut, progress=False)
    got = distill_runs(teachers, ["student-mnist"] * 2, DCFG, cut, progress=False, resume=True)
    for a_dir, b_dir, a, b in zip(full, cut, want, got, strict=True):
        assert a["auroc"] == pytest.approx(b["auroc"], abs=1e-6)
        assert_same_state(runs.load_tensors(a_dir / runs.CHECKPOINT),
                          runs.load_tensors(b_dir / runs.CHECKPOINT), rtol=1e-6, atol=1e-7)
        assert len(runs.read_history(b_dir / runs.HISTORY)) == 3


def test_alone_baselines_stack_like_one_by_one(teacher_runs: Path, tmp_path: Path) -> None:
    """The ``alone`` arm of several classes trains as one ``fit_many`` stack; its run folders
    hold the same scores and metrics as the one-by-one runs."""
    teachers = sorted(teacher_runs.glob("class_*"))
    dcfg = DistillConfig(mode="alone", epochs=2, batch_size=1, seed=0, device="cpu")
    stacked = distill_runs(teachers, ["student-mnist"] * 2, dcfg,
                           [tmp_path / "s" / t.name for t in teachers], progress=False)
    alone = distill_runs(teachers, ["student-mnist"] * 2, dcfg,
                         [tmp_path / "a" / t.name for t in teachers], progress=False, stack=False)
    for t, m_s, m_a in zip(teachers, stacked, alone, strict=True):
        assert m_s["trained_together"] == 2 and "trained_together" not in m_a
        assert m_s["teacher_auroc_before"] == m_a["teacher_auroc_before"]
        assert abs(m_s["auroc"] - m_a["auroc"]) < 1e-4
        a = runs.read_npz(tmp_path / "s" / t.name / runs.SCORES)["scores"]
        b = runs.read_npz(tmp_path / "a" / t.name / runs.SCORES)["scores"]
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
        assert runs.read_json(tmp_path / "s" / t.name / runs.CONFIG) == \
            runs.read_json(tmp_path / "a" / t.name / runs.CONFIG)
