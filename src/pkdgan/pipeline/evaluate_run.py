"""Re-evaluating a saved run folder: from its checkpoint, or from its raw scores only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, from_dict
from pkdgan.core.errors import UsageError
from pkdgan.data.datasets import one_class_split
from pkdgan.evaluation.metrics import evaluate_scores, has_both_labels
from pkdgan.evaluation.split_scores import scores_and_choice
from pkdgan.training.checkpoints import load_run_generator


def evaluate_run(run_dir: Path, data_root: str | None = None,
                 from_scores: bool = False) -> dict[str, Any]:
    """Metrics recomputed now, with ``saved_auroc`` from ``metrics.json`` when it exists."""
    run_dir = Path(run_dir)
    saved = runs.read_json(run_dir / runs.METRICS) if runs.is_finished(run_dir) else {}
    if from_scores:
        z = runs.read_npz(run_dir / runs.SCORES)
        if "scores" not in z or "labels" not in z:
            raise runs.DataError(f"{run_dir / runs.SCORES}: needs arrays 'scores' and 'labels'")
        out = evaluate_scores(z["scores"], z["labels"])
    else:
        cfg, generator = load_run_generator(run_dir)
        data = dict(cfg.get("data", {}))
        if data_root is not None:
            data["data_root"] = data_root
        try:
            data_cfg = from_dict(DataConfig, data)
        except UsageError as e:  # a bad value in a saved run is a broken file, not a bad argument
            raise runs.DataError(f"{run_dir / runs.CONFIG}: {e}") from None
        model = cfg["model"]
        split = one_class_split(data_cfg, model["image_size"], model["channels"],
                                cfg.get("train", {}).get("seed", 0))
        if not has_both_labels(split.test_labels):
            raise runs.DataError(f"{run_dir}: its data has no test set with both normal and "
                                 "anomalous images (test/normal, test/abnormal) to evaluate on")
        s, choice = scores_and_choice(generator, split, cfg.get("train", {}).get("score", "latent"))
        out = evaluate_scores(s[choice["score"]], split.test_labels)
        out["score"] = choice["score"]
    if "auroc" in saved:
        out["saved_auroc"] = saved["auroc"]
    return out
