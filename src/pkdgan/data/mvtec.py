"""MVTec AD-style folders: defect types from sub-folder names, pixel masks where they exist.

    ROOT/train/good/*.png                       normal training images
    ROOT/test/good/*.png                        normal test images
    ROOT/test/<defect>/*.png                    anomalous test images, one folder per defect type
    ROOT/ground_truth/<defect>/<name>_mask.png  optional: the defect's pixels (non-zero), same size

Images may have any size; models train at the configured size and keep each test image's
original size, so anomaly maps are brought back to it. Every inconsistency is one ``DataError``
line naming the file, found before any training: a mask whose image is missing, an image
without a mask where the other defect images have one, a mask whose size is not its image's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pkdgan.core.errors import DataError
from pkdgan.data.image_files import IMAGE_SUFFIXES, list_images

GOOD = "good"
MASK_SUFFIX = "_mask"


def is_mvtec(root: Path) -> bool:
    """The tree has ``train/good`` (the plain layout has images directly in ``train``)."""
    return (root / "train" / GOOD).is_dir()


@dataclass(frozen=True)
class MvtecTree:
    """The files of one MVTec-style dataset, test images good first, then defect types sorted."""

    train: list[Path]
    test: list[Path]
    defects: list[str]  # per test image: GOOD or its defect type
    masks: list[Path | None]  # per test image; None for good images and unmasked defect types

    @property
    def has_masks(self) -> bool:
        return any(m is not None for m in self.masks)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # any decoder error means the same to the user
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def _masks_of(defect: str, images: list[Path], gt: Path) -> list[Path | None]:
    """Each image's mask under ``gt`` (``<stem>_mask.<any image suffix>``), checked."""
    if not gt.is_dir():
        return [None] * len(images)
    masks = {p.stem[: -len(MASK_SUFFIX)]: p for p in sorted(gt.iterdir())
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.stem.endswith(MASK_SUFFIX)}
    stems = {p.stem for p in images}
    for stem, mask in masks.items():
        if stem not in stems:
            raise DataError(f"{mask}: mask without an image (no {defect}/{stem}.* in test/)")
    out: list[Path | None] = []
    for img in images:
        mask = masks.get(img.stem)
        if mask is None:
            raise DataError(f"{img}: no mask {gt / (img.stem + MASK_SUFFIX)}.png, while other "
                            f"{defect} images have one")
        if _image_size(mask) != _image_size(img):
            raise DataError(f"{mask}: mask size {_image_size(mask)} differs from its image's "
                            f"{_image_size(img)}")
        out.append(mask)
    return out


def scan(root: Path) -> MvtecTree:
    """The dataset's files, every consistency check done (no pixel is read beyond sizes)."""
    train = list_images(root / "train" / GOOD)
    test_root, gt_root = root / "test", root / "ground_truth"
    if not test_root.exists():
        warnings.warn(f"no {test_root} folder: the run is calibrated on held-out normal images "
                      "but not evaluated (no AUROC)", stacklevel=2)
        return MvtecTree(train, [], [], [])
    if not (test_root / GOOD).is_dir():
        raise DataError(f"missing folder: {test_root / GOOD} (normal test images)")
    kinds = sorted(d.name for d in test_root.iterdir() if d.is_dir() and d.name != GOOD)
    if not kinds:
        raise DataError(f"{test_root} has no defect folder beside {GOOD}/ (test/<defect>/*.png)")
    if gt_root.is_dir():
        stray = sorted(d.name for d in gt_root.iterdir() if d.is_dir() and d.name not in kinds)
        if stray:
            raise DataError(f"{gt_root / stray[0]}: masks of a defect type with no test/{stray[0]}/ folder")
    good = list_images(test_root / GOOD)
    test, defects, masks = list(good), [GOOD] * len(good), [None] * len(good)
    per_kind = {k: list_images(test_root / k) for k in kinds}
    found = {k: _masks_of(k, per_kind[k], gt_root / k) for k in kinds}
    masked = [k for k in kinds if found[k] and found[k][0] is not None]
    if masked and len(masked) < len(kinds):
        missing = next(k for k in kinds if k not in masked)
        raise DataError(f"{test_root / missing}: no masks in {gt_root / missing}, while "
                        f"{', '.join(masked)} have them")
    for k in kinds:
        test += per_kind[k]
        defects += [k] * len(per_kind[k])
        masks += found[k]
    return MvtecTree(train, test, defects, masks)


def read_mask(path: Path | None, size: tuple[int, int]) -> np.ndarray:
    """A 0/1 uint8 (H, W) mask; all zero for an image without one (``size`` = (H, W))."""
    if path is None:
        return np.zeros(size, np.uint8)
    from PIL import Image

    try:
        with Image.open(path) as im:
            return (np.asarray(im.convert("L")) > 0).astype(np.uint8)
    except Exception as e:
        raise DataError(f"{path}: cannot read mask ({type(e).__name__}: {e})") from None
