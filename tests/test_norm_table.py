"""scripts/norm_table.py: the normalisation comparison's cells are each run's *last* epoch (or a
named one), every scoring of a BatchNorm checkpoint is its own arm, and unfinished runs count
only where they have reached the epoch asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "norm_table.py"


def row(norm: str, batch: int, cls: int, seed: int, epoch: int, auroc: float, **extra: float) -> dict:
    return {"dataset": "cifar10", "normal_class": cls, "seed": seed, "norm": norm, "batch_size": batch,
            "epochs": 4, "epoch": epoch, "train_seconds": 60.0 * epoch, "auroc_latent": auroc, **extra}


def test_cells_are_the_last_epoch_and_each_scoring_is_an_arm(tmp_path: Path) -> None:
    rows = []
    for cls in (0, 1):
        for e in range(1, 5):
            # the best epoch is never the cell: the last one is
            rows.append(row("batch", 256, cls, 0, e, 0.5 + 0.1 * (e == 2),
                            auroc_latent_per_image=0.6 + 0.01 * e, auroc_latent_test_batch64=0.4))
            rows.append(row("instance", 64, cls, 0, e, 0.7 + 0.01 * e))
    rows += [row("batch-per-image", 1, 0, 0, e, 0.65) for e in (1, 2)]  # still training
    log = tmp_path / "probes.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = subprocess.run([sys.executable, str(SCRIPT), str(log), "--epochs", "4", "--also-at", "2"],
                         capture_output=True, text=True, check=True).stdout
    verdict, rest = out.split("after epoch 4 of 4")
    last, at2 = rest.split("after epoch 2 of 4")
    assert "Verdict: pending" in verdict  # no CIFAR-10 batch-1 pairs with instance b16
    assert "| batch b256, running | 50.00 | 50.00 | 50.00 (n 2) |" in last
    assert "| batch b256, per image | 64.00 | 64.00 |" in last
    assert "| batch b256, test batch 64 (record only) | 40.00 | 40.00 |" in last
    assert "| instance b64, per image | 74.00 | 74.00 | 74.00 (n 2) |" in last
    assert "batch-per-image" not in last  # it has not reached epoch 4
    assert "| batch-per-image b1, per image | 65.00 | - |" in at2
    assert "| batch b256, running | 60.00 | 60.00 |" in at2
    assert "instance b64, per image vs batch b256, running**: mean difference +24.00 points" in last


def verdict(tmp_path: Path, gain: dict[str, float], cost_ratio: float | None, arm_d: bool = True) -> str:
    """The batch-1 verdict for batch-1 arms that differ from instance b16 by ``gain[dataset]``
    (arm F) and by 1 point less (arm D, left out without ``arm_d``), on the classes and seeds
    the rule names."""
    rows = []
    for ds, seeds in (("cifar10", (0, 1)), ("fmnist", (0,)), ("mnist", (0,))):
        for seed in seeds:
            for cls in (0, 1, 2):
                base = 0.6 + 0.05 * cls
                for norm, batch, auroc in (("instance", 16, base), ("instance", 1, base + gain[ds] / 100),
                                           ("batch-per-image", 1, base + (gain[ds] - 1) / 100)):
                    if arm_d or norm != "batch-per-image":
                        rows.append(row(norm, batch, cls, seed, 4, auroc) | {"dataset": ds})
    log = tmp_path / "probes.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    args = [sys.executable, str(SCRIPT), str(log), "--epochs", "4"]
    if cost_ratio is not None:
        cost = tmp_path / "cost.jsonl"
        cost.write_text("\n".join(json.dumps({"cpu_ratio_vs_batch16": r, "settings": {"norm": norm}})
                                  for norm, r in (("instance", cost_ratio), ("instance", 0.5),
                                                  ("batch-per-image", 0.1))) + "\n")
        args += ["--batch1-cost", str(cost)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return next(line for line in out.splitlines() if line.startswith("Verdict"))


def test_batch1_rule_needs_two_points_on_cifar_then_the_other_datasets_then_the_cost(tmp_path: Path) -> None:
    assert "instance b1, per image replaces batch 16" in verdict(
        tmp_path, {"cifar10": 2.5, "fmnist": -0.4, "mnist": 0.0}, 0.45)
    assert "batch 16 stays" in verdict(tmp_path, {"cifar10": 1.9, "fmnist": 5.0, "mnist": 5.0}, 0.45)
    assert "batch 16 stays" in verdict(tmp_path, {"cifar10": 3.0, "fmnist": 0.0, "mnist": -0.6}, 0.45)
    # the worst measured shape counts: 1 / 0.3 = 3.33x the cost of batch 16
    assert "3.33x the cost" in verdict(tmp_path, {"cifar10": 3.0, "fmnist": 0.0, "mnist": 0.0}, 0.3)
    assert "cost unmeasured" in verdict(tmp_path, {"cifar10": 3.0, "fmnist": 0.0, "mnist": 0.0}, None)
    # D is F (one computation): F's pairs alone decide
    assert "batch 16 stays" in verdict(
        tmp_path, {"cifar10": 1.0, "fmnist": 0.0, "mnist": 0.0}, 0.45, arm_d=False)
    assert "instance b1, per image replaces" in verdict(
        tmp_path, {"cifar10": 2.5, "fmnist": 0.0, "mnist": 0.0}, 0.45, arm_d=False)
