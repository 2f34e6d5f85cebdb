"""Image files without torch: finding them and decoding one to uint8 pixels. The torch-free
predict path (``deploy.lean``) and the tensor reader (``images``) share these, so both see
the same pixels and raise the same one-line errors."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pkdgan.core.errors import DataError, UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted; symlinked folders not followed); other
    files are skipped. ``os.walk``: one directory scan instead of a stat per entry."""
    if not folder.is_dir():
        raise DataError(f"missing folder: {folder}")
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                f = os.path.join(root, name)
                if os.path.isfile(f):
                    files.append(Path(f))
    if not files:
        raise DataError(f"no image files in {folder}")
    return sorted(files)


def expand_paths(items: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (recursive, sorted): what
    ``predict`` and the API score."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += list_images(p)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"no such file or folder: {p}")
    if not out:
        raise UsageError("no images given")
    return out


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
