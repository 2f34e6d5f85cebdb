"""Seeded synthetic folder datasets for choosing anomaly score kinds (docs/scores.md).

Each dataset is a ``pkdgan train --dataset folder`` root: ``train/`` (normal), ``test/normal``
and ``test/abnormal``, 32x32 PNGs. The kinds differ on purpose, so one score kind cannot win
them all by luck:

- ``blobs_stripes`` (gray): smooth Gaussian blobs vs sinusoidal stripes (shape vs texture; the
  issue's case, where the latent score ranks anomalies as *more* normal);
- ``stripes_blobs`` (gray): the reverse, textures normal and blobs anomalous;
- ``color_hue`` (RGB): red discs normal, the same discs in green or blue anomalous (colour only);
- ``local_defect`` (gray): a regular grid pattern, anomalies carry one small 3-5 px spot or
  scratch (small local defect on an otherwise normal image);
- ``global_shift`` (gray): blobs, anomalies are the same kind of blob with raised contrast, or
  lowered contrast on a brighter background (a global intensity change).

Usage: ``python scripts/make_synthetic_folders.py OUT_DIR [--seed 0] [--n-train 200] [--n-test 40]``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
YY, XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)

Maker = Callable[[np.random.Generator], np.ndarray]  # one float image in [0, 1], (H, W[, 3])


def blob(rng: np.random.Generator) -> np.ndarray:
    """One to three smooth Gaussian blobs on a dark background."""
    img = np.zeros((SIZE, SIZE))
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(8, 24, size=2)
        s = rng.uniform(3, 6)
        img += rng.uniform(0.5, 1.0) * np.exp(-((YY - cy) ** 2 + (XX - cx) ** 2) / (2 * s * s))
    return np.clip(img, 0, 1)


def stripes(rng: np.random.Generator) -> np.ndarray:
    """A sinusoidal grating of random frequency, orientation and phase."""
    theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.15, 0.45), rng.uniform(0, 2 * np.pi)
    return 0.5 + 0.5 * np.sin(freq * (XX * np.cos(theta) + YY * np.sin(theta)) * 2 + phase)


def disc(rng: np.random.Generator, channel: int) -> np.ndarray:
    """A soft-edged disc coloured in one RGB channel (plus a little of the others)."""
    cy, cx = rng.uniform(10, 22, size=2)
    r = rng.uniform(5, 9)
    mask = 1 / (1 + np.exp((np.hypot(YY - cy, XX - cx) - r) * 2))
    img = np.full((SIZE, SIZE, 3), 0.1) + rng.uniform(0, 0.05, size=(SIZE, SIZE, 3))
    colour = np.full(3, rng.uniform(0.1, 0.25))
    colour[channel] = rng.uniform(0.7, 1.0)
    return np.clip(img + mask[..., None] * colour, 0, 1)


def grid(rng: np.random.Generator) -> np.ndarray:
    """A regular grid of lines with random period offset and mild noise."""
    period = 6
    oy, ox = rng.integers(0, period, size=2)
    lines = ((YY + oy) % period < 1.5) | ((XX + ox) % period < 1.5)
    return np.clip(0.25 + 0.5 * lines + rng.normal(0, 0.03, (SIZE, SIZE)), 0, 1)


def grid_defect(rng: np.random.Generator) -> np.ndarray:
    """A grid with one small spot or scratch (3-5 px), bright or dark."""
    img = grid(rng)
    y, x = rng.integers(4, SIZE - 8, size=2)
    value = rng.choice([0.0, 1.0])
    if rng.random() < 0.5:
        s = rng.integers(3, 6)
        img[y : y + s, x : x + s] = value
    else:
        length = rng.integers(4, 8)
        for i in range(length):
            img[y + i // 2, x + i] = value
    return img


def shifted_blob(rng: np.random.Generator) -> np.ndarray:
    """A blob image with its global contrast raised (x1.8, saturating) or lowered (x0.45 on a
    background raised to 0.3): the same content, a global intensity change either way."""
    b = blob(rng)
    return np.clip(1.8 * b, 0, 1) if rng.random() < 0.5 else 0.3 + 0.45 * b


DATASETS: dict[str, tuple[Maker, Maker]] = {
    "blobs_stripes": (blob, stripes),
    "stripes_blobs": (stripes, blob),
    "color_hue": (lambda r: disc(r, 0), lambda r: disc(r, int(r.integers(1, 3)))),
    "local_defect": (grid, grid_defect),
    "global_shift": (blob, shifted_blob),
}


def save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)


def make(root: Path, name: str, seed: int, n_train: int, n_test: int) -> Path:
    """Write one dataset under ``root/name``; the same seed gives the same files."""
    normal, abnormal = DATASETS[name]
    rng = np.random.default_rng([seed, sorted(DATASETS).index(name)])
    out = root / name
    for folder, maker, n in (("train", normal, n_train), ("test/normal", normal, n_test),
                             ("test/abnormal", abnormal, n_test)):
        for i in range(n):
            save(maker(rng), out / folder / f"{i:04d}.png")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write the datasets into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-test", type=int, default=40, help="normal and abnormal test images each")
    p.add_argument("--only", nargs="*", choices=sorted(DATASETS), default=sorted(DATASETS))
    args = p.parse_args()
    for name in args.only:
        print(make(args.out, name, args.seed, args.n_train, args.n_test))


if __name__ == "__main__":
    main()
