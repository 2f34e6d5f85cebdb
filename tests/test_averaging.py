"""``average_last``: the model a run keeps is the mean of its weights at the ends of its last N
epochs. It only observes training (the live weights are those of a run without it), the mean is
exact over the right epochs, survives an interruption bit for bit, and reaches every path that
trains: ``fit``, stacked ``fit_many``, ``distill`` across its two steps, stacked ``distill_many``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.config import DistillConfig, RunConfig, TrainConfig
from pkdgan.core.errors import UsageError
from pkdgan.models.edegan import EDEGANModel
from pkdgan.training.averaging import TailAverage, tail_average
from pkdgan.training.distill import distill
from pkdgan.training.multi import fit_many
from pkdgan.training.train import fit
from tests.test_multi import config, float64, split  # noqa: F401 - float64 is a fixture
from tests.test_multi_distill import STUDENT, check_members, clone, teacher

State = dict[str, torch.Tensor]


def config3(seed: int, average_last: int = 0) -> RunConfig:
    """``test_multi``'s tiny batch-1 run, three epochs long."""
    base = config(seed)
    return dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=3,
                                                               average_last=average_last))


def snapshot(module: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def mean_of(states: list[State]) -> State:
    return {k: (torch.stack([s[k] for s in states]).mean(0) if states[0][k].is_floating_point()
                else states[-1][k]) for k in states[0]}


def close(a: State, b: State, **tol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k, **tol)


def test_running_mean_window_buffers_and_round_trip() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    avg = TailAverage({"net": net}, last=2, stop=4)
    seen = []
    for epoch in range(1, 5):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(epoch))
            net[1].running_mean.fill_(10.0 * epoch)
            net[1].num_batches_tracked.fill_(epoch)
        assert avg.wants(epoch) == (epoch >= 3)
        avg.update(epoch)
        if avg.wants(epoch):
            seen.append(snapshot(net))
        if epoch == 3:  # a checkpoint mid-window restores to the same running mean
            again = TailAverage({"net": net}, last=2, stop=4)
            again.load(avg.tensors(), avg.meta())
            close(again.mean["net"], avg.mean["net"], rtol=0, atol=0)
    assert avg.count == 2
    assert float(avg.mean["net"]["0.weight"][0, 0]) == 3.5
    assert float(avg.mean["net"]["1.running_mean"][0]) == 35.0
    assert int(avg.mean["net"]["1.num_batches_tracked"]) == 4  # an integer takes the latest
    assert set(avg.scoring()) == {f"net.{k}" for k in net.state_dict()}
    avg.apply()
    close(snapshot(net), mean_of(seen), rtol=0, atol=1e-12)
    assert tail_average({"net": net}, 0, 4) is None
    with pytest.raises(ValueError):
        TailAverage({"net": net}, last=5, stop=4)
    broken = TailAverage({"net": net}, last=2, stop=4)
    with pytest.raises(KeyError):
        broken.load({}, {"average_count": "1"})


def test_config_validation_and_legacy_hash() -> None:
    plain = RunConfig()
    assert dataclasses.replace(plain, train=TrainConfig(average_last=0)).hash() == plain.hash()
    assert dataclasses.replace(plain, train=TrainConfig(average_last=3)).hash() != plain.hash()
    assert "average_last" not in DistillConfig().to_dict()
    assert DistillConfig(average_last=4).train_config().average_last == 4
    with pytest.raises(UsageError, match="average last"):
        TrainConfig(epochs=3, average_last=4)
    with pytest.raises(UsageError, match="average last"):
        DistillConfig(step1_epochs=2, step2_epochs=1, average_last=4)


def test_cli_refuses_a_window_longer_than_training(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    code = main(["train", "--dataset", "digits", "--epochs", "2", "--average-last", "3",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "average last" in err[0]
    assert not (tmp_path / "run" / runs.CHECKPOINT).exists()


def live_states(epochs_wanted: range) -> tuple[list[State], object]:
    """A probe recording the generator's live weights at the given epoch ends."""
    states: list[State] = []

    def probe(epoch: int, model: EDEGANModel) -> None:
        if epoch in epochs_wanted:
            states.append(snapshot(model.generator))

    return states, probe


def test_fit_keeps_the_mean_and_trains_the_same(tmp_path: Path) -> None:
    sp = split(6, 0)
    plain, _ = fit(config3(0), sp, progress=False)
    states, probe = live_states(range(2, 4))
    cfg = config3(0, average_last=2)
    run = tmp_path / "run"
    model, _ = fit(cfg, sp, run, progress=False, on_epoch=probe)
    assert len(states) == 2
    # the trajectory is untouched: the live last epoch is the plain run's model, bit for bit
    close(states[-1], snapshot(plain.generator), rtol=0, atol=0)
    close(snapshot(model.generator), mean_of(states), rtol=1e-6, atol=1e-7)
    # scoring reads the mean; a resume reads the live weights
    scoring = runs.unflatten_state("generator", runs.load_tensors(run / runs.CHECKPOINT))
    close(scoring, snapshot(model.generator), rtol=0, atol=0)
    live = runs.unflatten_state("generator", runs.load_tensors(run / runs.TRAIN_STATE))
    close(live, states[-1], rtol=0, atol=0)


def test_interrupted_run_resumes_to_the_same_mean(tmp_path: Path) -> None:
    sp = split(6, 1)
    cfg = config3(1, average_last=2)
    whole, _ = fit(cfg, sp, tmp_path / "whole", progress=False)

    def stop_after_two(epoch: int, model: EDEGANModel) -> None:
        if epoch == 2:  # epoch 2 (the first averaged) is checkpointed before the probe runs
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, sp, tmp_path / "cut", progress=False, on_epoch=stop_after_two)
    resumed, _ = fit(cfg, sp, tmp_path / "cut", resume=True, progress=False)
    close(snapshot(resumed.generator), snapshot(whole.generator), rtol=0, atol=0)
    a = runs.load_tensors(tmp_path / "whole" / runs.CHECKPOINT)
    b = runs.load_tensors(tmp_path / "cut" / runs.CHECKPOINT)
    close(a, b, rtol=0, atol=0)


def test_stacked_fit_many_averages_each_member(float64: None) -> None:  # noqa: F811
    cfgs = [config3(s, average_last=2) for s in (0, 1)]
    splits = [split(5, 0, torch.float64), split(4, 1, torch.float64)]
    results = fit_many(cfgs, splits, progress=False)
    for cfg, sp, res in zip(cfgs, splits, results, strict=True):
        assert res.error is None
        model, _ = fit(cfg, sp, progress=False)
        close(snapshot(res.model.generator), snapshot(model.generator), rtol=1e-9, atol=1e-11)


def test_distill_averages_the_student_across_both_steps() -> None:
    t = teacher(0)
    sp = split(6, 0)
    dcfg = DistillConfig(mode="progressive", step1_epochs=2, step2_epochs=1, batch_size=2, seed=0,
                         device="cpu", average_last=2)
    states: list[State] = []

    def probe(epoch: int, student: nn.Module, _teacher: nn.Module | None) -> None:
        if epoch >= 2:
            states.append(snapshot(student))

    student, _, _ = distill(clone(t), STUDENT, sp, dcfg, progress=False, on_epoch=probe)
    plain, _, _ = distill(clone(t), STUDENT, sp, dataclasses.replace(dcfg, average_last=0),
                          progress=False)
    close(states[-1], snapshot(plain.generator), rtol=0, atol=0)
    close(snapshot(student.generator), mean_of(states), rtol=1e-6, atol=1e-7)


def test_stacked_distill_averages_like_distill(float64: None) -> None:  # noqa: F811
    """The window opens in the stacked frozen step and closes in the joint step after it: the
    average is applied once, at the end of the whole schedule, not when the stack hands over."""
    dcfg = DistillConfig(mode="progressive", step1_epochs=2, step2_epochs=1, batch_size=1,
                         device="cpu", average_last=3)
    check_members([dcfg, dataclasses.replace(dcfg, seed=1)], (4, 3))


def test_cpu_preset_keeps_the_mean_of_the_last_five_epochs() -> None:
    """The distillation search's averaging rules held for students and then for teachers
    (docs/results/distill-search); the two windows are separate preset fields."""
    from pkdgan.api import EDEGAN, PKDGAN
    from pkdgan.cli import build_parser
    from pkdgan.commands.distill import distill_config
    from pkdgan.core.presets import PRESETS

    cpu = PRESETS["cpu"]
    assert (cpu.average_last, cpu.student_average) == (5, 5)
    assert all(PRESETS[n].student_average == 0 and "student_average_last" not in PRESETS[n].key_dict()
               for n in ("paper", "quick", "cpu-b256", "cpu-b64"))  # their grids keep their hash
    base = ["distill", "--teacher", "t", "--out", "o", "--preset", "cpu"]
    assert distill_config(build_parser().parse_args(base)).average_last == 5
    # a run of other length averages the same fraction of its epochs (5 of 15: the last third;
    # none where that is one epoch); an explicit window is kept as given
    def window(*extra: str) -> int:
        return distill_config(build_parser().parse_args([*base, "--mode", "alone", *extra])).average_last

    assert (window("--epochs", "3"), window("--epochs", "6"), window("--epochs", "30")) == (0, 2, 10)
    assert distill_config(build_parser().parse_args([*base, "--average-last", "0"])).average_last == 0
    assert PKDGAN().distill_config().average_last == 5
    assert PKDGAN(mode="single", epochs=2).distill_config().average_last == 0
    assert PKDGAN(mode="single", epochs=9).distill_config().average_last == 3
    assert PKDGAN(average_last=1).distill_config().average_last == 1
    assert EDEGAN().run_config(1).train.average_last == 5
    assert EDEGAN(epochs=2).run_config(1).train.average_last == 0
    assert EDEGAN(epochs=30).run_config(1).train.average_last == 10
    assert EDEGAN(average_last=0).run_config(1).train.average_last == 0


def test_reproduce_overrides_each_window_and_its_grid_follows() -> None:
    from pkdgan.cli import build_parser
    from pkdgan.commands.reproduce import request
    from pkdgan.studies.specs import build_specs

    def students(*extra: str) -> dict[str, int]:
        args = build_parser().parse_args(["reproduce", "main", "--preset", "cpu", "--classes", "0",
                                          "--out", "o", *extra])
        return {s.arm: s.config["train" if s.arm == "teacher" else "distill"].get("average_last", 0)
                for s in build_specs(request(args))}

    assert students() == {"teacher": 5, "alone": 5, "single-2": 5, "p-kdgan": 5}
    # 0 is an override too (it turns the students' averaging off), not "not given"
    assert students("--student-average-last", "0") == {"teacher": 5, "alone": 0, "single-2": 0,
                                                       "p-kdgan": 0}
    assert students("--average-last", "2") == {"teacher": 2, "alone": 5, "single-2": 5, "p-kdgan": 5}
    assert students("--epochs", "3")["teacher"] == 0  # one epoch's worth: the last epoch
    assert students("--epochs", "6", "--average-last", "6")["teacher"] == 6
    assert students("--student-epochs", "3", "--step2-epochs", "1")["p-kdgan"] == 0
    assert students("--student-epochs", "9", "--step2-epochs", "3")["p-kdgan"] == 3
