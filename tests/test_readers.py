import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from pkdgan.core.errors import DataError
from pkdgan.data.readers import (
    CIFAR_NPZ,
    IDX_FILES,
    load_cifar10,
    load_idx_dataset,
    parse_idx,
    read_cifar_batch,
    read_idx,
)


def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx_folder(folder: Path, n_train: int = 12, n_test: int = 6, size: int = 28) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train_y": (np.arange(n_train) % 10).astype(np.uint8),
        "test_x": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "test_y": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for k, a in arrays.items():
        (folder / IDX_FILES[k]).write_bytes(gzip.compress(idx_bytes(a)))
    return arrays


def test_idx_roundtrip(tmp_path: Path) -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(idx_bytes(a)))
    assert np.array_equal(read_idx(p), a)
    raw = tmp_path / "x.idx"
    raw.write_bytes(idx_bytes(a))
    assert np.array_equal(read_idx(raw), a)


def test_idx_dataset_folder(tmp_path: Path) -> None:
    arrays = write_idx_folder(tmp_path / "mnist")
    xtr, ytr, xte, yte = load_idx_dataset(str(tmp_path / "mnist"))
    assert np.array_equal(xtr, arrays["train_x"]) and np.array_equal(yte, arrays["test_y"])


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x00\x00\x09\x01\x00\x00\x00\x01\x00", "element type"),
        (b"\x08\x00\x08\x01", "magic"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "size mismatch"),
        (b"\x00\x00", "magic"),
    ],
)
def test_idx_errors(data: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match):
        parse_idx(data)


def test_truncated_gzip(tmp_path: Path) -> None:
    p = tmp_path / "t.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 4), np.uint8)))[:-12])
    with pytest.raises(DataError, match="t.gz"):
        read_idx(p)


def write_cifar_batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    path.write_bytes(pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data,
                                   b"filenames": [b"f"] * n}))
    return data, labels


def test_cifar_batches_py(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{i}", 4, i)
    data, labels = write_cifar_batch(folder / "test_batch", 3, 99)
    x, y = read_cifar_batch(folder / "test_batch")
    assert x.shape == (3, 32, 32, 3) and y.tolist() == labels
    # channel planes (R 1024, G 1024, B 1024) become HWC
    assert x[1, 0, 5, 2] == data[1, 2048 + 5]
    xtr, ytr, xte, yte = load_cifar10(str(tmp_path / "cifar-10"))
    assert xtr.shape == (20, 32, 32, 3) and len(yte) == 3


def test_cifar_npz(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10"
    folder.mkdir()
    x = np.zeros((5, 32, 32, 3), np.uint8)
    np.savez(folder / CIFAR_NPZ, x_train=x, y_train=np.arange(5, dtype=np.uint8),
             x_test=x[:2], y_test=np.arange(2, dtype=np.uint8), test_indices=np.arange(2))
    xtr, ytr, xte, yte = load_cifar10(str(folder))
    assert xtr.shape == (5, 32, 32, 3) and xte.shape == (2, 32, 32, 3)


def test_shared_dataset_counts(shared_data: Path) -> None:
    """The real files: counts from ../shared/data/SOURCES.md."""
    xtr, ytr, xte, yte = load_idx_dataset(str(shared_data / "mnist"))
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert np.bincount(ytr).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(yte).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    fxtr, fytr, fxte, fyte = load_idx_dataset(str(shared_data / "fashion-mnist"))
    assert np.bincount(fytr).tolist() == [6000] * 10 and np.bincount(fyte).tolist() == [1000] * 10
    cxtr, cytr, cxte, cyte = load_cifar10(str(shared_data / "cifar-10"))
    assert cxtr.shape == (50000, 32, 32, 3) and np.bincount(cytr).tolist() == [5000] * 10
    assert np.bincount(cyte).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    assert cxtr[0, 0, :3, 0].tolist() == [59, 43, 50]  # data_batch_1 image 0, red channel
