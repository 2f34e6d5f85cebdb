"""Bad input catalogue: every case is one stderr line naming the problem (and the path), exit
code 2 (usage) or 1 (data), no traceback, and no run folder left looking finished.

Most cases drive the real entry point in-process (``pkdgan.cli.main``); a few run it as a
true subprocess to prove nothing else (import noise, warnings, tracebacks) reaches stderr.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.config import DataConfig, ModelConfig, TrainConfig
from pkdgan.core.errors import DataError, PkdganError, UsageError
from pkdgan.data.images import load_images, to_tensor
from pkdgan.training.checkpoints import load_run_generator

TINY = ["--image-size", "16", "--width", "4", "--nz", "8", "--epochs", "1", "--batch-size", "8",
        "--no-progress", "--device", "cpu"]
IDX_NAMES = {"train_x": "train-images-idx3-ubyte.gz", "train_y": "train-labels-idx1-ubyte.gz",
             "test_x": "t10k-images-idx3-ubyte.gz", "test_y": "t10k-labels-idx1-ubyte.gz"}

@pytest.fixture(scope="module", autouse=True)
def _no_plots() -> Iterator[None]:
    """Run plots are another feature (and seconds per run on 2 cores); not what is tested here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pkdgan.pipeline.results.write_plots", lambda *a, **k: None, raising=False)
        yield



def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and stderr of one in-process CLI call (argparse exits are caught too)."""
    try:
        code = main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def fails(capsys: pytest.CaptureFixture[str], code: int, needles: list[str], *args: str) -> str:
    got, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert got == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A valid, tiny MNIST-format data root (8x8 images) that single tests then break."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    arrays = {"train_x": rng.integers(0, 256, (30, 8, 8), dtype=np.uint8),
              "train_y": (np.arange(30) % 3).astype(np.uint8),
              "test_x": rng.integers(0, 256, (9, 8, 8), dtype=np.uint8),
              "test_y": (np.arange(9) % 3).astype(np.uint8)}
    for k, a in arrays.items():
        (folder / IDX_NAMES[k]).write_bytes(gzip.compress(idx_bytes(a)))
    return tmp_path / "data"


def train_mnist(capsys: pytest.CaptureFixture[str], root: Path, code: int, needles: list[str]) -> None:
    out = root.parent / "run"
    fails(capsys, code, needles, "train", "--dataset", "mnist", "--data-root", str(root), *TINY,
          "--out", str(out))
    assert not out.exists()  # data is read before the run folder is created


def test_mnist_fixture_trains(mnist_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The baseline the corruption cases break: unmodified, it trains to a finished run."""
    out = mnist_root.parent / "run"
    code, err = cli(capsys, "train", "--dataset", "mnist", "--data-root", str(mnist_root), *TINY,
                    "--out", str(out))
    assert code == 0, err
    assert runs.is_finished(out)


def test_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_mnist(capsys, tmp_path / "nowhere", 1, ["does not exist", str(tmp_path / "nowhere")])


def test_empty_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    train_mnist(capsys, tmp_path / "data", 1, [str(tmp_path / "data" / "mnist"), "not found"])


def test_no_data_root_at_all(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PKDGAN_DATA", raising=False)
    out = tmp_path / "run"
    fails(capsys, 2, ["no data root"], "train", "--dataset", "mnist", *TINY, "--out", str(out))
    assert not out.exists()


def test_missing_idx_file(mnist_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mnist_root / "mnist" / IDX_NAMES["test_y"]
    path.unlink()
    train_mnist(capsys, mnist_root, 1, ["missing file", str(path)])


@pytest.mark.parametrize(
    "corrupt, needle",
    [
        (lambda b: b[: len(b) // 2], "corrupt gzip stream"),                 # truncated download
        (lambda b: b[:10] + bytes(255 - c for c in b[10:]), "corrupt gzip"),  # flipped payload
        (lambda b: b"\x08\x03" + gzip.decompress(b)[2:], "bad magic number"),
        (lambda b: gzip.compress(gzip.decompress(b)[:-7]), "size mismatch"),
        (lambda b: b"", "bad magic number"),                                 # zero-byte file
    ],
    ids=["truncated-gz", "corrupt-gz", "wrong-magic", "short-idx", "zero-byte"],
)
def test_corrupt_idx(mnist_root: Path, capsys: pytest.CaptureFixture[str], corrupt, needle: str) -> None:
    path = mnist_root / "mnist" / IDX_NAMES["train_x"]
    path.write_bytes(corrupt(path.read_bytes()))
    train_mnist(capsys, mnist_root, 1, [needle, str(path)])


def test_images_and_labels_disagree(mnist_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mnist_root / "mnist" / IDX_NAMES["train_y"]
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(29, np.uint8))))
    train_mnist(capsys, mnist_root, 1, ["do not match", str(mnist_root / "mnist")])


def test_test_set_without_anomalies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """digits' test set starts with a 0: capped at one image it holds no anomaly, so AUROC is
    undefined; refused before training rather than after it."""
    out = tmp_path / "run"
    fails(capsys, 1, ["needs both normal (class 0) and anomalous images", "--max-test"], "train",
          "--dataset", "digits", *TINY, "--max-test", "1", "--out", str(out))
    assert not out.exists()


def test_corrupt_cifar_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "data" / "cifar-10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"\x80\x04garbage" * 10)
    out = tmp_path / "run"
    fails(capsys, 1, ["not a CIFAR-10 batch", str(folder / "data_batch_1")], "train", "--dataset",
          "cifar10", "--data-root", str(tmp_path / "data"), *TINY, "--out", str(out))
    assert not out.exists()


def test_truncated_cifar_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "data" / "cifar-10"
    folder.mkdir(parents=True)
    x = np.zeros((4, 32, 32, 3), np.uint8)
    path = folder / "cifar10_train50000_test1000.npz"
    np.savez(path, x_train=x, y_train=np.zeros(4), x_test=x, y_test=np.zeros(4))
    path.write_bytes(path.read_bytes()[:300])
    fails(capsys, 1, ["unreadable CIFAR-10 npz", str(path)], "train", "--dataset", "cifar10",
          "--data-root", str(tmp_path / "data"), *TINY, "--out", str(tmp_path / "run"))


def save_images(folder: Path, n: int, size: int = 16, mode: str = "L") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).convert(mode).save(
            folder / f"{i}.png")


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    save_images(root / "train", 6)
    save_images(root / "test" / "normal", 2)
    save_images(root / "test" / "abnormal", 2)
    return root


def train_folder(capsys: pytest.CaptureFixture[str], root: Path, code: int, needles: list[str]) -> None:
    out = root.parent / "run"
    fails(capsys, code, needles, "train", "--dataset", "folder", "--data-root", str(root), *TINY,
          "--out", str(out))
    assert not out.exists()


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"hello"],
                         ids=["zero-byte", "truncated-png", "text-named-png"])
def test_corrupt_image(folder_root: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    bad = folder_root / "test" / "abnormal" / "broken.png"
    bad.write_bytes(content)
    train_folder(capsys, folder_root, 1, ["cannot read image", str(bad)])


def test_float_image_with_nan(folder_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = folder_root / "train" / "nan.tif"
    a = np.full((16, 16), 100.0, np.float32)
    a[3, 4] = np.nan
    Image.fromarray(a, mode="F").save(bad)
    train_folder(capsys, folder_root, 1, ["NaN", str(bad)])


def test_folder_with_only_non_images(folder_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(folder_root / "train")
    (folder_root / "train").mkdir()
    (folder_root / "train" / "README.txt").write_text("no images here")
    (folder_root / "train" / ".DS_Store").write_bytes(b"\x00\x01")
    train_folder(capsys, folder_root, 1, ["no image files", str(folder_root / "train")])


def test_folder_missing_abnormal(folder_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(folder_root / "test" / "abnormal")
    train_folder(capsys, folder_root, 1, ["missing folder", str(folder_root / "test" / "abnormal")])


def test_mixed_sizes_and_modes_are_accepted(folder_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """L, RGB, RGBA, P and 16-bit images of three sizes in one folder, plus non-image files:
    not an error — converted to RGB, resized (announced once), and the run finishes."""
    train = folder_root / "train"
    rng = np.random.default_rng(1)
    for i, (mode, size) in enumerate([("RGB", 12), ("RGBA", 20), ("P", 16), ("LA", 16)]):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode).save(
            train / f"m{i}.png")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(train / "deep.png")
    (train / "notes.txt").write_text("skipped")
    paths = sorted(p for p in train.iterdir() if p.suffix == ".png")
    with pytest.warns(UserWarning, match="resizing"):
        x, _ = load_images(paths, 3, 16, "pad")
    assert x.shape == (len(paths), 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[[p.name for p in paths].index("deep.png")], torch.ones(3, 16, 16))
    out = folder_root.parent / "run"
    with pytest.warns(UserWarning, match="resizing"):
        code, err = cli(capsys, "train", "--dataset", "folder", "--data-root", str(folder_root),
                        *TINY, "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["model"]["channels"] == 3
    assert runs.is_finished(out)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--dataset", "imagenet"], "invalid choice"),
        (["--normal-class", "10"], "unknown class 10"),
        (["--normal-class", "3-11"], "unknown class 10"),
        (["--normal-class", "-1"], "unknown class -1"),
        (["--normal-class", "three"], "bad class list"),
        (["--image-size", "24"], "power of two between 16 and 64, got 24"),
        (["--image-size", "8"], "power of two between 16 and 64, got 8"),
        (["--image-size", "128"], "got 128"),
        (["--epochs", "0"], "epochs must be >= 1, got 0"),
        (["--epochs", "-3"], "epochs must be >= 1, got -3"),
        (["--epochs", "two"], "invalid int value: 'two'"),
        (["--batch-size", "0"], "batch size must be >= 1, got 0"),
        (["--width", "0"], "width must be >= 1, got 0"),
        (["--nz", "0"], "nz must be >= 1, got 0"),
        (["--lr", "0"], "learning rate must be > 0"),
        (["--lr", "nan"], "learning rate must be > 0"),
        (["--channels", "2"], "channels must be 1 or 3, got 2"),
        (["--holdout-fraction", "0.7"], "holdout fraction"),
        (["--max-train", "0"], "max train must be >= 1"),
        (["--download"], "--download is not available for dataset digits"),
    ],
)
def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                      needle: str) -> None:
    base = ["train", "--dataset", "digits", *TINY, "--out", str(tmp_path / "run")]
    fails(capsys, 2, [needle], *base, *args)
    assert not (tmp_path / "run").exists()


def test_api_rejects_bad_configs_and_arrays() -> None:
    for make in (lambda: DataConfig(dataset="imagenet"), lambda: ModelConfig(image_size=48),
                 lambda: ModelConfig(width=0), lambda: TrainConfig(epochs=0),
                 lambda: TrainConfig(batch_size=-1)):
        with pytest.raises(UsageError):
            make()
    nan = np.full((2, 16, 16), 10.0)
    nan[1, 2, 3] = np.nan
    for bad, needle in [(nan, "NaN"), (np.full((1, 8, 8), np.inf), "NaN or Inf"),
                        (np.full((1, 8, 8), 300.0), "must be in \\[0, 255\\]"),
                        (np.full((1, 8, 8), -1), "must be in \\[0, 255\\]"),
                        (np.array([[["a"]]]), "numeric"), (np.zeros((2, 8, 8, 2)), "shape"),
                        (np.zeros((2, 0, 8)), "shape")]:
        with pytest.raises(DataError, match=needle):
            to_tensor(bad, 16)
    # float pixels in [0, 255] are valid and give exactly what the uint8 image gives
    a = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    assert torch.equal(to_tensor(a.astype(np.float64), 16), to_tensor(a, 16))


@pytest.mark.filterwarnings("ignore::UserWarning")  # holdout-size and resize notes
def test_api_detector_bad_input(tmp_path: Path) -> None:
    """The PyOD-style API refuses the same inputs with the project's errors, before training."""
    from pkdgan.api import EDEGAN, load

    tiny = {"image_size": 16, "width": 4, "nz": 8, "epochs": 1, "batch_size": 8, "device": "cpu"}
    ok = np.zeros((8, 16, 16), np.uint8)
    nan = np.zeros((8, 1, 16, 16), np.float32)
    nan[2, 0, 3, 3] = np.nan
    cases = [(tiny, nan, "NaN"), (tiny | {"epochs": 0}, ok, "epochs must be >= 1"),
             (tiny | {"image_size": 24}, ok, "power of two"), (tiny | {"width": 0}, ok, "width")]
    for params, x, needle in cases:
        with pytest.raises(PkdganError, match=needle):
            EDEGAN(**params).fit(x)
    with pytest.raises(DataError, match="run folder not found"):
        load(tmp_path / "nope")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--dataset", "digits", *TINY, "--max-train", "40", "--max-test", "40",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(finished_run, dst)
    return dst


def test_run_missing_checkpoint(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_copy / runs.CHECKPOINT).unlink()
    fails(capsys, 1, ["no checkpoint.safetensors", str(run_copy)], "test", str(run_copy))


def test_checkpoint_from_a_different_config(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = json.loads((run_copy / runs.CONFIG).read_text())
    cfg["model"]["width"] = 8
    (run_copy / runs.CONFIG).write_text(json.dumps(cfg))
    ckpt = str(run_copy / runs.CHECKPOINT)
    fails(capsys, 1, ["does not match the run's config", ckpt, "size mismatch"], "test", str(run_copy))
    with pytest.raises(DataError, match="does not match"):
        load_run_generator(run_copy)


def test_saved_data_config_is_invalid(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = json.loads((run_copy / runs.CONFIG).read_text())
    cfg["data"]["dataset"] = "imagenet"
    (run_copy / runs.CONFIG).write_text(json.dumps(cfg))
    fails(capsys, 1, [str(run_copy / runs.CONFIG), "unknown dataset 'imagenet'"], "test", str(run_copy))


def test_checkpoint_with_nan_weights(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run_copy / runs.CHECKPOINT
    tensors = runs.load_tensors(path)
    key = next(k for k in tensors if k.startswith("generator.") and k.endswith("weight"))
    tensors[key] = tensors[key].clone().fill_(float("nan"))
    runs.save_tensors(path, tensors, {})
    fails(capsys, 1, ["NaN/Inf weights", str(path)], "test", str(run_copy))


@pytest.mark.parametrize("name, content, needle", [
    (runs.CONFIG, "{not json", "unreadable JSON"),
    (runs.CONFIG, "[1, 2]", "no model config"),
    (runs.CONFIG, '{"model": {"image_size": 24}}', "power of two"),
    (runs.CONFIG, '{"model": {"depth": 3}}', "unknown ModelConfig field(s): depth"),
    (runs.CHECKPOINT, "not a safetensors file", "not a valid safetensors checkpoint"),
])
def test_corrupt_run_files(run_copy: Path, capsys: pytest.CaptureFixture[str], name: str,
                           content: str, needle: str) -> None:
    (run_copy / name).write_text(content)
    fails(capsys, 1, [needle, str(run_copy / name)], "test", str(run_copy))


def test_corrupt_scores(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run_copy / runs.SCORES
    path.write_bytes(path.read_bytes()[:100])
    fails(capsys, 1, ["unreadable npz", str(path)], "test", str(run_copy), "--from-scores")


def test_train_into_finished_partial_or_other_run(run_copy: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--dataset", "digits", *TINY, "--max-train", "40", "--max-test", "40"]
    before = (run_copy / runs.METRICS).read_bytes()
    fails(capsys, 2, ["already holds a finished run", str(run_copy)], *base, "--out", str(run_copy))
    assert (run_copy / runs.METRICS).read_bytes() == before
    (run_copy / runs.METRICS).unlink()  # now it looks like a run killed after an epoch
    shutil.copy(run_copy / runs.CHECKPOINT, run_copy / runs.TRAIN_STATE)
    fails(capsys, 2, ["unfinished run", "--resume", str(run_copy)], *base, "--out", str(run_copy))
    fails(capsys, 2, ["different config", str(run_copy)], *base, "--seed", "5", "--out", str(run_copy))
    assert not runs.is_finished(run_copy)


def test_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    base = ["train", "--dataset", "digits", *TINY, "--max-train", "20", "--max-test", "20"]
    fails(capsys, 2, ["is a file, not a folder", str(taken)], *base, "--out", str(taken))
    # any other file-system refusal is still one line naming the path (exit 1)
    fails(capsys, 1, [str(taken / "run"), "Not a directory"], *base, "--out", str(taken / "run"))
    assert taken.read_text() == "a file, not a folder"


def run_entry_point(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pkdgan.cli", *args], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_subprocess_corrupt_gzip(mnist_root: Path) -> None:
    path = mnist_root / "mnist" / IDX_NAMES["test_x"]
    path.write_bytes(path.read_bytes()[:-20])
    out = mnist_root.parent / "run"
    r = run_entry_point("train", "--dataset", "mnist", "--data-root", str(mnist_root), *TINY,
                        "--out", str(out))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and str(path) in r.stderr and "corrupt gzip" in r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_subprocess_checkpoint_from_other_config(run_copy: Path) -> None:
    cfg = json.loads((run_copy / runs.CONFIG).read_text())
    cfg["model"]["nz"] = 9
    (run_copy / runs.CONFIG).write_text(json.dumps(cfg))
    r = run_entry_point("test", str(run_copy))
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.count("\n") == 1 and str(run_copy / runs.CHECKPOINT) in r.stderr

