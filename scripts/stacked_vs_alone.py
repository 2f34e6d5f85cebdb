"""Stacked (``multi.fit_many``) vs one-by-one (``train.fit``) training on a real class, compared.

Trains three seeds of one normal class both ways for one epoch and prints, per seed, the largest
relative difference of any generator weight. In float64 the two paths agree to rounding (they
compute the same thing); in float32 their rounding differs from the first step, and GAN training
can amplify that into different models, just as a different seed would.

    python scripts/stacked_vs_alone.py --dtype 64 --max-train 300
    python scripts/stacked_vs_alone.py --dtype 32 --max-train 300
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from pkdgan.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pkdgan.data.datasets import one_class_split
from pkdgan.training.multi import fit_many
from pkdgan.training.train import fit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fmnist", help="mnist or fmnist")
    p.add_argument("--data-root", default="../shared/data", help="folder with mnist/, fashion-mnist/")
    p.add_argument("--normal-class", type=int, default=1, help="the normal class")
    p.add_argument("--max-train", type=int, default=300, help="normal training images (one epoch)")
    p.add_argument("--width", type=int, default=16, help="model width (the quick preset's)")
    p.add_argument("--dtype", choices=["32", "64"], default="64", help="float32 or float64")
    args = p.parse_args()
    dtype = torch.float64 if args.dtype == "64" else torch.float32
    torch.set_default_dtype(dtype)
    cfgs = [RunConfig(model=ModelConfig(image_size=32, channels=1, width=args.width),
                      data=DataConfig(dataset=args.dataset, data_root=args.data_root,
                                      normal_class=args.normal_class, max_train=args.max_train,
                                      max_test=500),
                      train=TrainConfig(epochs=1, batch_size=1, seed=seed, device="cpu"))
            for seed in (0, 1, 2)]
    splits = [one_class_split(c.data, 32, 1, c.train.seed) for c in cfgs]
    splits = [dataclasses.replace(s, train=s.train.to(dtype), holdout=s.holdout.to(dtype),
                                  test=s.test.to(dtype)) for s in splits]
    stacked = fit_many(cfgs, splits, progress=False)
    for c, s, r in zip(cfgs, splits, stacked, strict=True):
        alone, info = fit(c, s, progress=False)
        a, b = r.model.generator.state_dict(), alone.generator.state_dict()
        rel = max(((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-30)).item()
                  for k in b if b[k].is_floating_point())
        print(f"seed {c.train.seed}: {len(s.train)} images, float{args.dtype}: max relative weight "
              f"difference {rel:.3e} (D re-inits stacked {r.info.get('d_reinits')}, alone "
              f"{info.get('d_reinits')})")


if __name__ == "__main__":
    main()
