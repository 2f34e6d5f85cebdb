"""A small MVTec AD-style dataset made from real images we ship: a "fabric" of scikit-learn's
handwritten digits (8x8 tiles on a 64x64 grid, the same few digits in every image, placed at
random) with pasted defects and their masks.

Defect types: ``scratch`` (a bright line a few pixels wide), ``stain`` (a dark elliptic blob),
``patch`` (a square cut from another image, turned a quarter). The mask marks exactly the
pixels a defect changed, so pixel metrics have a true answer. Seeded; used by the tests and by
``scripts/make_mvtec_folder.py`` (the README's inspection walk-through).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

SIZE = 64
TILE = 8
DEFECTS = ("patch", "scratch", "stain")

Defect = Callable[[np.ndarray, np.random.Generator, np.ndarray], np.ndarray]


def _tiles(digits: tuple[int, ...] = (0, 1, 7)) -> np.ndarray:
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.isin(d.target, digits)
    return np.round(d.images[keep] * (255.0 / 16.0)).astype(np.uint8)


def fabric(rng: np.random.Generator, tiles: np.ndarray) -> np.ndarray:
    """One normal (SIZE, SIZE) uint8 image: a grid of random digit tiles."""
    n = SIZE // TILE
    picks = tiles[rng.integers(0, len(tiles), n * n)]
    return picks.reshape(n, n, TILE, TILE).transpose(0, 2, 1, 3).reshape(SIZE, SIZE)


def scratch(img: np.ndarray, rng: np.random.Generator, _: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(16, 48, 2)
    dist = np.abs((yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle))
    along = np.abs((yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle))
    out = img.copy()
    out[(dist < rng.uniform(1.0, 2.0)) & (along < rng.uniform(10, 20))] = 255
    return out


def stain(img: np.ndarray, rng: np.random.Generator, _: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cy, cx = rng.uniform(14, 50, 2)
    ry, rx = rng.uniform(4, 9, 2)
    out = img.copy()
    out[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = 40
    return out


def patch(img: np.ndarray, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    p = int(rng.integers(12, 20))
    sy, sx, dy, dx = (int(v) for v in rng.integers(0, SIZE - p, 4))
    out = img.copy()
    out[dy:dy + p, dx:dx + p] = np.rot90(donor[sy:sy + p, sx:sx + p])
    return out


DEFECT_MAKERS: dict[str, Defect] = {"patch": patch, "scratch": scratch, "stain": stain}


def _save(a: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_mvtec_folder(root: Path, seed: int = 0, n_train: int = 120, n_good: int = 20,
                      n_defect: int = 12) -> Path:
    """Write ``root/train/good``, ``root/test/{good,<defect>}``, ``root/ground_truth/<defect>``."""
    rng = np.random.default_rng(seed)
    tiles = _tiles()
    for i in range(n_train):
        _save(fabric(rng, tiles), root / "train" / "good" / f"{i:03d}.png")
    for i in range(n_good):
        _save(fabric(rng, tiles), root / "test" / "good" / f"{i:03d}.png")
    for name in DEFECTS:
        for i in range(n_defect):
            img, donor = fabric(rng, tiles), fabric(rng, tiles)
            bad = img
            while np.array_equal(bad, img):  # a defect must change something
                bad = DEFECT_MAKERS[name](img, rng, donor)
            _save(bad, root / "test" / name / f"{i:03d}.png")
            _save(np.where(bad != img, 255, 0).astype(np.uint8),
                  root / "ground_truth" / name / f"{i:03d}_mask.png")
    return root
