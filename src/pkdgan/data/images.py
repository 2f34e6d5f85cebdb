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

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


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
