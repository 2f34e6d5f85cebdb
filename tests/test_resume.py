"""Interruption: a run killed mid-epoch (SIGKILL from outside, or Ctrl-C) keeps its finished
epochs, and ``train --resume`` ends with exactly the parameters of an uninterrupted run.

Equality is bit-for-bit (``torch.equal``), not a tolerance: same seed, CPU, same thread count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from pkdgan.cli import main
from pkdgan.core import files, runs
from pkdgan.training import train as train_mod

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

# 38 training images at batch 4 -> 10 steps per epoch; step call 15 is in the middle of epoch 2.
ARGS = ["train", "--dataset", "digits", "--image-size", "16", "--width", "4", "--nz", "8",
        "--epochs", "3", "--batch-size", "4", "--max-train", "40", "--max-test", "40",
        "--seed", "3", "--no-progress", "--device", "cpu"]
STOP_AT_CALL = 15

@pytest.fixture(scope="module", autouse=True)
def _no_plots() -> Iterator[None]:
    """Run plots are another feature (and seconds per run on 2 cores); not what is tested here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pkdgan.pipeline.results.write_plots", lambda *a, **k: None, raising=False)
        yield



@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must end up identical to."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def assert_same_run(a: Path, b: Path) -> None:
    ta, tb = runs.load_tensors(a / runs.CHECKPOINT), runs.load_tensors(b / runs.CHECKPOINT)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    sa, sb = runs.read_npz(a / runs.SCORES), runs.read_npz(b / runs.SCORES)
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    losses = [[{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
               for r in runs.read_history(d / runs.HISTORY)] for d in (a, b)]
    assert losses[0] == losses[1] and len(losses[0]) == 3
    assert not (b / runs.TRAIN_STATE).exists()


def epoch_of(path: Path) -> str:
    with safe_open(str(path), "pt") as f:
        return f.metadata()["epoch"]


def assert_interrupted_after_epoch_1(out: Path) -> None:
    assert not runs.is_finished(out)
    assert [r["epoch"] for r in runs.read_history(out / runs.HISTORY)] == ["1"]
    assert epoch_of(out / runs.TRAIN_STATE) == epoch_of(out / runs.CHECKPOINT) == "1"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


KILLED_RUN = textwrap.dedent("""
    import sys, time
    import pkdgan.training.train as tr
    from pkdgan.cli import main

    real, calls = tr.gan_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == {stop}:
            print("MID-EPOCH", flush=True)  # the test kills us while we wait here
            time.sleep(600)
        return real(*args, **kwargs)

    tr.gan_step = step
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_mid_epoch_then_resume(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    env |= {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}  # the package under test
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN.format(stop=STOP_AT_CALL), *ARGS, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        assert line == "MID-EPOCH", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert_interrupted_after_epoch_1(out)
    assert main([*ARGS, "--out", str(out)]) == 2  # without --resume the partial run is protected
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert_same_run(reference, out)


def test_ctrl_c_mid_epoch_then_resume(reference: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    real, calls = train_mod.gan_step, [0]

    def step(*args, **kwargs):  # noqa: ANN202
        calls[0] += 1
        if calls[0] == STOP_AT_CALL:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(train_mod, "gan_step", step)
    assert main([*ARGS, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted; finished epochs are kept" in err[0]
    assert_interrupted_after_epoch_1(out)
    monkeypatch.setattr(train_mod, "gan_step", real)
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert_same_run(reference, out)


def test_interrupt_between_the_two_checkpoint_writes(reference: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after epoch 2's training state but before its checkpoint: the two files now
    disagree, and resuming must still reproduce the uninterrupted run."""
    real, saves = runs.save_tensors, []

    def save(path: Path, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        saves.append(path.name)
        if saves.count(runs.CHECKPOINT) == 2:
            raise KeyboardInterrupt
        real(path, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(runs, "save_tensors", save)
    assert main([*ARGS, "--out", str(out)]) == 130
    monkeypatch.setattr(runs, "save_tensors", real)
    assert saves == [runs.TRAIN_STATE, runs.CHECKPOINT] * 2
    assert (epoch_of(out / runs.CHECKPOINT), epoch_of(out / runs.TRAIN_STATE)) == ("1", "2")
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert_same_run(reference, out)


def test_resume_passes_over_finished_classes(tmp_path: Path) -> None:
    """A multi-class run killed at its second class: --resume keeps the finished first one."""
    args = [*ARGS, "--epochs", "1"]
    assert main([*args, "--normal-class", "1", "--out", str(tmp_path / "class_1")]) == 0
    first = (tmp_path / "class_1" / runs.METRICS).read_bytes()
    assert main([*args, "--normal-class", "1,2", "--out", str(tmp_path), "--resume"]) == 0
    assert (tmp_path / "class_1" / runs.METRICS).read_bytes() == first
    assert runs.is_finished(tmp_path / "class_2")


def test_atomic_writes_keep_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, meta = tmp_path / runs.CHECKPOINT, tmp_path / runs.METRICS
    runs.save_tensors(ckpt, {"w": torch.ones(3)}, {"epoch": "1"})
    runs.write_json(meta, {"auroc": 0.5})
    umask = os.umask(0)
    os.umask(umask)
    for p in (ckpt, meta):  # shareable like any other file the user writes, not 0600
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", killed)  # the atomic writer lives in core.files
    with pytest.raises(KeyboardInterrupt):
        runs.save_tensors(ckpt, {"w": torch.zeros(3)}, {"epoch": "2"})
    with pytest.raises(KeyboardInterrupt):
        runs.write_json(meta, {"auroc": 0.9})
    assert torch.equal(runs.load_tensors(ckpt)["w"], torch.ones(3))
    assert runs.read_json(meta) == {"auroc": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ckpt.name, meta.name])
