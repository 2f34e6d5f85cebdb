"""Research probe (issue 10): does one small last batch move a trained model's test AUROC?

An epoch's partial last batch (e.g. 4 images for Fashion-MNIST class 0 at batch 64) updates the
batch-norm running statistics that eval-mode scoring uses, with momentum 0.1. This feeds one
train-mode forward pass of k training images through a finished run's generator (no weight
update) and prints the (latent, reconstruction) test AUROC before and after, for a few k, and
after re-estimating the statistics over every full training batch of 64 ("precise BN").

    python scripts/bn_probe.py RUN_DIR [--data-root DIR]
"""

from __future__ import annotations

import argparse
import copy

import torch

from pkdgan.core.config import DataConfig, from_dict
from pkdgan.data.datasets import one_class_split
from pkdgan.evaluation.metrics import evaluate_scores
from pkdgan.models.edegan import score_both
from pkdgan.training.checkpoints import load_run_generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--data-root", default=None)
    a = p.parse_args()
    cfg, g = load_run_generator(a.run)
    data = cfg["data"] | ({"data_root": a.data_root} if a.data_root else {})
    split = one_class_split(from_dict(DataConfig, data), cfg["model"]["image_size"],
                            cfg["model"]["channels"], cfg["train"]["seed"])

    def auroc(gen: torch.nn.Module) -> tuple[float, float]:
        lat, rec = score_both(gen, split.test)
        return (round(evaluate_scores(lat.numpy(), split.test_labels)["auroc"], 4),
                round(evaluate_scores(rec.numpy(), split.test_labels)["auroc"], 4))

    print("saved model", auroc(g), flush=True)
    precise = copy.deepcopy(g).train()  # "precise BN": statistics over every full training batch
    for m in precise.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    with torch.no_grad():
        for i in range(0, len(split.train) - 63, 64):
            precise(split.train[i:i + 64])
    print("precise batch-norm statistics over all full batches of 64", auroc(precise), flush=True)
    order = torch.Generator().manual_seed(0)
    for k in (4, 4, 4, 59, 64):
        h = copy.deepcopy(g).train()
        idx = torch.randperm(len(split.train), generator=order)[:k]
        with torch.no_grad():
            h(split.train[idx])
        print(f"after one train-mode batch of {k}", auroc(h), flush=True)


if __name__ == "__main__":
    main()
