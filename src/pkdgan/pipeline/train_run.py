"""EDE-GAN run folders end to end: data, training, scores, calibration, plots and metrics (written last)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pkdgan.core import locks, runs
from pkdgan.core.config import RunConfig
from pkdgan.core.errors import DivergenceError
from pkdgan.data.datasets import one_class_split
from pkdgan.evaluation.trace import TestTrace
from pkdgan.pipeline.results import finish_run
from pkdgan.training.multi import fit_many
from pkdgan.training.train import fit


def train_run(cfg: RunConfig, run_dir: Path, resume: bool = False,
              progress: bool = True, trace: bool = False) -> dict[str, Any]:
    """Data -> fit -> scores -> metrics: the whole ``pkdgan train`` for one run folder.
    ``trace`` writes the test AUROC after every epoch (``evaluation.trace``, description only)."""
    with locks.hold(run_dir):
        # e.g. the classes a killed multi-class run had done
        done = runs.finished_metrics(run_dir, cfg.hash()) if resume else None
        if done is not None:
            return done
        split = one_class_split(cfg.data, cfg.model.image_size, cfg.model.channels, cfg.train.seed)
        on_epoch = None
        if trace:
            t = TestTrace(split, run_dir)
            on_epoch = lambda epoch, model: t(epoch, model.generator)  # noqa: E731
        model, info = fit(cfg, split, run_dir, resume=resume, progress=progress, on_epoch=on_epoch)
        extra = info | {"dataset": cfg.data.dataset, "normal_class": cfg.data.normal_class,
                        "batch_size": cfg.train.batch_size, "width": cfg.model.width,
                        "seed": cfg.train.seed, "config_hash": cfg.hash(),
                        "n_holdout": len(split.holdout)}
        metrics = finish_run(run_dir, model.generator, split, cfg.train.score, extra)
        (run_dir / runs.TRAIN_STATE).unlink(missing_ok=True)
        return metrics


def train_runs(cfgs: Sequence[RunConfig], run_dirs: Sequence[Path], resume: bool = False,
               progress: bool = True, trace: bool = False) -> list[dict[str, Any]]:
    """``train.train_run`` for several run folders trained together; metrics per folder.

    With ``resume``, folders that already finished with the same config are read back, not
    retrained (as ``train_run`` does). Runs that finish are scored and written before a
    divergence of another is reported.
    """
    with locks.hold_all(list(run_dirs)):
        metrics: dict[int, dict[str, Any]] = {}
        todo = []
        for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
            done = runs.finished_metrics(run_dir, cfg.hash()) if resume else None
            if done is not None:
                metrics[i] = done
            else:
                todo.append(i)
        splits = {i: one_class_split(cfgs[i].data, cfgs[i].model.image_size, cfgs[i].model.channels,
                                     cfgs[i].train.seed) for i in todo}
        traces = [TestTrace(splits[i], run_dirs[i]) for i in todo]
        on_epoch = (lambda k, epoch, model: traces[k](epoch, model.generator)) if trace else None
        results = fit_many([cfgs[i] for i in todo], [splits[i] for i in todo], [run_dirs[i] for i in todo],
                           resume=resume, progress=progress, on_epoch=on_epoch) if todo else []
        errors = []
        for i, res in zip(todo, results, strict=True):
            cfg, split, run_dir = cfgs[i], splits[i], run_dirs[i]
            if res.error is not None:
                errors.append(str(res.error))
                continue
            extra = res.info | {"dataset": cfg.data.dataset, "normal_class": cfg.data.normal_class,
                                "batch_size": cfg.train.batch_size, "width": cfg.model.width,
                                "seed": cfg.train.seed, "config_hash": cfg.hash(),
                                "n_holdout": len(split.holdout)}
            metrics[i] = finish_run(run_dir, res.model.generator, split, cfg.train.score, extra)
            (run_dir / runs.TRAIN_STATE).unlink(missing_ok=True)
        if errors:
            raise DivergenceError("; ".join(errors))
        return [metrics[i] for i in range(len(cfgs))]
