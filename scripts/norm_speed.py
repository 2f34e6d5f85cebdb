"""Issue 30: what a training step costs per normalisation and batch size (images/s of one G+D
step, width 64, random 32x32 pixels, one thread, fp32), and the seconds one class epoch would
take at that rate: CIFAR-10-shaped (3 channels, 4,750 images a class) by default, MNIST /
Fashion-MNIST-shaped with ``--channels 1 --epoch-images 5700``. A probe for the docs' cost
figures, not a benchmark of the whole loop (no data loading, no scoring).

    python scripts/norm_speed.py
    python scripts/norm_speed.py --channels 1 --epoch-images 5700 --norms instance --batches 64 16
"""

from __future__ import annotations

import argparse
import time

import torch

from pkdgan.core.config import LossWeights, ModelConfig, TrainConfig
from pkdgan.training.train import GanState, gan_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--epoch-images", type=int, default=4750)
    p.add_argument("--norms", nargs="+", default=["batch", "instance"])
    p.add_argument("--batches", type=int, nargs="+", default=[256, 64, 16, 1])
    a = p.parse_args()
    torch.set_num_threads(1)
    for norm in a.norms:
        for bs in a.batches:
            st = GanState.create(ModelConfig(channels=a.channels, norm=norm),
                                 TrainConfig(batch_size=bs), torch.device("cpu"))
            x = torch.randn(bs, a.channels, 32, 32)
            steps = max(2, 512 // bs) if bs > 1 else 30
            gan_step(st, x, LossWeights(), 1e-5)  # warm-up
            t0 = time.perf_counter()
            for _ in range(steps):
                gan_step(st, x, LossWeights(), 1e-5)
            rate = steps * bs / (time.perf_counter() - t0)
            print(f"{norm:8s} batch {bs:3d}: {rate:6.0f} images/s, {a.epoch_images / rate:5.0f} s per epoch",
                  flush=True)


if __name__ == "__main__":
    main()
