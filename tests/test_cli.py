"""The CLI end to end (in-process through ``pkdgan.cli.main``) and its error contract."""

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pkdgan.cli import main

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

TINY = ["--dataset", "digits", "--image-size", "16", "--width", "4", "--nz", "8", "--epochs", "1",
        "--no-progress"]


def test_train_then_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--normal-class", "3", "--seed", "1", "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert line["auroc"] == round(metrics["auroc"], 4)
    z = np.load(out / "scores.npz")
    assert roc_auc_score(z["labels"], z["scores"]) == pytest.approx(metrics["auroc"], abs=1e-12)
    assert z["labels"].sum() == (z["classes"] != 3).sum()
    config = json.loads((out / "config.json").read_text())
    # the measured cpu preset is the default schedule; the paper's is one flag away
    assert config["data"]["normal_class"] == 3 and config["train"]["batch_size"] == 16
    assert config["train"]["drop_last"] is True and config["train"]["precision"] == "fp32"
    assert config["model"]["norm"] == "instance"  # a benchmark dataset takes the preset's norm
    assert main(["test", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"AUROC {metrics['auroc']:.4f}" in printed
    assert main(["test", str(out), "--from-scores", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["auroc"] == pytest.approx(metrics["auroc"])


def test_preset_paper_is_the_papers_schedule(tmp_path: Path) -> None:
    out = tmp_path / "paper"
    assert main(["train", *TINY, "--preset", "paper", "--max-train", "20", "--out", str(out)]) == 0
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["batch_size"], train["epochs"], train["drop_last"], train["precision"]) == (
        1, 1, False, "fp32")  # --epochs 1 from TINY overrides the preset's 15


def test_several_classes_write_one_folder_each(tmp_path: Path) -> None:
    assert main(["train", *TINY, "--normal-class", "1,2", "--batch-size", "4", "--out", str(tmp_path)]) == 0
    for k in (1, 2):
        assert (tmp_path / f"class_{k}" / "metrics.json").is_file()


def run_cli(*args: str, env_root: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if env_root:
        env["PKDGAN_DATA"] = env_root
    return subprocess.run([sys.executable, "-m", "pkdgan.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["train", "--dataset", "mnist", "--data-root", "/nonexistent/data", "--out", "X"], 1,
         "/nonexistent/data"),
        (["train", "--dataset", "digits", "--normal-class", "12", "--out", "X"], 2, "unknown class 12"),
        (["train", "--dataset", "digits", "--image-size", "24", "--out", "X"], 2, "power of two"),
        (["train", "--dataset", "imagenet", "--out", "X"], 2, "invalid choice"),
        (["train", "--dataset", "mnist", "--out", "X"], 2, "no data root"),
        (["test", "/nonexistent/run"], 1, "run folder not found"),
    ],
)
def test_bad_input_one_line_no_traceback(tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    args = [a if a != "X" else str(tmp_path / "run") for a in args]
    r = run_cli(*args)
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_help_shows_defaults() -> None:
    r = run_cli("train", "--help")
    assert r.returncode == 0 and "(default: 0.0002)" in r.stdout and "--normal-class" in r.stdout
    help_text = " ".join(r.stdout.split())  # the presets' schedules
    assert "cpu: 15 epochs at batch 16, fp32, partial last batch dropped, norm instance" in help_text
    assert "cpu-b256: 15 epochs at batch 256, fp32" in help_text


def test_every_option_of_every_command_is_explained() -> None:
    """Each argument has help text; options with a default show it once, in --help."""
    import argparse

    from pkdgan.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "test", "demo", "distill", "flops", "predict", "export", "plot", "reproduce",
            "report"} <= set(sub.choices)
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"pkdgan {name} {action.option_strings or action.dest} has no help"
        text = command.format_help()
        assert "(default: None)" not in text, name


def test_omp_wait_policy_follows_cpu_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """PASSIVE only when other jobs keep a core busy; a value the user set is never replaced."""
    import pkdgan.core.cpu as cpu

    monkeypatch.setattr(cpu, "busy_cores", lambda seconds=0.2: 1.0)
    env: dict[str, str] = {}
    assert cpu.choose_omp_wait_policy(env) == "PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert cpu.choose_omp_wait_policy(env) is None and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    monkeypatch.setattr(cpu, "busy_cores", lambda seconds=0.2: 0.1)
    env = {}
    assert cpu.choose_omp_wait_policy(env) is None and env == {}


def test_busy_cores_sees_a_busy_process() -> None:
    import pkdgan.core.cpu as cpu

    if cpu._cpu_times() is None:
        pytest.skip("no /proc/stat on this system")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert cpu.busy_cores(0.5) >= 0.6
    finally:
        burner.kill()
        burner.wait()


def test_bf16_on_a_cpu_without_bf16_units_says_so_once(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulated bf16 measured 22x slower than float32 on an AVX2 CPU: the user hears it."""
    from pkdgan.training import train as train_mod

    args = ["train", *TINY, "--max-train", "40", "--max-test", "40", "--batch-size", "8",
            "--precision", "bf16"]
    monkeypatch.setattr(train_mod, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated and many times slower") as caught:
        assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert sum("emulated and" in str(w.message) for w in caught) == 1
    monkeypatch.setattr(train_mod, "cpu_has_bf16", lambda: True)
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert not any("emulated and" in str(w.message) for w in quiet)


def test_a_batch_too_large_for_the_folder_says_how_few_steps(tmp_path: Path) -> None:
    """The cpu preset's batch 16 on 38 images is two steps an epoch: one line with the fix."""
    args = ["train", *TINY, "--max-train", "40", "--max-test", "40"]
    with pytest.warns(UserWarning, match=r"38 training images at batch 16 make 2 optimiser "
                                         r"step\(s\) per epoch, 2 in all: .*--batch-size") as caught:
        assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert sum("optimiser step" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        assert main([*args, "--batch-size", "4", "--epochs", "12", "--out", str(tmp_path / "b")]) == 0
    assert not any("optimiser step" in str(w.message) for w in quiet)
