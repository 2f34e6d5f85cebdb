"""Where an image is anomalous: anomaly maps, and the pixel metrics of MVTec AD.

The map is the per-pixel reconstruction error ``|x - x_hat|`` (mean over channels), smoothed
with a Gaussian whose width scales with the image (``sigma = size / 32`` pixels) and brought
back to the image's original size bilinearly. It depends on its own image alone. The latent
score has no spatial extent of its own; a map derived from it (e.g. its gradient with respect
to the input) is not offered until it measures better than this one.

Metrics, computed over every test image that has a mask or is normal (an all-zero mask):

- pixel AUROC: every pixel a sample, defect pixels positive;
- PRO (per-region overlap, Bergmann et al., MVTec AD, 2021): for each threshold, the mean over
  connected defect regions of the fraction of the region above it, against the false-positive
  rate on normal pixels; the area under that curve up to ``PRO_MAX_FPR`` (30 %), divided by it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from pkdgan.models.edegan import score_batches

PRO_MAX_FPR = 0.3
PRO_STEPS = 300  # FPR grid points in [0, PRO_MAX_FPR]


def smoothing_sigma(image_size: int) -> float:
    return image_size / 32.0


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """maps (N, 1, S, S) blurred with a separable Gaussian (reflect padding)."""
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=maps.dtype) ** 2 / (2 * sigma * sigma))
    k = (k / k.sum()).view(1, 1, 1, -1)
    y = F.conv2d(F.pad(maps, (r, r, 0, 0), mode="reflect"), k)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.transpose(-1, -2))


def maps_from(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """(N, S, S) maps of images and their reconstructions (both (N, C, S, S))."""
    err = (x.to(x_hat.device) - x_hat).abs().mean(dim=1, keepdim=True)
    return _gaussian_blur(err.float().cpu(), smoothing_sigma(x.shape[-1]))[:, 0]


@torch.no_grad()
def anomaly_maps(generator: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, S, S) smoothed reconstruction-error maps at the model's size, in eval mode."""
    was_training = generator.training
    generator.eval()
    out = [maps_from(x[i:i + batch_size], x_hat) for (_, _, x_hat), i in
           zip(score_batches(generator, x, batch_size), range(0, len(x), batch_size), strict=True)]
    generator.train(was_training)
    return torch.cat(out) if out else torch.empty(0, *x.shape[-2:])


MAP_FULL_SCALE = 0.5  # a map value (mean |error| in [-1, 1] units) shown at full colour


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3) ``image`` with ``amap`` (H, W) as a heat map on a fixed scale (so
    overlays of different images compare), blended by ``alpha`` where the map is hot."""
    from matplotlib import colormaps

    level = np.clip(amap / MAP_FULL_SCALE, 0.0, 1.0)
    heat = colormaps["inferno"](level)[..., :3] * 255.0
    weight = alpha * level[..., None]
    rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    return np.round(rgb * (1 - weight) + heat * weight).astype(np.uint8)


def to_original_sizes(maps: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Each map resized (bilinearly) to its image's original (H, W)."""
    return [F.interpolate(m[None, None], size=tuple(s), mode="bilinear", align_corners=False)[0, 0].numpy()
            if tuple(m.shape) != tuple(s) else m.numpy() for m, s in zip(maps, sizes, strict=True)]


def pixel_auroc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    values = np.concatenate([m.ravel() for m in maps])
    truth = np.concatenate([k.ravel() for k in masks]).astype(bool)
    return float(roc_auc_score(truth, values))


def _regions(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Region id of every pixel (-1 = normal) over all images, and each region's size."""
    from scipy import ndimage

    ids, offset = [], 0
    for k in masks:
        lab, n = ndimage.label(k > 0)
        ids.append(np.where(lab > 0, lab - 1 + offset, -1).ravel())
        offset += n
    region = np.concatenate(ids)
    return region, np.bincount(region[region >= 0], minlength=offset)


def pro_curve(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_fpr: float = PRO_MAX_FPR,
              steps: int = PRO_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, mean per-region overlap) at thresholds that put the normal pixels' FPR on a grid
    of ``steps`` points in [0, max_fpr] (quantiles of the normal pixels' values)."""
    values = np.concatenate([m.ravel() for m in maps]).astype(np.float64)
    region, sizes = _regions(masks)
    if len(sizes) == 0:
        raise ValueError("PRO needs at least one defect region")
    normal = np.sort(values[region < 0])
    if len(normal) == 0:
        raise ValueError("PRO needs normal pixels")
    grid = np.linspace(0.0, max_fpr, steps + 1)
    # threshold t_i: the value above which a fraction grid[i] of normal pixels lies
    idx = np.clip(np.ceil((1 - grid) * len(normal)).astype(int) - 1, 0, len(normal) - 1)
    thresholds = normal[idx]
    thresholds[0] = np.nextafter(normal[-1], np.inf)  # FPR 0: above every normal pixel
    fpr = (len(normal) - np.searchsorted(normal, thresholds, side="right")) / len(normal)
    defect = region >= 0
    dvals, dreg = values[defect], region[defect]
    order = np.argsort(dvals)
    dvals, dreg = dvals[order], dreg[order]
    overlap = np.empty(len(thresholds))
    for i, t in enumerate(thresholds):
        above = dreg[np.searchsorted(dvals, t, side="right"):]
        overlap[i] = float(np.mean(np.bincount(above, minlength=len(sizes)) / sizes))
    return fpr, overlap


def pro_score(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_fpr: float = PRO_MAX_FPR,
              steps: int = PRO_STEPS) -> float:
    """Area under the PRO curve for FPR in [0, max_fpr], normalised to [0, 1]."""
    fpr, overlap = pro_curve(maps, masks, max_fpr, steps)
    keep = fpr <= max_fpr
    fpr, overlap = fpr[keep], overlap[keep]
    if fpr[-1] < max_fpr:  # extend flat to the limit (ties can stop the grid short of it)
        fpr, overlap = np.r_[fpr, max_fpr], np.r_[overlap, overlap[-1]]
    return float(np.trapezoid(overlap, fpr) / max_fpr)


def per_group_auroc(scores: np.ndarray, groups: Sequence[str], normal: str = "good") -> dict[str, float]:
    """Image AUROC of each defect type against the normal test images."""
    groups_a = np.asarray(groups)
    neg = scores[groups_a == normal]
    out = {}
    for g in sorted(set(groups) - {normal}):
        pos = scores[groups_a == g]
        out[g] = float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))
    return out
