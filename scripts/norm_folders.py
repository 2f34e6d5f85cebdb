"""Issue 30, item 4: which normalisation should a user's own folder get by default?

Per-image normalisation can hide anomalies that are only a change of brightness, contrast or
colour. For each synthetic folder dataset (``make_synthetic_folders.py``: shape, texture, colour,
local-defect and global-intensity anomalies), each norm and each seed, this trains one EDE-GAN
and writes one JSON line with

- the label-free evidence (what ``--score auto`` reads): AUROC of every score kind on synthetic
  anomalies made from the *held-out normal training images* (brightness, contrast, colour cast
  and the other corruptions of ``pkdgan.data.synthetic``), per corruption and pooled, and the
  kind ``auto`` picks;
- for description only, the test AUROC of every kind and of the picked one.

The default is chosen from the first part alone (``scripts/norm_table.py --folders``).

    python scripts/norm_folders.py --work /work/probes/folders --log docs/results/norm/folders.jsonl

Reruns skip lines already logged (same dataset, norm, seed and settings).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DATASETS = ("blobs_stripes", "stripes_blobs", "color_hue", "local_defect", "global_shift")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the generated datasets")
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--norms", nargs="+", default=["batch", "instance"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--width", type=int, default=32)
    a = p.parse_args()
    data = a.work / "data"
    if not all((data / d).is_dir() for d in a.datasets):
        subprocess.run([sys.executable, str(Path(__file__).with_name("make_synthetic_folders.py")),
                        str(data), "--n-train", str(a.n_train), "--only", *a.datasets], check=True)
    done = set()
    if a.log.exists():
        for line in a.log.read_text().splitlines():
            r = json.loads(line)
            done.add((r["dataset"], r["norm"], r["seed"], r["settings"]))
    settings = f"n_train {a.n_train}, {a.epochs} epochs at batch {a.batch_size}, width {a.width}"
    for ds in a.datasets:
        for norm in a.norms:
            for seed in a.seeds:
                if (ds, norm, seed, settings) in done:
                    continue
                row = one_run(data / ds, norm, seed, a) | {"dataset": ds, "settings": settings}
                a.log.parent.mkdir(parents=True, exist_ok=True)
                with a.log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps({k: row[k] for k in ("dataset", "norm", "seed", "auto_pick",
                                                      "test_auroc_picked")}), flush=True)


def one_run(root: Path, norm: str, seed: int, a: argparse.Namespace) -> dict:
    from pkdgan.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from pkdgan.data.datasets import dataset_channels, one_class_split
    from pkdgan.evaluation.score_kinds import KINDS, kind_aurocs, resolve, with_combined
    from pkdgan.models.edegan import score_both
    from pkdgan.training.train import fit

    data = DataConfig(dataset="folder", data_root=str(root), holdout_fraction=0.1)
    channels = dataset_channels(data)
    cfg = RunConfig(model=ModelConfig(channels=channels, width=a.width, norm=norm),
                    data=data,
                    train=TrainConfig(epochs=a.epochs, batch_size=a.batch_size, seed=seed,
                                      drop_last=True, score="auto"))
    split = one_class_split(cfg.data, 32, channels, seed)
    t0 = time.perf_counter()
    model, _ = fit(cfg, split, progress=False)
    seconds = time.perf_counter() - t0
    g = model.generator.eval()
    held = dict(zip(("latent", "reconstruction"), (s.numpy() for s in score_both(g, split.holdout)),
                    strict=True))
    choice = resolve("auto", g, split.holdout, held)
    test = with_combined(dict(zip(("latent", "reconstruction"),
                                  (s.numpy() for s in score_both(g, split.test)), strict=True)),
                         choice["standardization"])
    test_auroc = {k.removeprefix("auroc_"): v
                  for k, v in kind_aurocs({k: test[k] for k in KINDS}, split.test_labels).items()}
    return {"norm": norm, "seed": seed, "train_seconds": round(seconds, 1),
            "auto_pick": choice["score"],
            "synthetic_auroc": {k: round(v, 4) for k, v in choice["synthetic_auroc"].items()},
            "synthetic_auroc_by_corruption": choice["synthetic_auroc_by_corruption"],
            "test_auroc": {k: round(v, 4) for k, v in test_auroc.items()},
            "test_auroc_picked": round(test_auroc[choice["score"]], 4)}


if __name__ == "__main__":
    main()
