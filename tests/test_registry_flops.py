"""Model registry and FLOP counting: closed-form layer counts, registered ratios, the CLI."""

import json

import pytest
import torch
from torch import nn

from pkdgan.cli import main
from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import UsageError
from pkdgan.core.registry import MODEL_NAMES, REGISTRY, STUDENT_NAMES, for_teacher, get_config
from pkdgan.models.flops import cost_table, count_params, model_cost, module_flops, scoring_speed
from pkdgan.models.nets import build_generator


def test_conv2d_flops_closed_form() -> None:
    conv = nn.Conv2d(3, 5, kernel_size=4, stride=2, padding=1, bias=False)
    n, h_out = 2, 4  # 8x8 input, stride 2
    expected = 2 * n * 5 * h_out * h_out * 3 * 4 * 4  # 2 FLOPs per multiply-accumulate
    assert module_flops(conv, torch.zeros(n, 3, 8, 8)) == expected == 15360


def test_conv_transpose2d_flops_closed_form() -> None:
    # every input pixel is multiplied into a k x k x C_out patch, once per input channel
    deconv = nn.ConvTranspose2d(5, 3, kernel_size=4, stride=2, padding=1, bias=False)
    n, h_in = 2, 4
    expected = 2 * n * 5 * h_in * h_in * 3 * 4 * 4
    assert module_flops(deconv, torch.zeros(n, 5, h_in, h_in)) == expected == 15360


def test_generator_flops_are_three_networks_of_layers() -> None:
    """The scoring path at 16x16 (one pyramid conv) from the layer formulas, by hand."""
    cfg = get_config("student-mnist")
    cfg = for_teacher(cfg, ModelConfig(image_size=16))
    w, nz = cfg.width, cfg.nz
    encoder = 8 * 8 * w * 1 * 16 + 4 * 4 * 2 * w * w * 16 + 2 * w * nz * 16  # MACs per layer
    decoder = nz * 2 * w * 16 + 4 * 4 * 2 * w * w * 16 + 8 * 8 * w * 1 * 16
    assert model_cost(cfg).flops == 2 * (2 * encoder + decoder)


def test_registry_names_and_lookup() -> None:
    assert MODEL_NAMES[0] == "teacher" and set(STUDENT_NAMES) == {
        "student-cifar10", "student-mnist", "student-fmnist"}
    t = get_config("teacher")
    assert (t.width, t.nz, t.image_size, t.channels) == (64, 100, 32, 1)
    assert get_config("teacher-cifar10").channels == 3
    with pytest.raises(UsageError, match="unknown model config"):
        get_config("student-imagenet")


@pytest.mark.parametrize("name", STUDENT_NAMES)
def test_students_meet_the_papers_computation_ratio(name: str) -> None:
    row = cost_table([name])[name]
    entry = REGISTRY[name]
    assert row["dataset"] == entry.dataset and row["teacher"] == entry.teacher
    assert row["ratio"] >= entry.paper_ratio
    assert row["ratio"] == row["teacher_flops"] / row["flops"]
    assert row["params"] == count_params(build_generator(entry.config))
    assert row["macs"] * 2 == row["flops"]


def test_for_teacher_keeps_width_and_nz_only() -> None:
    teacher = ModelConfig(image_size=16, channels=3, latent_constraint="tanh")
    s = for_teacher(get_config("student-fmnist"), teacher)
    assert (s.width, s.nz, s.image_size, s.channels, s.latent_constraint) == (1, 64, 16, 3, "tanh")


def test_flops_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert list(table) == MODEL_NAMES
    assert {"params", "flops"} <= set(table["teacher"]) and "ratio" not in table["teacher"]
    for name in STUDENT_NAMES:
        assert table[name]["ratio"] >= table[name]["paper_ratio"] and table[name]["dataset"]
    assert main(["flops", "student-mnist"]) == 0
    text = capsys.readouterr().out
    assert "student-mnist" in text and "315.56" in text


def test_flops_cli_rejects_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "nope"]) == 2
    assert "unknown model config 'nope'" in capsys.readouterr().err


def test_scoring_speed_is_positive() -> None:
    cfg = for_teacher(get_config("student-mnist"), ModelConfig(image_size=16))
    assert scoring_speed(build_generator(cfg), 1, 16, batch_size=8, min_seconds=0.01) > 0
