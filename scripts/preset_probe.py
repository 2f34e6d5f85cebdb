"""Research probe for the CPU preset (issue 10): AUROC of both scores after each epoch.

Trains one EDE-GAN teacher with ``pkdgan train``'s settings and, after every epoch, scores the
test set (latent and reconstruction) and appends a JSON line with the cumulative training
seconds. Test labels here only *describe* the schedule search on a few classes; they choose
nothing inside a run, and the preset chosen from them is then fixed for every class.

    python scripts/preset_probe.py --dataset fmnist --normal-class 0 --batch-size 64 \
        --epochs 15 --drop-last --precision bf16 --seed 0 --log probes.jsonl \
        --run-dir /work/probes/fmnist0-b64-bf16

With ``--run-dir`` the probe checkpoints every epoch and a rerun of the same command resumes
from the last finished one (a killed probe loses at most one epoch); epochs already in the log
are not logged twice, and ``train_seconds`` is the run's own cumulative epoch time
(``history.csv``), so a resumed curve reads like an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pkdgan.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pkdgan.data.datasets import one_class_split
from pkdgan.evaluation.metrics import evaluate_scores
from pkdgan.evaluation.score_kinds import combine, standardization
from pkdgan.models.edegan import EDEGANModel, score_both


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--normal-class", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--latent-constraint", default="none")
    p.add_argument("--constraint-weight", type=float, default=1.0)
    p.add_argument("--w-adv", type=float, default=1.0)
    p.add_argument("--w-con", type=float, default=50.0)
    p.add_argument("--w-lat", type=float, default=1.0)
    p.add_argument("--drop-last", action="store_true")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--norm", default="batch", help="batch, batch-per-image or instance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, default=None,
                   help="checkpoint here after every epoch and resume from it")
    p.add_argument("--classes", default=None,
                   help="several normal classes (e.g. 0,1,2) trained together, one model each, at "
                        "batch 1 (pkdgan.training.multi); run folders RUN_DIR/class_K")
    a = p.parse_args()
    from pkdgan.training.train import fit

    if a.classes is None:
        cfg, split, on_epoch = make_probe(a, a.normal_class, a.run_dir)
        if on_epoch is None:
            return
        if a.run_dir is not None and (a.run_dir / "train_state.safetensors").exists():
            catch_up(a.run_dir, cfg, split, on_epoch)
        fit(cfg, split, run_dir=a.run_dir, resume=a.run_dir is not None, progress=False,
            on_epoch=on_epoch)
        return
    from pkdgan.training.multi import fit_many

    if a.batch_size != 1 or a.run_dir is None:
        p.error("--classes trains at --batch-size 1 and needs --run-dir")
    probes = [(k, *make_probe(a, k, a.run_dir / f"class_{k}")) for k in map(int, a.classes.split(","))]
    probes = [pr for pr in probes if pr[3] is not None]
    for k, cfg, split, on_epoch in probes:
        if (a.run_dir / f"class_{k}" / "train_state.safetensors").exists():
            catch_up(a.run_dir / f"class_{k}", cfg, split, on_epoch)
    if probes:
        fit_many([pr[1] for pr in probes], [pr[2] for pr in probes],
                 [a.run_dir / f"class_{pr[0]}" for pr in probes], resume=True, progress=False,
                 on_epoch=lambda i, epoch, model: probes[i][3](epoch, model))


def make_probe(a: argparse.Namespace, normal_class: int, run_dir: Path | None):  # noqa: ANN201
    """(config, split, per-epoch logger), the logger None when every epoch is logged already."""
    from pkdgan.core.config import LossWeights
    from pkdgan.data.datasets import DATASET_CHANNELS

    cfg = RunConfig(
        model=ModelConfig(channels=DATASET_CHANNELS[a.dataset], nz=a.nz, width=a.width,
                          latent_constraint=a.latent_constraint,
                          constraint_weight=a.constraint_weight, norm=a.norm),
        loss=LossWeights(adversarial=a.w_adv, contextual=a.w_con, latent=a.w_lat),
        data=DataConfig(dataset=a.dataset, data_root=a.data_root, normal_class=normal_class),
        train=TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                          drop_last=a.drop_last, precision=a.precision),
    )
    split = one_class_split(cfg.data, 32, cfg.model.channels, a.seed)
    train_seconds = 0.0
    last = [time.perf_counter()]

    logged = logged_epochs(a.log, cfg.hash(), normal_class, a.seed)
    if logged >= set(range(1, a.epochs + 1)):
        print(f"already logged: {a.dataset} class {normal_class} ({cfg.hash()})", flush=True)
        return cfg, split, None

    def on_epoch(epoch: int, model: EDEGANModel) -> None:
        nonlocal train_seconds
        train_seconds += time.perf_counter() - last[0]
        if run_dir is not None:
            train_seconds = history_seconds(run_dir, epoch)
        if epoch in logged:
            last[0] = time.perf_counter()
            return
        lat, rec = score_both(model.generator, split.test)
        held_lat, held_rec = score_both(model.generator, split.holdout)
        stats = standardization({"latent": held_lat.numpy(), "reconstruction": held_rec.numpy()})
        comb = combine(lat.numpy(), rec.numpy(), stats)
        row = {"dataset": a.dataset, "normal_class": normal_class, "seed": a.seed,
               "batch_size": a.batch_size, "width": a.width, "nz": a.nz, "lr": a.lr,
               "latent_constraint": a.latent_constraint,
               "constraint_weight": a.constraint_weight, "w_adv": a.w_adv, "w_con": a.w_con,
               "w_lat": a.w_lat,
               "drop_last": a.drop_last, "precision": a.precision, "norm": a.norm,
               "epochs": a.epochs, "epoch": epoch,
               "train_seconds": round(train_seconds, 1), "config_hash": cfg.hash(),
               "auroc_latent": round(evaluate_scores(lat.numpy(), split.test_labels)["auroc"], 4),
               "auroc_reconstruction": round(
                   evaluate_scores(rec.numpy(), split.test_labels)["auroc"], 4),
               "auroc_combined": round(evaluate_scores(comb, split.test_labels)["auroc"], 4)}
        row |= other_normalisations(model.generator, split) if a.norm == "batch" else {}
        with a.log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        last[0] = time.perf_counter()

    return cfg, split, on_epoch


def other_normalisations(generator, split) -> dict[str, float]:
    """A BatchNorm model's latent AUROC scored per image (its own statistics, affine kept) and,
    for the record only, in training mode over test batches of 64 (a score that depends on the
    other images of its batch, so never a mode of pkdgan)."""
    import copy

    import torch

    from pkdgan.models.edegan import cat_scores, score_batches
    from pkdgan.models.nets import with_per_image_norm

    per_image, _ = score_both(with_per_image_norm(generator), split.test)
    batch_mode = copy.deepcopy(generator).train()  # a copy: running statistics stay untouched
    with torch.no_grad():
        in_batches, _ = cat_scores(score_batches(batch_mode, split.test, 64))
    auroc = lambda s: round(evaluate_scores(s.numpy(), split.test_labels)["auroc"], 4)  # noqa: E731
    return {"auroc_latent_per_image": auroc(per_image), "auroc_latent_test_batch64": auroc(in_batches)}


def logged_epochs(log: Path, config_hash: str, normal_class: int, seed: int) -> set[int]:
    """Epochs of this configuration already in the log (a resumed probe skips them)."""
    if not log.exists():
        return set()
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {r["epoch"] for r in rows if r.get("config_hash") == config_hash
            and r["normal_class"] == normal_class and r["seed"] == seed}


def history_seconds(run_dir: Path, epoch: int) -> float:
    """Cumulative training seconds of the first ``epoch`` epochs, from the run's history."""
    from pkdgan.core.runs import HISTORY, read_history

    rows = read_history(run_dir / HISTORY)
    return round(sum(float(r["seconds"]) for r in rows if int(r["epoch"]) <= epoch), 1)


def catch_up(run_dir: Path, cfg: RunConfig, split, on_epoch) -> None:
    """Log the checkpointed epoch when the probe died between its checkpoint and its log line."""
    import torch

    from pkdgan.training.checkpoints import load_gan
    from pkdgan.training.train import GanState

    state = GanState.create(cfg.model, cfg.train, torch.device("cpu"))
    epoch, _ = load_gan(run_dir, state, torch.Generator())
    if epoch > 0:  # on_epoch skips an epoch already logged
        state.model.eval()
        on_epoch(epoch, state.model)


if __name__ == "__main__":
    import sys

    from pkdgan.core.errors import PkdganError

    try:
        main()
    except PkdganError as e:  # e.g. --run-dir holding another configuration: one line, no traceback
        sys.exit(f"preset_probe.py: error: {e}")
