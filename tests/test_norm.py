"""Normalisation as a model setting (issue 30): batch, batch-per-image and instance.

Per-image normalisation is what GANomaly-family code scores with at batch 1; these tests pin
down that it *is* training-mode BatchNorm of one image, that every image's score depends on that
image alone, and that the setting travels with the run (config, CLI, distillation, backends).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pkdgan.cli import main
from pkdgan.core.config import NORMS, ModelConfig, RunConfig
from pkdgan.core.errors import UsageError
from pkdgan.core.registry import for_teacher, get_config
from pkdgan.inference.scoring import TorchScorer
from pkdgan.models.edegan import score_both
from pkdgan.models.nets import (
    PerImageBatchNorm2d,
    build_generator,
    frozen_instance_norm,
    is_per_image,
    with_per_image_norm,
)
from tests.conftest import bars


def _randomised(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A generator whose norms have non-trivial affine parameters and running statistics."""
    torch.manual_seed(0)
    g = build_generator(cfg).to(dtype)
    for m in g.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0.0, 0.3)
    g.train()
    with torch.no_grad():  # moves BatchNorm's running statistics away from 0 / 1
        g(torch.randn(8, cfg.channels, cfg.image_size, cfg.image_size, dtype=dtype) * 2 + 0.5)
    return g.eval()


def test_instance_norm_equals_batch_norm_of_one_image_float64() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6).double()
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    inorm = nn.InstanceNorm2d(6, affine=True).double()
    inorm.load_state_dict({"weight": bn.weight.data, "bias": bn.bias.data})
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(bn.train()(x), inorm(x), rtol=0, atol=1e-12)


def test_whole_generator_at_batch_one_equals_instance_and_per_image_float64() -> None:
    """A BatchNorm generator in training mode on one image = the same weights with instance norm
    = the same checkpoint scored per image (``with_per_image_norm``)."""
    cfg = ModelConfig(image_size=16, channels=3, nz=8, width=4)
    bn_gen = _randomised(cfg, torch.float64)
    inst = build_generator(ModelConfig(image_size=16, channels=3, nz=8, width=4, norm="instance")).double()
    state = {k: v for k, v in bn_gen.state_dict().items()
             if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    inst.load_state_dict(state)
    per_image = with_per_image_norm(bn_gen).eval()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    for i in range(len(x)):
        with torch.no_grad():
            want = bn_gen.train()(x[i:i + 1])
            for got in (inst.eval()(x[i:i + 1]), per_image(x[i:i + 1])):
                for a, b in zip(got, want, strict=True):
                    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    bn_gen.eval()
    # with_per_image_norm copies: the original still scores with running statistics
    assert not any(is_per_image(m) for m in bn_gen.modules())


@pytest.mark.parametrize("norm", NORMS)
def test_a_score_depends_on_its_own_image_alone(norm: str) -> None:
    cfg = ModelConfig(image_size=16, channels=1, nz=8, width=4, norm=norm)
    g = _randomised(cfg)
    x = torch.randn(12, 1, 16, 16)
    alone = torch.cat([score_both(g, x[i:i + 1])[0] for i in range(len(x))])
    perm = torch.randperm(len(x))
    batched = score_both(g, x[perm], batch_size=5)[0]
    torch.testing.assert_close(batched, alone[perm], rtol=1e-5, atol=1e-6)
    fast = TorchScorer(g, batch_size=7).scores(x[perm])[0]
    np.testing.assert_allclose(np.asarray(fast), alone[perm].numpy(), rtol=1e-4, atol=1e-5)


def test_scoring_with_test_batch_statistics_would_mix_images() -> None:
    """The mode pkdgan never offers: training-mode BatchNorm over a test batch. The check above
    would catch it (its scores change with the batch's other images)."""
    g = _randomised(ModelConfig(image_size=16, channels=1, nz=8, width=4)).train()
    x = torch.randn(6, 1, 16, 16)
    with torch.no_grad():
        z, _, z_hat = g(x)
        z1, _, z_hat1 = g(x[:3])
    assert not torch.allclose(((z - z_hat) ** 2).mean(1)[:3], ((z1 - z_hat1) ** 2).mean(1))


def test_norm_layers_and_frozen_copy() -> None:
    kinds = {n: {type(m) for m in build_generator(ModelConfig(norm=n)).modules()} for n in NORMS}
    assert nn.BatchNorm2d in kinds["batch"] and PerImageBatchNorm2d not in kinds["batch"]
    assert PerImageBatchNorm2d in kinds["batch-per-image"]
    assert nn.InstanceNorm2d in kinds["instance"] and nn.BatchNorm2d not in kinds["instance"]
    with pytest.raises(TypeError):
        frozen_instance_norm(nn.BatchNorm2d(3))


def test_config_keeps_legacy_hashes_and_refuses_unknown_norms() -> None:
    d = RunConfig().to_dict()
    legacy = json.loads(json.dumps(d))
    del legacy["model"]["norm"]
    assert RunConfig.from_dict(legacy).hash() == RunConfig.from_dict(d).hash()
    d["model"]["norm"] = "instance"
    assert RunConfig.from_dict(d).hash() != RunConfig.from_dict(legacy).hash()
    with pytest.raises(UsageError, match="norm must be one of"):
        ModelConfig(norm="layer")  # type: ignore[arg-type]


def test_student_follows_the_teachers_norm_unless_told() -> None:
    teacher = ModelConfig(channels=1, norm="instance")
    student = get_config("student-mnist")
    assert for_teacher(student, teacher).norm == "instance"
    assert for_teacher(student, teacher, "batch").norm == "batch"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("norm_data")
    for sub, vertical, seed, n in (("train", False, 0, 60), ("test/normal", False, 1, 10),
                                   ("test/abnormal", True, 2, 10)):
        (root / sub).mkdir(parents=True)
        for i, a in enumerate(bars(n, 16, vertical=vertical, seed=seed)):
            Image.fromarray(a).save(root / sub / f"{i:03d}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["instance", "batch-per-image"])
def test_cli_trains_distils_and_deploys_a_per_image_model(folder: Path, tmp_path: Path, norm: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pkdgan.core import runs
    from pkdgan.deploy import backends
    from pkdgan.deploy.build import build
    from pkdgan.deploy.cache import read_info
    from pkdgan.deploy.load import load

    teacher = tmp_path / "teacher"
    assert main(["train", "--dataset", "folder", "--data-root", str(folder), "--image-size", "16",
                 "--width", "4", "--nz", "8", "--epochs", "1", "--batch-size", "4", "--norm", norm,
                 "--holdout-fraction", "0.2", "--score", "latent", "--no-progress",
                 "--out", str(teacher)]) == 0
    assert runs.read_json(teacher / runs.CONFIG)["model"]["norm"] == norm
    student = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--student", "student-mnist", "--epochs", "1",
                 "--batch-size", "4", "--no-progress", "--out", str(student)]) == 0
    assert runs.read_json(student / runs.CONFIG)["model"]["norm"] == norm
    capsys.readouterr()
    runtimes = [b for b in ("onnxruntime", "openvino") if backends.installed(b)]
    if not runtimes:
        pytest.skip("no ONNX Runtime or OpenVINO")
    for run in (teacher, student):
        det = load(run, backend="torch")
        assert isinstance(det.model_config_, ModelConfig) and det.model_config_.norm == norm
        info = read_info(build(run))
        for b in runtimes:
            assert info["parity"][b]["ok"], info["parity"]
        if "native" in info["parity"]:  # the C kernels normalise per image too (both fit its form)
            assert info["parity"]["native"]["ok"] and info["files"]["native"], info["parity"]["native"]
        # predict without torch (the deploy cache) gives the torch path's scores
        rows = {}
        for backend in ("auto", "torch"):
            out = tmp_path / f"{run.name}-{backend}.csv"
            assert main(["predict", str(run), str(folder / "test"), "--backend", backend,
                         "--output", str(out)]) == 0
            rows[backend] = [line.split(",") for line in out.read_text().splitlines()[1:]]
        assert [r[0] for r in rows["auto"]] == [r[0] for r in rows["torch"]]
        np.testing.assert_allclose([float(r[1]) for r in rows["auto"]], [float(r[1]) for r in rows["torch"]],
                                   rtol=1e-4, atol=1e-6)


def test_folders_keep_batch_norm_whatever_the_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder default is the measured one (docs/results/norm/), not the preset's."""
    import dataclasses

    from pkdgan.api import EDEGAN
    from pkdgan.cli import build_parser
    from pkdgan.commands._common import config_from_args
    from pkdgan.core import presets

    monkeypatch.setitem(presets.PRESETS, "cpu", dataclasses.replace(presets.PRESETS["cpu"], norm="instance"))
    parse = build_parser().parse_args
    folder = parse(["train", "--dataset", "folder", "--data-root", "x", "--out", "y"])
    mnist = parse(["train", "--dataset", "mnist", "--out", "y"])
    told = parse(["train", "--dataset", "folder", "--norm", "instance", "--data-root", "x", "--out", "y"])
    assert config_from_args(folder, 0, 1).model.norm == presets.FOLDER_NORM == "batch"
    assert config_from_args(mnist, 0, 1).model.norm == "instance"
    assert config_from_args(told, 0, 1).model.norm == "instance"
    assert EDEGAN().run_config(1).model.norm == presets.FOLDER_NORM
