"""Synthetic anomalies made from held-out normal images, for choosing a score kind without labels.

The idea is anomalib's "synthetic" validation split: corrupt normal images in ways real
anomalies differ (pixel noise, lost detail, global intensity and contrast changes, scrambled
structure, foreign patches, wrong orientation, small defects, colour casts) and see which
score notices.
The corruptions are generic on purpose: they stand in for anomalies nobody has labelled, so
none is tuned to a dataset. Seeded; the input images are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pkdgan.core.errors import DataError

Corruption = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
MIN_PER_CORRUPTION = 32  # small held-out slices are corrupted several times over


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _sign(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=g).float() * 2 - 1


def noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Gaussian pixel noise, std 0.1-0.3 of the [-1, 1] range."""
    sigma = _per_image(_uniform(g, len(x), 0.1, 0.3))
    return x + sigma * torch.randn(x.shape, generator=g)


def blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Gaussian blur, sigma 1-2 pixels (one sigma per call; lost fine detail)."""
    sigma = float(_uniform(g, 1, 1.0, 2.0))
    r = 3
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=x.shape[1])
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.transpose(-1, -2), groups=x.shape[1])


def contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Contrast about each image's mean scaled down (x0.3-0.6) or up (x1.5-2.5)."""
    n = len(x)
    factor = torch.where(torch.rand(n, generator=g) < 0.5, _uniform(g, n, 0.3, 0.6), _uniform(g, n, 1.5, 2.5))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_image(factor) + mean


def brightness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A global intensity shift of +-0.3-0.6."""
    return x + _per_image(_sign(g, len(x)) * _uniform(g, len(x), 0.3, 0.6))


def patch_shuffle(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The image cut into a 4x4 grid of tiles, tiles shuffled: local statistics kept, structure lost."""
    n, c, s, _ = x.shape
    t = s // 4
    tiles = x.reshape(n, c, 4, t, 4, t).permute(0, 2, 4, 1, 3, 5).reshape(n, 16, c, t, t)
    perm = torch.argsort(torch.rand(n, 16, generator=g), dim=1)
    tiles = tiles[torch.arange(n)[:, None], perm]
    return tiles.reshape(n, 4, 4, c, t, t).permute(0, 3, 1, 4, 2, 5).reshape(n, c, s, s)


def cut_paste(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A patch (1/4-1/2 of the side) of another image pasted at a random place (CutPaste)."""
    n, _, s, _ = x.shape
    out = x.clone()
    donors = torch.randint(0, n, (n,), generator=g)
    for i in range(n):
        p = int(torch.randint(s // 4, s // 2 + 1, (1,), generator=g))
        sy, sx, dy, dx = (int(v) for v in torch.randint(0, s - p + 1, (4,), generator=g))
        out[i, :, dy : dy + p, dx : dx + p] = x[donors[i], :, sy : sy + p, sx : sx + p]
    return out


def flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Upside down, or rotated a quarter turn: the right content in the wrong orientation."""
    rotate = torch.rand(len(x), generator=g) < 0.5
    return torch.where(_per_image(rotate), torch.rot90(x, 1, (2, 3)), torch.flip(x, (2,)))


def spot(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One small square defect (1/10-1/6 of the side), black or white: a local flaw."""
    n, _, s, _ = x.shape
    out = x.clone()
    values = _sign(g, n)
    for i in range(n):
        p = int(torch.randint(max(2, s // 10), max(3, s // 6) + 1, (1,), generator=g))
        y, xx = (int(v) for v in torch.randint(0, s - p + 1, (2,), generator=g))
        out[i, :, y : y + p, xx : xx + p] = values[i]
    return out


def colour(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A colour cast: each channel's intensity shifted by its own +-0.2-0.5 (RGB); a tone curve
    (gamma 0.4-0.6 or 1.7-2.5 on [0, 1]) for grey images, which have no colour to change.

    Like brightness and contrast, a change that per-image normalisation can hide (issue 30)."""
    n, c = x.shape[:2]
    if c > 1:
        shift = _sign(g, n * c) * _uniform(g, n * c, 0.2, 0.5)
        return x + shift.view(n, c, 1, 1)
    gamma = torch.where(torch.rand(n, generator=g) < 0.5, _uniform(g, n, 0.4, 0.6), _uniform(g, n, 1.7, 2.5))
    unit = ((x + 1) / 2).clamp(0, 1)
    return unit ** _per_image(gamma) * 2 - 1


# appended at the end: the corruptions before it draw the same random numbers as before it was added
CORRUPTIONS: dict[str, Corruption] = {
    "noise": noise, "blur": blur, "contrast": contrast, "brightness": brightness,
    "patch_shuffle": patch_shuffle, "cut_paste": cut_paste, "flip": flip, "spot": spot,
    "colour": colour,
}


def synthetic_anomalies(x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """(corrupted images, corruption index per image, corruption names).

    Every corruption is applied to every image of ``x`` (repeated until each corruption has at
    least ``MIN_PER_CORRUPTION`` images), so each contributes equally; results are clamped to
    the model's [-1, 1] range.
    """
    if x.ndim != 4 or len(x) == 0:
        raise DataError(f"synthetic anomalies need held-out images (N, C, S, S), got shape {tuple(x.shape)}")
    if x.shape[-1] % 4 or x.shape[-1] != x.shape[-2]:
        raise DataError("synthetic anomalies need square images with a side divisible by 4, "
                        f"got {tuple(x.shape)}")
    g = torch.Generator().manual_seed(seed)
    base = x.detach().float().cpu()
    base = base.repeat(math.ceil(MIN_PER_CORRUPTION / len(base)), 1, 1, 1)
    names = list(CORRUPTIONS)
    out = [CORRUPTIONS[name](base, g).clamp(-1.0, 1.0) for name in names]
    which = np.repeat(np.arange(len(names)), len(base))
    return torch.cat(out), which, names
