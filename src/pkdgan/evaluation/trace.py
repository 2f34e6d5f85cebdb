"""Test AUROC after every epoch, beside a run's history: a description of the schedule.

Research on the recipe asks how a fixed schedule ends (does the last epoch sit on a plateau or on
a swing?), which only the test labels can show. ``TestTrace`` writes those AUROCs to
``test_trace.csv`` and nothing reads them back: the model kept is the last epoch's (or the mean
of the last few, ``--average-last``, fixed before training; the trace scores the live weights, so
its last row against ``metrics.json`` shows what the average did), and no epoch, threshold,
score or normalisation is chosen from the file. It costs one scoring pass
of the test set per epoch (and of the teacher's, in epochs that train it), so it is opt-in
(``--trace-test``).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pkdgan.core import runs
from pkdgan.data.datasets import OneClassSplit
from pkdgan.evaluation.metrics import evaluate_scores, has_both_labels
from pkdgan.models.edegan import score_both


class TestTrace:
    """``(epochs_done, generator, trained_teacher_or_None)`` -> one row of ``test_trace.csv``."""

    __test__ = False  # not a pytest class

    def __init__(self, split: OneClassSplit, run_dir: Path) -> None:
        self.split, self.path = split, Path(run_dir) / runs.TEST_TRACE

    def _aurocs(self, generator: nn.Module) -> tuple[float, float]:
        lat, rec = score_both(generator, self.split.test)
        labels = self.split.test_labels
        return (evaluate_scores(lat.numpy(), labels)["auroc"],
                evaluate_scores(rec.numpy(), labels)["auroc"])

    def __call__(self, epoch: int, generator: nn.Module, teacher: nn.Module | None = None) -> None:
        if not has_both_labels(self.split.test_labels):
            return
        lat, rec = self._aurocs(generator)
        row = {"epoch": epoch, "auroc_latent": f"{lat:.6f}", "auroc_reconstruction": f"{rec:.6f}",
               "teacher_auroc_latent": "" if teacher is None else f"{self._aurocs(teacher)[0]:.6f}"}
        runs.append_history(self.path, row)
