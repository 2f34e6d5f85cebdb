"""P-KDGAN distillation: loss terms, the four structures, progressive steps, run folders."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.config import DataConfig, DistillConfig, LossWeights, ModelConfig, RunConfig, TrainConfig
from pkdgan.core.errors import UsageError
from pkdgan.core.registry import get_config
from pkdgan.models.edegan import EDEGANModel
from pkdgan.models.flops import model_cost
from pkdgan.models.losses import (
    distillation_image_loss,
    distillation_loss,
    distillation_z_loss,
    distillation_zhat_loss,
)
from pkdgan.pipeline.distill_run import distill_run
from pkdgan.pipeline.evaluate_run import evaluate_run
from pkdgan.pipeline.train_run import train_run
from pkdgan.training.checkpoints import load_run_generator
from pkdgan.training.distill import STRUCTURES, Pair, distill, distill_step, make_projection, teacher_outputs
from pkdgan.training.train import GanState, fit
from tests.test_integration import bars_split

TEACHER = ModelConfig(image_size=16, channels=1, nz=16, width=8)
STUDENT = ModelConfig(image_size=16, channels=1, nz=8, width=2)
FAST = {"batch_size": 8, "seed": 0, "device": "cpu"}


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- loss terms ------------------------------------------------------------------------------


def test_distillation_terms_hand_computed() -> None:
    zs, zt = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    xs, xt = torch.tensor([[0.5, -0.5, 1.0, 0.0]]), torch.zeros(1, 4)
    hs, ht = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    assert distillation_z_loss(zs, zt).item() == pytest.approx((1 + 4) / 2)
    assert distillation_image_loss(xs, xt).item() == pytest.approx(2.0 / 4)
    assert distillation_zhat_loss(hs, ht).item() == pytest.approx(9 / 2)
    k = distillation_loss((zs, xs, hs), (zt, xt, ht), w1=2.0, wx=10.0, w2=0.5)
    assert k["k1"].item() == pytest.approx(2.5) and k["kx"].item() == pytest.approx(0.5)
    assert k["k2"].item() == pytest.approx(4.5)
    assert k["total"].item() == pytest.approx(2 * 2.5 + 10 * 0.5 + 0.5 * 4.5)


def test_relative_k1_k2_are_scale_free_and_legacy_hashes_hold() -> None:
    zs, zt = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    xs, xt = torch.zeros(1, 4), torch.ones(1, 4)
    k = distillation_loss((zs, xs, zs), (zt, xt, zt), w1=1.0, wx=1.0, w2=1.0, scale="relative")
    assert k["k1"].item() == pytest.approx(2.5 / 8) and k["kx"].item() == pytest.approx(1.0)
    scaled = distillation_loss((10 * zs, xs, 10 * zs), (10 * zt, xt, 10 * zt), 1.0, 1.0, 1.0, "relative")
    assert scaled["k1"].item() == pytest.approx(k["k1"].item())  # the code's scale is gone
    legacy = DistillConfig()
    assert "k_scale" not in legacy.to_dict() and "teacher_k_grad" not in legacy.to_dict()
    assert DistillConfig(k_scale="relative", teacher_k_grad=False).to_dict()["teacher_k_grad"] is False
    with pytest.raises(UsageError, match="k scale"):
        DistillConfig(k_scale="log")  # type: ignore[arg-type]


def test_joint_step_without_k_into_the_teacher_moves_it_by_its_gan_loss_alone() -> None:
    """--no-teacher-k-grad: the teacher's update is what its own GAN loss alone would give."""
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    a, b = make_pair(), make_pair()
    b.teacher.model.load_state_dict(a.teacher.model.state_dict())
    b.student.model.load_state_dict(a.student.model.state_dict())
    b.projection.load_state_dict(a.projection.state_dict())
    for p in (a, b):
        p.set_structure(STRUCTURES[3])
    torch.manual_seed(0)
    distill_step(a, x, STRUCTURES[3], DistillConfig(w1=1.0, wx=50.0, w2=1.0, teacher_k_grad=False), None)
    # reference: the teacher's own GAN step, no K at all
    from pkdgan.core.config import LossWeights
    from pkdgan.training.train import generator_terms

    torch.manual_seed(0)
    terms, _, _ = generator_terms(b.teacher.model, x, LossWeights())
    b.teacher.opt_g.zero_grad(set_to_none=True)
    terms["total"].backward()
    b.teacher.opt_g.step()
    for (name, p1), p2 in zip(a.teacher.model.generator.named_parameters(),
                              b.teacher.model.generator.parameters(), strict=True):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-7, msg=name)


def test_projection_only_when_latent_sizes_differ() -> None:
    assert isinstance(make_projection(16, 16), torch.nn.Identity)
    p = make_projection(8, 16)
    assert isinstance(p, torch.nn.Linear) and tuple(p.weight.shape) == (16, 8)


def test_distill_config_validation_and_schedule() -> None:
    assert DistillConfig().schedule() == ((2, 10), (3, 5))
    assert DistillConfig(mode="single", structure=4, epochs=3, w1=1, w2=1).schedule() == ((4, 3),)
    assert DistillConfig(mode="alone", epochs=7).total_epochs() == 7
    with pytest.raises(UsageError, match="step 1 learns from a frozen teacher"):
        DistillConfig(step1_structure=3)
    with pytest.raises(UsageError, match="step 2 trains teacher and student jointly"):
        DistillConfig(step2_structure=2)
    with pytest.raises(UsageError, match="nothing to distil"):
        DistillConfig(w1=0, wx=0, w2=0)
    with pytest.raises(UsageError, match="w1 and w2 must be > 0"):
        DistillConfig(mode="single", structure=1)  # K = Kx only would leave E2 untrained
    assert DistillConfig(mode="single", structure=4, w1=1, w2=1).schedule() == ((4, 15),)
    with pytest.raises(UsageError, match="batch size"):
        DistillConfig(batch_size=0)
    d = DistillConfig(mode="single", gan=LossWeights(contextual=20.0), teacher_lr=1e-4)
    assert DistillConfig.from_dict(json.loads(json.dumps(d.to_dict()))) == d


# --- single steps of each structure ----------------------------------------------------------


def make_pair() -> Pair:
    torch.manual_seed(0)
    t = TrainConfig()
    dev = torch.device("cpu")
    student, teacher = GanState.create(STUDENT, t, dev), GanState.create(TEACHER, t, dev)
    projection = make_projection(STUDENT.nz, TEACHER.nz)
    student.opt_g = torch.optim.Adam([*student.model.generator.parameters(),
                                      *projection.parameters()], lr=t.lr)
    return Pair(student, teacher, projection)


@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_each_structure_trains_exactly_the_models_it_names(number: int) -> None:
    pair, structure = make_pair(), STRUCTURES[number]
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    pair.set_structure(structure)
    target = None if structure.teacher_trained else tuple(
        a[:4] for a in teacher_outputs(pair.teacher.model.generator, x))
    before = {name: state_of(m) for name, m in (
        ("tg", pair.teacher.model.generator), ("td", pair.teacher.model.discriminator),
        ("sg", pair.student.model.generator), ("sd", pair.student.model.discriminator),
        ("proj", pair.projection))}
    dcfg = DistillConfig(w1=1.0, wx=1.0, w2=1.0)
    losses = distill_step(pair, x, structure, dcfg, target)  # type: ignore[arg-type]
    after = {"tg": pair.teacher.model.generator, "td": pair.teacher.model.discriminator,
             "sg": pair.student.model.generator, "sd": pair.student.model.discriminator,
             "proj": pair.projection}
    moved = {k for k, m in after.items() if not same(before[k], state_of(m))}
    expected = {"sg", "proj"} | ({"sd"} if structure.student_gan else set()) | (
        {"tg", "td"} if structure.teacher_trained else set())
    assert moved == expected
    assert {"k1", "kx", "k2", "k_total"} <= set(losses)
    assert ("s_g_total" in losses) == structure.student_gan
    assert ("t_g_total" in losses) == structure.teacher_trained


# --- whole distillations ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bars_teacher() -> tuple[EDEGANModel, object]:
    split = bars_split()
    cfg = RunConfig(model=TEACHER, data=DataConfig(dataset="folder"),
                    train=TrainConfig(epochs=2, batch_size=1, seed=0, device="cpu"))
    model, _ = fit(cfg, split, progress=False)
    return model, split


@pytest.mark.slow
def test_frozen_step_keeps_teacher_bit_identical(bars_teacher) -> None:  # noqa: ANN001
    teacher, split = clone(bars_teacher[0]), bars_teacher[1]
    before = state_of(teacher)
    dcfg = DistillConfig(mode="single", structure=2, epochs=1, **FAST)
    _, after, info = distill(teacher, STUDENT, split, dcfg, progress=False)
    assert same(before, state_of(after)) and not info["teacher_changed"]
    assert info["teacher_auroc_after"] == info["teacher_auroc_before"]


def clone(model: EDEGANModel) -> EDEGANModel:
    copy = EDEGANModel(model.cfg)
    copy.load_state_dict(model.state_dict())
    return copy


@pytest.mark.slow
def test_progressive_beats_chance_and_moves_both_in_step_two(bars_teacher) -> None:  # noqa: ANN001
    teacher0, split = bars_teacher
    teacher = clone(teacher0)
    dcfg = DistillConfig(mode="progressive", step1_epochs=2, step2_epochs=1, seed=0,
                         batch_size=2, device="cpu")
    student, after, info = distill(teacher, STUDENT, split, dcfg, progress=False)
    assert info["teacher_changed"] and not same(state_of(teacher0), state_of(after))
    assert info["teacher_auroc_before"] > 0.5
    from pkdgan.training.distill import auroc

    # the recorded "after" is the fine-tuned teacher's own AUROC, not a copy of "before"
    assert info["teacher_auroc_after"] == pytest.approx(auroc(after.generator, split, "latent"), abs=1e-6)
    assert info["schedule"] == [[2, 2], [3, 1]] and info["projection"] == "student side: linear 8 -> 16"
    assert auroc(student.generator, split, "latent") > 0.75, auroc(student.generator, split, "latent")
    # the student's code read three ways (descriptions): its own view is the run's latent AUROC
    views = info["latent_view_aurocs"]
    assert set(views) == {"own", "projected", "agreement"}
    assert views["own"] == pytest.approx(auroc(student.generator, split, "latent"), abs=1e-6)


def test_latent_views_read_the_code_through_the_projection() -> None:
    from pkdgan.evaluation.latent_views import latent_view_scores

    class Fixed(torch.nn.Module):  # a "generator" with a known code and reconstruction
        def __init__(self, nz: int, shift: float) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.nz, self.shift = nz, shift

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            z = x.flatten(1)[:, :self.nz]
            return z, x, z + self.shift

    proj = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    x = torch.tensor([[[[1.0, 2.0, 4.0]]], [[[3.0, -1.0, 0.0]]]])
    s = latent_view_scores(Fixed(2, 0.5), Fixed(3, 0.0), proj, x, batch_size=1)
    np.testing.assert_allclose(s["own"], [0.25, 0.25])  # mean of (0.5, 0.5)^2
    np.testing.assert_allclose(s["projected"], [(0.25 + 1.0) / 3] * 2)  # (0.5, 1.0, 0)^2 / 3
    # agreement: the student's projected code (1, 4, 0), (3, -2, 0) against the teacher's own
    np.testing.assert_allclose(s["agreement"], [(0 + 4 + 16) / 3, (0 + 1 + 0) / 3], rtol=1e-6)


def test_student_inits_like_alone_baseline() -> None:
    """Same seed -> the distilled student and the alone baseline start from the same weights."""
    torch.manual_seed(3)
    a = EDEGANModel(STUDENT)
    torch.manual_seed(3)
    b = GanState.create(STUDENT, TrainConfig(), torch.device("cpu")).model
    assert same(state_of(a), state_of(b))


# --- run folders and CLI (digits: no files needed) -------------------------------------------


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = RunConfig(model=dataclasses.replace(get_config("student-mnist"), width=4, nz=16),
                    data=DataConfig(dataset="digits", normal_class=1, max_train=24, max_test=80),
                    train=TrainConfig(epochs=1, batch_size=4, seed=0, device="cpu"))
    train_run(cfg, out, progress=False)
    return out


@pytest.mark.slow
def test_distill_run_writes_a_normal_run_folder(teacher_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    dcfg = DistillConfig(mode="progressive", step1_epochs=1, step2_epochs=1, **FAST)
    m = distill_run(teacher_run, "student-mnist", dcfg, out, progress=False)
    cfg = runs.read_json(out / runs.CONFIG)
    assert cfg["kind"] == "distill" and cfg["model"] == dataclasses.asdict(get_config("student-mnist"))
    assert cfg["data"]["normal_class"] == 1 and cfg["distill"]["mode"] == "progressive"
    assert cfg["teacher_run"] == str(teacher_run.resolve())
    keys = runs.load_tensors(out / runs.CHECKPOINT).keys()
    assert {k.split(".")[0] for k in keys} == {"generator", "discriminator", "projection",
                                               "teacher_generator"}
    assert not (out / runs.TRAIN_STATE).exists()
    # the student's size is the registry's
    cost = model_cost(get_config("student-mnist"))
    assert (m["student_params"], m["student_flops"]) == (cost.params, cost.flops)
    assert {"teacher_auroc_before", "teacher_auroc_after", "auroc"} <= set(m)
    # ``test`` and the loaders work on it unchanged
    assert evaluate_run(out)["auroc"] == pytest.approx(m["auroc"], abs=1e-9)
    _, g = load_run_generator(out)
    assert sum(p.numel() for p in g.parameters()) == cost.params
    assert len(runs.read_history(out / runs.HISTORY)) == 2
    assert set(np.load(out / runs.SCORES).files) >= {"scores", "labels", "latent"}


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(teacher_run: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    dcfg = DistillConfig(mode="progressive", step1_epochs=1, step2_epochs=1, **FAST)
    full = distill_run(teacher_run, "student-mnist", dcfg, tmp_path / "full", progress=False)
    import pkdgan.training.distill as mod

    real, calls = mod.distill_step, {"n": 0}
    steps_per_epoch = math.ceil(full["n_train"] / FAST["batch_size"])

    def interrupt(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] > steps_per_epoch:  # during epoch 2 (step 2)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, "distill_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        distill_run(teacher_run, "student-mnist", dcfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(mod, "distill_step", real)
    with pytest.raises(UsageError, match="--resume"):
        distill_run(teacher_run, "student-mnist", dcfg, tmp_path / "cut", progress=False)
    resumed = distill_run(teacher_run, "student-mnist", dcfg, tmp_path / "cut", progress=False,
                          resume=True)
    assert resumed["auroc"] == full["auroc"]
    a = runs.load_tensors(tmp_path / "full" / runs.CHECKPOINT)
    b = runs.load_tensors(tmp_path / "cut" / runs.CHECKPOINT)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_cli_alone_and_single(teacher_run: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--teacher", str(teacher_run), "--batch-size", "8", "--device", "cpu", "--no-progress"]
    assert main(["distill", *common, "--mode", "alone", "--epochs", "1", "--out",
                 str(tmp_path / "alone")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = runs.read_json(tmp_path / "alone" / runs.CONFIG)
    assert cfg["kind"] == "distill" and cfg["distill"]["mode"] == "alone"
    assert cfg["student_name"] == "student-mnist"  # the default student for digits
    assert line["teacher_auroc_after"] == line["teacher_auroc_before"]
    assert main(["test", str(tmp_path / "alone")]) == 0
    assert main(["distill", *common, "--mode", "single", "--structure", "1", "--epochs", "1",
                 "--student", "student-fmnist", "--out", str(tmp_path / "s1")]) == 2
    assert "w1 and w2 must be > 0" in capsys.readouterr().err
    assert main(["distill", *common, "--mode", "single", "--structure", "1", "--epochs", "1",
                 "--w1", "1", "--w2", "1", "--student", "student-fmnist",
                 "--out", str(tmp_path / "s1")]) == 0
    keys = runs.load_tensors(tmp_path / "s1" / runs.CHECKPOINT).keys()
    assert not any(k.startswith("teacher_") for k in keys)


@pytest.mark.slow
def test_distillation_on_too_few_steps_says_so(teacher_run: Path, tmp_path: Path) -> None:
    """The preset's student batch 64 on a 23-image folder is one step an epoch: one warning."""
    common = ["--teacher", str(teacher_run), "--device", "cpu", "--no-progress", "--mode",
              "progressive", "--step1-epochs", "1", "--step2-epochs", "1"]
    with pytest.warns(UserWarning, match=r"training images at batch 64 make 1 optimiser "
                                         r"step\(s\) per epoch, 2 in all") as caught:
        assert main(["distill", *common, "--out", str(tmp_path / "a")]) == 0
    assert sum("optimiser step" in str(w.message) for w in caught) == 1


@pytest.mark.slow
def test_cli_errors(teacher_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", "--teacher", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(teacher_run), "--student", "teacher2",
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown model config" in capsys.readouterr().err
