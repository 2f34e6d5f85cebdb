"""Untrusted files: checkpoints, training states, score files and CIFAR batches carrying a
pickle payload are refused with a DataError, and the payload never runs.

Each payload makes a marker folder when unpickled; a control check proves it is live (a naive
``pickle.loads`` / ``torch.load(weights_only=False)`` does run it), so the refusals mean something.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.errors import DataError
from pkdgan.data.readers import read_cifar_batch
from pkdgan.training.checkpoints import load_run_generator

SRC = Path(__file__).resolve().parents[1] / "src" / "pkdgan"
TINY = ["--dataset", "digits", "--image-size", "16", "--width", "4", "--nz", "8", "--epochs", "2",
        "--batch-size", "8", "--max-train", "24", "--max-test", "24", "--no-progress", "--device", "cpu"]

@pytest.fixture(scope="module", autouse=True)
def _no_plots() -> Iterator[None]:
    """Run plots are another feature (and seconds per run on 2 cores); not what is tested here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pkdgan.pipeline.results.write_plots", lambda *a, **k: None, raising=False)
        yield



class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: arbitrary code execution in miniature."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def test_payload_is_live_when_unpickled_naively(tmp_path: Path, marker: Path) -> None:
    pickle.loads(pickle.dumps({"generator.w": Payload(marker)}))
    assert marker.is_dir()
    marker.rmdir()
    torch.save({"generator.w": Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.is_dir()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sec") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


def evil_files(marker: Path, tmp_path: Path) -> dict[str, bytes]:
    """The same payload as a bare pickle and inside a genuine torch.save archive."""
    torch.save({"generator.w": Payload(marker), "t": torch.ones(2)}, tmp_path / "evil.pt")
    return {"pickle": pickle.dumps({"generator.w": Payload(marker)}),
            "torch.save": (tmp_path / "evil.pt").read_bytes()}


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_malicious_checkpoint_is_refused(run_copy: Path, tmp_path: Path, marker: Path, kind: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = run_copy / runs.CHECKPOINT
    path.write_bytes(evil_files(marker, tmp_path)[kind])
    assert main(["test", str(run_copy)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "not a valid safetensors checkpoint" in err[0]
    with pytest.raises(DataError, match="not a valid safetensors"):
        load_run_generator(run_copy)
    assert not marker.exists()


def test_malicious_training_state_is_refused_on_resume(run_copy: Path, tmp_path: Path, marker: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (run_copy / runs.METRICS).unlink()  # a partial run, as shared mid-training
    ts = run_copy / runs.TRAIN_STATE
    ts.write_bytes(evil_files(marker, tmp_path)["torch.save"])
    assert main(["train", *TINY, "--out", str(run_copy), "--resume"]) == 1
    err = capsys.readouterr().err
    assert str(ts) in err and "not a valid safetensors" in err and len(err.splitlines()) == 1
    assert not marker.exists() and not runs.is_finished(run_copy)


def test_object_arrays_in_npz_are_refused(run_copy: Path, marker: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = run_copy / runs.SCORES
    np.savez(path, scores=np.array([Payload(marker), 1.0], dtype=object), labels=np.array([0, 1]))
    assert main(["test", str(run_copy), "--from-scores"]) == 1
    assert str(path) in capsys.readouterr().err
    assert not marker.exists()


def cifar_batch(extra: object) -> dict:
    return {b"batch_label": extra, b"labels": [1, 2],
            b"data": np.zeros((2, 3072), np.uint8), b"filenames": [b"a", b"b"]}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_cifar_batch_is_refused(tmp_path: Path, marker: Path, protocol: int) -> None:
    good = tmp_path / "good_batch"
    good.write_bytes(pickle.dumps(cifar_batch(b"ok"), protocol=max(protocol, 3)))
    x, y = read_cifar_batch(good)  # genuine numpy-array batches still load
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [1, 2]
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps(cifar_batch(Payload(marker)), protocol=protocol))
    with pytest.raises(DataError, match=re.escape(str(evil)) + ".*refusing to load"):
        read_cifar_batch(evil)
    assert not marker.exists()


def test_malicious_cifar_batch_through_the_cli(tmp_path: Path, marker: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "data" / "cifar-10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(pickle.dumps(cifar_batch(Payload(marker))))
    args = ["train", *TINY, "--out", str(tmp_path / "run")]
    args[args.index("digits")] = "cifar10"
    assert main([*args, "--data-root", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert "refusing to load" in err and str(folder / "data_batch_1") in err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_no_unsafe_deserialisation_in_the_package() -> None:
    """Guard: nothing in src/ may call a general unpickler; the CIFAR reader's allow-list
    unpickler is the single, reviewed exception."""
    unsafe = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False"
                        r"|\bdill\b|\bjoblib\.load|marshal\.loads?")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if unsafe.search(line)]
    assert hits == []
    pickle_users = sorted(p.name for p in SRC.rglob("*.py")
                          if re.search(r"^import pickle", p.read_text(), re.M))
    assert pickle_users == ["readers.py"]
