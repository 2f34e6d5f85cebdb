"""From dataset files to one-class splits of tensors in [-1, 1].

Protocol: the normal class's *training* images are the training set (minus a held-out slice of
normal images used only for thresholds and score statistics); the *whole* test set is scored,
label 1 = any other class. Test labels are never used for anything but the final metrics.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pkdgan.core.config import DataConfig
from pkdgan.core.errors import DataError, UsageError
from pkdgan.data.image_files import detect_channels, list_images
from pkdgan.data.images import load_images, to_tensor
from pkdgan.data.mvtec import GOOD, is_mvtec, read_mask, scan
from pkdgan.data.readers import DATASET_DIRS, load_cifar10, load_idx_dataset

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "digits": [str(i) for i in range(10)],
    "fmnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}
DATASET_CHANNELS = {"mnist": 1, "fmnist": 1, "digits": 1, "cifar10": 3}


@dataclass
class OneClassSplit:
    """Tensors (N, C, S, S) in [-1, 1]; ``test_labels`` 1 = anomalous, in test-set order."""

    train: torch.Tensor
    holdout: torch.Tensor
    test: torch.Tensor
    test_labels: np.ndarray
    test_classes: np.ndarray
    note: str = ""
    # MVTec-style folders (``data.mvtec``): each test image's defect type ("good" = normal), its
    # original (H, W), and its 0/1 pixel mask at that size when the dataset has masks
    test_groups: list[str] | None = None
    test_sizes: list[tuple[int, int]] | None = None
    test_masks: list[np.ndarray] | None = None


def resolve_data_root(data_root: str | None) -> Path:
    root = data_root or os.environ.get("PKDGAN_DATA")
    if not root:
        raise UsageError("no data root: pass --data-root DIR or set PKDGAN_DATA")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root does not exist or is not a folder: {path}")
    return path


def load_arrays(dataset: str, data_root: str | None) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, test_x, test_y) uint8 arrays for a labelled dataset."""
    if dataset == "digits":
        return _digits()
    root = resolve_data_root(data_root)
    folder = root / DATASET_DIRS[dataset]
    if not folder.is_dir():
        raise DataError(
            f"{folder} not found: the data root must hold {DATASET_DIRS[dataset]}/ "
            "(use --download to fetch it)"
        )
    if dataset == "cifar10":
        return load_cifar10(str(folder))
    return load_idx_dataset(str(folder))


def _digits() -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled 8x8 digits (1,797 real images) with a fixed 2:1 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target.astype(np.uint8)
    test = np.arange(len(x)) % 3 == 0
    return x[~test], y[~test], x[test], y[test]


def one_class_split(cfg: DataConfig, image_size: int, channels: int, seed: int = 0
                    ) -> OneClassSplit:
    """Build the one-class protocol for ``cfg`` (folders included)."""
    if cfg.dataset == "folder":
        return folder_split(cfg, image_size, channels, seed)
    if channels != DATASET_CHANNELS[cfg.dataset]:
        raise UsageError(
            f"{cfg.dataset} has {DATASET_CHANNELS[cfg.dataset]} channel(s), model expects {channels}"
        )
    xtr, ytr, xte, yte = load_arrays(cfg.dataset, cfg.data_root)
    classes = sorted(int(c) for c in np.unique(ytr))
    if cfg.normal_class not in classes:
        raise UsageError(
            f"unknown class {cfg.normal_class} for {cfg.dataset}; classes are "
            f"{classes[0]}..{classes[-1]}"
        )
    normal = xtr[ytr == cfg.normal_class]
    if cfg.max_train is not None:
        normal = normal[: cfg.max_train]
    if cfg.max_test is not None:
        xte, yte = xte[: cfg.max_test], yte[: cfg.max_test]
    if len(np.unique(yte == cfg.normal_class)) != 2:  # checked now, not after hours of training
        raise DataError(
            f"the {cfg.dataset} test set ({len(yte)} images) needs both normal (class "
            f"{cfg.normal_class}) and anomalous images for AUROC; raise --max-test"
        )
    train, holdout = _holdout(to_tensor(normal, image_size, cfg.resize), cfg.holdout_fraction, seed)
    note = ""
    if cfg.dataset == "cifar10" and len(xte) < 10000:
        note = f"CIFAR-10 test set: the first {len(xte)} test images only (not the full 10,000)"
    return OneClassSplit(
        train=train,
        holdout=holdout,
        test=to_tensor(xte, image_size, cfg.resize),
        test_labels=(yte != cfg.normal_class).astype(np.int64),
        test_classes=yte.astype(np.int64),
        note=note,
    )


def _holdout(x: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split off a seeded random slice of normal training images that training never sees."""
    n_hold = int(round(len(x) * fraction))
    if fraction > 0 and len(x) >= 20:
        n_hold = max(n_hold, 1)
    else:
        n_hold = 0
    if len(x) - n_hold < 1:
        raise DataError("not enough normal training images after the held-out split")
    train, hold = holdout_indices(len(x), n_hold, seed)
    return x[train].contiguous(), x[hold].contiguous()


def holdout_indices(n: int, n_hold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The one held-out split (run folders and the API alike): (train, held-out) indices from
    a permutation seeded apart from training's own seed, so the choice never shifts with it."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    return perm[n_hold:], perm[:n_hold]


def folder_split(cfg: DataConfig, image_size: int, channels: int, seed: int = 0
                 ) -> OneClassSplit:
    """``root/train`` normal images; ``root/test/normal`` and ``root/test/abnormal``.

    Without ``root/test`` at all the split has no test set: the run is trained and calibrated
    on held-out normal images but not evaluated (a practitioner may have no labelled anomalies).
    A ``root/test`` lacking one of its two folders is an error, as it is more likely a mistake.
    """
    root = resolve_data_root(cfg.data_root)
    if cfg.layout == "mvtec" or (cfg.layout == "auto" and is_mvtec(root)):
        return mvtec_split(cfg, root, image_size, channels, seed)
    train_paths = list_images(root / "train")
    if (root / "test").exists():
        normal_paths = list_images(root / "test" / "normal")
        abnormal_paths = list_images(root / "test" / "abnormal")
    else:
        warnings.warn(f"no {root / 'test'} folder: the run is calibrated on held-out normal "
                      "images but not evaluated (no AUROC)", stacklevel=2)
        normal_paths, abnormal_paths = [], []
    train, holdout = _holdout(
        load_images(train_paths, channels, image_size, cfg.resize)[0], cfg.holdout_fraction, seed
    )
    test = (load_images(normal_paths + abnormal_paths, channels, image_size, cfg.resize)[0]
            if normal_paths or abnormal_paths else train.new_empty((0, *train.shape[1:])))
    labels = np.r_[np.zeros(len(normal_paths)), np.ones(len(abnormal_paths))].astype(np.int64)
    return OneClassSplit(train, holdout, test, labels, labels.copy())


def mvtec_split(cfg: DataConfig, root: Path, image_size: int, channels: int, seed: int
                ) -> OneClassSplit:
    """An MVTec-style tree (``data.mvtec``): defect types as test groups, masks when present."""
    if not is_mvtec(root):
        raise DataError(f"{root} is not an MVTec-style folder: missing {root / 'train' / GOOD}")
    tree = scan(root)
    train, holdout = _holdout(load_images(tree.train, channels, image_size, cfg.resize)[0],
                              cfg.holdout_fraction, seed)
    if not tree.test:
        empty = np.zeros(0, np.int64)
        return OneClassSplit(train, holdout, train.new_empty((0, *train.shape[1:])), empty, empty.copy())
    test, sizes = load_images(tree.test, channels, image_size, cfg.resize)
    labels = np.array([d != GOOD for d in tree.defects], np.int64)
    kinds = sorted(set(tree.defects) - {GOOD})
    classes = np.array([0 if d == GOOD else 1 + kinds.index(d) for d in tree.defects], np.int64)
    masks = ([read_mask(m, s) for m, s in zip(tree.masks, sizes, strict=True)]
             if tree.has_masks else None)
    return OneClassSplit(train, holdout, test, labels, classes, test_groups=list(tree.defects),
                         test_sizes=sizes, test_masks=masks)


def dataset_channels(cfg: DataConfig) -> int:
    if cfg.dataset == "folder":
        root = resolve_data_root(cfg.data_root)
        return detect_channels(list_images(root / "train" / GOOD if is_mvtec(root) else root / "train"))
    return DATASET_CHANNELS[cfg.dataset]
