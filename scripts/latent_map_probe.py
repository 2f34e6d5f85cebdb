"""Issue 33: does a map derived from the latent score localise defects better than the smoothed
reconstruction error? Compares, on an MVTec-style run with masks, the pixel AUROC and PRO of

- ``reconstruction``: the run's own map (``evaluation.pixel.anomaly_maps``);
- ``latent-gradient``: |d latent score / d x| summed over channels, smoothed the same way (how
  much each pixel moves the latent distance of its own image).

    python scripts/latent_map_probe.py RUN --data-root DATA

Prints one JSON line; test masks are used to *measure* the two maps, nothing is chosen per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, from_dict
from pkdgan.data.datasets import one_class_split
from pkdgan.evaluation import pixel
from pkdgan.training.checkpoints import load_run_generator


def latent_gradient_maps(generator: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    generator.eval()
    out = []
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        z, _, z_hat = generator(xi)
        (z - z_hat).pow(2).mean().backward()
        g = xi.grad.abs().sum(dim=1, keepdim=True)
        out.append(pixel._gaussian_blur(g.detach(), pixel.smoothing_sigma(x.shape[-1]))[:, 0])
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data-root", default=None)
    a = p.parse_args()
    cfg = runs.read_json(a.run / runs.CONFIG)
    data = dict(cfg["data"]) | ({"data_root": a.data_root} if a.data_root else {})
    split = one_class_split(from_dict(DataConfig, data), cfg["model"]["image_size"],
                            cfg["model"]["channels"], cfg["train"]["seed"])
    generator = load_run_generator(a.run)[1]
    rows = {}
    for name, maps in (("reconstruction", pixel.anomaly_maps(generator, split.test)),
                       ("latent-gradient", latent_gradient_maps(generator, split.test))):
        full = pixel.to_original_sizes(maps, split.test_sizes)
        rows[name] = {"pixel_auroc": round(pixel.pixel_auroc(full, split.test_masks), 4),
                      "pro": round(pixel.pro_score(full, split.test_masks), 4)}
    print(json.dumps({"run": str(a.run), "maps": rows}))


if __name__ == "__main__":
    main()
