"""From dataset files to one-class splits of tensors in [-1, 1].

Protocol: the normal class's *training* images are the training set (minus a held-out slice of
normal images used only for thresholds and score statistics); the *whole* test set is scored,
label 1 = any other class. Test labels are never used for anything but the final metrics.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pkdgan.core.config import DataConfig
from pkdgan.core.errors import DataError, UsageError
from pkdgan.data.readers import DATASET_DIRS, load_cifar10, load_idx_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
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


def resolve_data_root(data_root: str | None) -> Path:
    root = data_root or os.environ.get("PKDGAN_DATA")
    if not root:
        raise UsageError("no data root: pass --data-root DIR or set PKDGAN_DATA")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root does not exist or is not a folder: {path}")
    return path


def to_tensor(images: np.ndarray, image_size: int, resize: str = "pad") -> torch.Tensor:
    """Pixel values in [0, 255] (N, H, W[, C]) -> float32 (N, C, S, S) in [-1, 1].

    ``pad`` keeps pixels exact by padding with the background value (28 -> 32 for MNIST) and
    falls back to bilinear resizing when the size difference is odd or the image is larger.
    Non-uint8 arrays are checked, not cast: a NaN or a [0, 1] float image would otherwise turn
    silently into garbage.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or 0 in images.shape[1:3]:
        raise DataError(f"expected images (N, H, W[, 1|3]), got shape {images.shape}")
    if images.dtype != np.uint8:
        if images.dtype.kind not in "biuf":
            raise DataError(f"images must be a numeric array, got dtype {images.dtype}")
        if not np.isfinite(images).all():
            raise DataError("images contain NaN or Inf values")
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(
                f"pixel values must be in [0, 255], got [{images.min()}, {images.max()}]"
            )
    x = torch.from_numpy(np.array(images, dtype=np.float32, copy=True)).permute(0, 3, 1, 2)
    x = x.div_(127.5).sub_(1.0)
    h, w = x.shape[-2:]
    if (h, w) == (image_size, image_size):
        return x.contiguous()
    dh, dw = image_size - h, image_size - w
    if resize == "pad" and dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0:
        return F.pad(x, (dw // 2, dw // 2, dh // 2, dh // 2), value=-1.0).contiguous()
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                      align_corners=False, antialias=h > image_size or w > image_size)
    return x.clamp_(-1.0, 1.0).contiguous()


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


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); other files are skipped."""
    if not folder.is_dir():
        raise DataError(f"missing folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no image files in {folder}")
    return files


def read_image(path: Path, channels: int) -> np.ndarray:
    """One image file -> uint8 (H, W, channels); 16-bit, float and palette images are converted."""
    try:
        with warnings.catch_warnings():
            # PIL's "corrupt EXIF"-style notes would break the one-line error contract
            warnings.simplefilter("ignore", UserWarning)
            arr, finite = _decode_image(path, channels)
    except Exception as e:  # decoders of untrusted files raise many types; all mean "corrupt"
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    if not finite:
        raise DataError(f"{path}: image contains NaN or Inf pixel values")
    return arr[..., None] if arr.ndim == 2 else arr


def _decode_image(path: Path, channels: int) -> tuple[np.ndarray, bool]:
    from PIL import Image

    finite = True
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            finite = bool(np.isfinite(arr).all())
            arr = np.nan_to_num(arr)
            peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8))
        im = im.convert("L" if channels == 1 else "RGB")
        return np.asarray(im, dtype=np.uint8), finite


def detect_channels(paths: list[Path]) -> int:
    """3 if any image carries colour (RGB, RGBA, palette, CMYK...), else 1."""
    from PIL import Image

    for p in paths:
        try:
            with Image.open(p) as im:
                if im.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                    return 3
        except Exception:
            continue  # read_image reports the broken file with its path
    return 1


def read_images(paths: Sequence[Path], channels: int, image_size: int, resize: str
                ) -> tuple[torch.Tensor, set[tuple[int, int]]]:
    """The one image reader: files of any size -> one (N, C, S, S) tensor in [-1, 1], and the
    sizes the files had (the caller announces any resizing in its own words)."""
    arrays = [read_image(p, channels) for p in paths]
    sizes = {a.shape[:2] for a in arrays}
    return torch.cat([to_tensor(a[None], image_size, resize) for a in arrays]), sizes


def load_images(paths: list[Path], channels: int, image_size: int, resize: str) -> torch.Tensor:
    """Read files of any size into one tensor; resizing is announced once."""
    x, sizes = read_images(paths, channels, image_size, resize)
    if sizes != {(image_size, image_size)}:
        warnings.warn(
            f"resizing images of size(s) {sorted(sizes)[:3]} to {image_size}x{image_size}",
            stacklevel=2,
        )
    return x


def folder_split(cfg: DataConfig, image_size: int, channels: int, seed: int = 0
                 ) -> OneClassSplit:
    """``root/train`` normal images; ``root/test/normal`` and ``root/test/abnormal``.

    Without ``root/test`` at all the split has no test set: the run is trained and calibrated
    on held-out normal images but not evaluated (a practitioner may have no labelled anomalies).
    A ``root/test`` lacking one of its two folders is an error, as it is more likely a mistake.
    """
    root = resolve_data_root(cfg.data_root)
    train_paths = list_images(root / "train")
    if (root / "test").exists():
        normal_paths = list_images(root / "test" / "normal")
        abnormal_paths = list_images(root / "test" / "abnormal")
    else:
        warnings.warn(f"no {root / 'test'} folder: the run is calibrated on held-out normal "
                      "images but not evaluated (no AUROC)", stacklevel=2)
        normal_paths, abnormal_paths = [], []
    train, holdout = _holdout(
        load_images(train_paths, channels, image_size, cfg.resize), cfg.holdout_fraction, seed
    )
    test = (load_images(normal_paths + abnormal_paths, channels, image_size, cfg.resize)
            if normal_paths or abnormal_paths else train.new_empty((0, *train.shape[1:])))
    labels = np.r_[np.zeros(len(normal_paths)), np.ones(len(abnormal_paths))].astype(np.int64)
    return OneClassSplit(train, holdout, test, labels, labels.copy())


def dataset_channels(cfg: DataConfig) -> int:
    if cfg.dataset == "folder":
        return detect_channels(list_images(resolve_data_root(cfg.data_root) / "train"))
    return DATASET_CHANNELS[cfg.dataset]
