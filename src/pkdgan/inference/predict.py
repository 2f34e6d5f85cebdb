"""Scoring new images: inputs of every form -> model tensors, per-file predictions, panels.

Inputs are converted exactly as at training (``data.read_images``, the one image reader): files
through Pillow to grayscale or RGB, uint8 arrays scaled to [-1, 1], then padded or resized to
the model's size with one warning. Float arrays and tensors are taken as already preprocessed.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pkdgan.core import runs
from pkdgan.core.errors import UsageError
from pkdgan.data.image_files import expand_paths, read_image
from pkdgan.data.images import read_images, to_tensor

if TYPE_CHECKING:
    from pkdgan.inference.detector import OneClassDetector

PANEL_MIN_SIZE = 96


def infer_channels(X: Any) -> int:
    """Channels of a training input: 3 if it carries colour, else 1."""
    from pkdgan.data.image_files import detect_channels

    if _is_paths(X):
        return detect_channels(expand_paths(_as_path_list(X)))
    arr = X if isinstance(X, torch.Tensor) else np.asarray(X)
    if _is_raw(arr):
        return 3 if arr.ndim == 4 and arr.shape[-1] == 3 else 1
    if arr.ndim != 4:
        raise UsageError(f"float input must be (N, C, H, W) in [-1, 1], got shape {tuple(arr.shape)}")
    return int(arr.shape[1])


def as_images(X: Any, channels: int, image_size: int, resize: str) -> torch.Tensor:
    """Any accepted input -> float32 (N, C, S, S) in [-1, 1].

    Accepted: a file or folder path, a list of paths; uint8 (or integer 0..255) arrays/tensors
    of raw images (N, H, W) or (N, H, W, C); float arrays/tensors already preprocessed
    (N, C, S, S) in [-1, 1], as the exported model's sidecar describes.
    """
    if _is_paths(X):
        return read_files(expand_paths(_as_path_list(X)), channels, image_size, resize)
    arr = X.detach().cpu() if isinstance(X, torch.Tensor) else np.asarray(X)
    if arr.ndim == 0 or len(arr) == 0:
        raise UsageError("no images given")
    if _is_raw(arr):
        return _raw_to_tensor(np.asarray(arr), channels, image_size, resize)
    return _check_preprocessed(torch.as_tensor(arr, dtype=torch.float32), channels, image_size)


def _is_paths(X: Any) -> bool:
    if isinstance(X, (str, Path)):
        return True
    return isinstance(X, (list, tuple)) and len(X) > 0 and all(isinstance(p, (str, Path)) for p in X)


def _as_path_list(X: Any) -> list[str | Path]:
    return [X] if isinstance(X, (str, Path)) else list(X)


def _is_raw(arr: np.ndarray | torch.Tensor) -> bool:
    if isinstance(arr, torch.Tensor):
        return not arr.is_floating_point()
    if arr.dtype == object:
        raise UsageError("inputs must be numeric arrays, tensors or paths")
    return not np.issubdtype(arr.dtype, np.floating)


def _raw_to_tensor(arr: np.ndarray, channels: int, image_size: int, resize: str) -> torch.Tensor:
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3)):
        raise UsageError(f"integer images must be (N, H, W) or (N, H, W, 1|3), got shape {arr.shape}")
    if arr.min() < 0 or arr.max() > 255:
        raise UsageError("integer images must hold pixel values 0..255")
    arr = arr.astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.shape[-1] == 3 and channels == 1:
        arr = _luma(arr)
    elif arr.shape[-1] == 1 and channels == 3:
        arr = np.repeat(arr, 3, axis=-1)
    h, w = arr.shape[1:3]
    if (h, w) != (image_size, image_size):
        warn_resized({(h, w)}, image_size, resize)
    return to_tensor(arr, image_size, resize)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Pillow's ``convert('L')`` in integer arithmetic, so arrays match files bit for bit."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def _check_preprocessed(x: torch.Tensor, channels: int, image_size: int) -> torch.Tensor:
    expected = (channels, image_size, image_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise UsageError(
            f"float input must be preprocessed (N, {channels}, {image_size}, {image_size}) in [-1, 1], "
            f"got shape {tuple(x.shape)}; pass uint8 images (N, H, W[, C]) or paths to convert them"
        )
    if not torch.isfinite(x).all():
        raise UsageError("input contains NaN or Inf")
    if x.min() < -1.0 - 1e-4 or x.max() > 1.0 + 1e-4:
        raise UsageError("float input must lie in [-1, 1] (uint8 pixel / 127.5 - 1)")
    return x.contiguous()


def warn_resized(sizes: set[tuple[int, int]], image_size: int, resize: str) -> None:
    shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:3]) + (" ..." if len(sizes) > 3 else "")
    warnings.warn(f"images of size {shown} converted to {image_size}x{image_size} as at training "
                  f"(resize mode {resize})", stacklevel=3)


def read_files(paths: Sequence[Path], channels: int, image_size: int, resize: str) -> torch.Tensor:
    """Image files -> one tensor; off-size images are announced with one warning."""
    x, sizes = _read(paths, channels, image_size, resize)
    if sizes:
        warn_resized(sizes, image_size, resize)
    return x


def _read(paths: Sequence[Path], channels: int, image_size: int, resize: str
          ) -> tuple[torch.Tensor, set[tuple[int, int]]]:
    x, sizes = read_images(paths, channels, image_size, resize)
    return x, set(sizes) - {(image_size, image_size)}


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict_files(detector: OneClassDetector, paths: Sequence[Path], batch_size: int = 64,
                  panels_dir: Path | None = None, maps_dir: Path | None = None) -> list[dict[str, Any]]:
    """Rows ``{path, score, label}`` (label 1 = anomalous) read and scored in batches.

    With ``panels_dir``, writes one image | reconstruction | difference PNG per input; with
    ``maps_dir``, the image at its own size with its anomaly map as a heat-map overlay
    (``evaluation.pixel``), and the map itself as ``.npy``.
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    cfg = detector.model_config_
    threshold = detector.threshold_
    if threshold is None:
        raise UsageError("this detector has no threshold (no held-out normal scores); "
                         "pass --threshold VALUE")
    rows: list[dict[str, Any]] = []
    off_size: set[tuple[int, int]] = set()
    for chunk in _chunks(paths, batch_size):
        x, sizes = _read(chunk, cfg.channels, cfg.image_size, detector.resize)
        off_size |= sizes
        scores, x_hat = detector.score_and_reconstruct(x)
        for j, (p, s) in enumerate(zip(chunk, scores, strict=True)):
            rows.append({"path": str(p), "score": float(s), "label": int(s > threshold)})
            if panels_dir is not None:
                save_panel(panels_dir / f"{len(rows) - 1:05d}_{p.stem}.png", x[j], x_hat[j])
            if maps_dir is not None:
                save_map(maps_dir / f"{len(rows) - 1:05d}_{p.stem}", p, x[j], x_hat[j])
    if off_size:
        warn_resized(off_size, cfg.image_size, detector.resize)
    return rows


def to_uint8_image(x: torch.Tensor) -> np.ndarray:
    """(C, S, S) in [-1, 1] -> (S, S, 3) uint8."""
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def panel_array(x: torch.Tensor, x_hat: torch.Tensor) -> np.ndarray:
    """image | reconstruction | |difference| side by side, uint8 (S, 3S + 4, 3).

    The difference is the per-pixel mean absolute error on a fixed scale (an error of half
    the value range is white), so panels of different images are comparable.
    """
    diff = (x - x_hat).abs().mean(0, keepdim=True).clamp(0, 1) * 2 - 1
    tiles = [to_uint8_image(x), to_uint8_image(x_hat), to_uint8_image(diff)]
    gap = np.full((x.shape[-2], 2, 3), 128, np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)


def save_map(stem: Path, source: Path, x: torch.Tensor, x_hat: torch.Tensor) -> None:
    """``<stem>_map.png`` (overlay at the file's own size) and ``<stem>_map.npy`` (the map)."""
    from PIL import Image

    from pkdgan.evaluation.pixel import maps_from, overlay, to_original_sizes

    image = read_image(source, 3)
    amap = to_original_sizes(maps_from(x[None].float(), x_hat[None].float()), [image.shape[:2]])[0]
    buf = io.BytesIO()
    Image.fromarray(overlay(image, amap)).save(buf, format="PNG")
    runs.atomic_write_bytes(stem.with_name(stem.name + "_map.png"), buf.getvalue())
    npy = io.BytesIO()
    np.save(npy, amap.astype(np.float32))
    runs.atomic_write_bytes(stem.with_name(stem.name + "_map.npy"), npy.getvalue())


def save_panel(path: Path, x: torch.Tensor, x_hat: torch.Tensor) -> None:
    from PIL import Image

    arr = panel_array(x.detach().cpu().float(), x_hat.detach().cpu().float())
    scale = max(1, math.ceil(PANEL_MIN_SIZE / arr.shape[0]))
    im = Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    runs.atomic_write_bytes(path, buf.getvalue())
