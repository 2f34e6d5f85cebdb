from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pkdgan.core.config import DataConfig
from pkdgan.core.errors import UsageError
from pkdgan.data.datasets import one_class_split
from pkdgan.data.images import to_tensor
from tests.test_readers import write_idx_folder


def test_to_tensor_range_and_padding() -> None:
    x = np.zeros((2, 28, 28), np.uint8)
    x[:, 0, 0] = 255
    t = to_tensor(x, 32, "pad")
    assert t.shape == (2, 1, 32, 32) and t.dtype == torch.float32
    assert t.min() == -1 and t.max() == 1
    assert t[0, 0, 2, 2] == 1  # the pixel moved by the 2-pixel pad
    assert t[0, 0, 0, 0] == -1  # background padding


def test_to_tensor_bilinear_and_rgb() -> None:
    x = np.full((1, 28, 28, 3), 255, np.uint8)
    t = to_tensor(x, 32, "bilinear")
    assert t.shape == (1, 3, 32, 32) and torch.allclose(t, torch.ones_like(t))
    big = np.full((1, 64, 64), 0, np.uint8)
    assert to_tensor(big, 16, "pad").shape == (1, 1, 16, 16)  # falls back to resizing


def test_one_class_split_protocol(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "mnist", n_train=200, n_test=30)
    cfg = DataConfig(dataset="mnist", data_root=str(tmp_path), normal_class=3, holdout_fraction=0.1)
    s = one_class_split(cfg, 32, 1, seed=0)
    assert len(s.train) + len(s.holdout) == 20  # the 20 training images of class 3
    assert len(s.holdout) == 2
    assert len(s.test) == 30  # the whole test set
    assert s.test_labels.tolist() == [int(c != 3) for c in s.test_classes]
    with pytest.raises(UsageError, match="unknown class 11"):
        one_class_split(DataConfig(dataset="mnist", data_root=str(tmp_path), normal_class=11), 32, 1)


def test_holdout_is_disjoint_from_training(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "mnist", n_train=300, n_test=10)
    s = one_class_split(DataConfig(dataset="mnist", data_root=str(tmp_path), normal_class=0,
                                   holdout_fraction=0.2), 32, 1, seed=5)
    flat_train = {tuple(r.flatten().tolist()) for r in s.train}
    assert not any(tuple(r.flatten().tolist()) in flat_train for r in s.holdout)


def test_folder_dataset_gray_and_rgb(tmp_path: Path) -> None:
    for sub, n in (("train", 25), ("test/normal", 3), ("test/abnormal", 4)):
        (tmp_path / sub).mkdir(parents=True)
        for i in range(n):
            mode = "RGB" if i % 2 else "L"
            Image.new(mode, (20, 20), color=(200, 10, 10) if mode == "RGB" else 200).save(
                tmp_path / sub / f"{i}.png")
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    cfg = DataConfig(dataset="folder", data_root=str(tmp_path), holdout_fraction=0.2)
    with pytest.warns(UserWarning, match="resizing"):
        s = one_class_split(cfg, 16, 3)
    assert s.train.shape[1:] == (3, 16, 16) and len(s.train) + len(s.holdout) == 25
    assert s.test_labels.tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_digits_needs_no_files() -> None:
    s = one_class_split(DataConfig(dataset="digits", normal_class=4), 16, 1)
    assert s.train.shape[1:] == (1, 16, 16) and s.test_labels.sum() > 0
