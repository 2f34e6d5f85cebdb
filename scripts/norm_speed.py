"""Issue 30: what a training step costs per normalisation and batch size (images/s of one G+D
step, width 64, CIFAR-10-shaped 3x32x32 inputs, random pixels, one thread, fp32), and the
seconds one CIFAR-10 class epoch (4,750 images) would take at that rate. A probe for the docs'
cost figures, not a benchmark of the whole loop (no data loading, no scoring).

    python scripts/norm_speed.py
"""

from __future__ import annotations

import time

import torch

from pkdgan.core.config import LossWeights, ModelConfig, TrainConfig
from pkdgan.training.train import GanState, gan_step

EPOCH_IMAGES = 4750


def main() -> None:
    torch.set_num_threads(1)
    for norm in ("batch", "instance"):
        for bs in (256, 64, 16, 1):
            st = GanState.create(ModelConfig(channels=3, norm=norm), TrainConfig(batch_size=bs),
                                 torch.device("cpu"))
            x = torch.randn(bs, 3, 32, 32)
            steps = max(2, 512 // bs) if bs > 1 else 30
            gan_step(st, x, LossWeights(), 1e-5)  # warm-up
            t0 = time.perf_counter()
            for _ in range(steps):
                gan_step(st, x, LossWeights(), 1e-5)
            rate = steps * bs / (time.perf_counter() - t0)
            print(f"{norm:8s} batch {bs:3d}: {rate:6.0f} images/s, {EPOCH_IMAGES / rate:5.0f} s per epoch",
                  flush=True)


if __name__ == "__main__":
    main()
