"""Image files and arrays -> float32 tensors (N, C, S, S) in [-1, 1]: the one reader every
dataset layout, ``predict`` and the API share, so training and scoring see the same pixels."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pkdgan.core.errors import DataError
from pkdgan.data.image_files import read_image


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


def read_images(paths: Sequence[Path], channels: int, image_size: int, resize: str
                ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The one image reader: files of any size -> one (N, C, S, S) tensor in [-1, 1], and each
    file's (H, W) (the caller announces any resizing in its own words; maps go back to it)."""
    arrays = [read_image(p, channels) for p in paths]
    sizes = [a.shape[:2] for a in arrays]
    return torch.cat([to_tensor(a[None], image_size, resize) for a in arrays]), sizes


def load_images(paths: list[Path], channels: int, image_size: int, resize: str
                ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Read files of any size into one tensor (and their sizes); resizing is announced once."""
    x, per_image = read_images(paths, channels, image_size, resize)
    sizes = set(per_image)
    if sizes != {(image_size, image_size)}:
        warnings.warn(
            f"resizing images of size(s) {sorted(sizes)[:3]} to {image_size}x{image_size}",
            stacklevel=2,
        )
    return x, per_image
