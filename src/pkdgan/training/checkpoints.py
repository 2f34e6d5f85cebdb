"""Run-folder checkpoints: the one place that reads a scoring generator back from a run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from torch import nn

from pkdgan.core import runs
from pkdgan.core.config import (
    ModelConfig,
    from_dict,
)
from pkdgan.core.errors import DataError, UsageError
from pkdgan.models.nets import build_generator

if TYPE_CHECKING:  # annotations only: distill imports this module
    from pkdgan.training.distill import Pair


def load_run_generator(run_dir: Path) -> tuple[dict[str, Any], nn.Module]:
    """Config dict and eval-mode generator of any finished or checkpointed run folder.

    Works for teacher and student runs alike: ``config.json`` names the scoring model's
    ``model`` config and the checkpoint holds its weights under ``generator.``.
    """

    run_dir = runs.require_run(Path(run_dir))
    cfg = runs.read_json(run_dir / runs.CONFIG)
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise runs.DataError(f"{run_dir / runs.CONFIG}: no model config in it")
    try:
        model_cfg = from_dict(ModelConfig, cfg["model"])
    except UsageError as e:  # a bad value in a saved run is a broken file, not a bad argument
        raise runs.DataError(f"{run_dir / runs.CONFIG}: {e}") from None
    generator = build_generator(model_cfg)
    path = run_dir / runs.CHECKPOINT
    state = runs.unflatten_state("generator", runs.load_tensors(path))
    runs.load_module_state(generator, state, path)
    return cfg, generator.eval()


def _weights(pair: Pair) -> dict[str, torch.Tensor]:
    s = pair.student.model
    w = (runs.flatten_state("generator", s.generator.state_dict())
         | runs.flatten_state("discriminator", s.discriminator.state_dict())
         | runs.flatten_state("projection", pair.projection.state_dict()))
    if pair.teacher_changed:
        w |= runs.flatten_state("teacher_generator", pair.teacher.model.generator.state_dict())
    return w


_OPTIMIZERS = ("s_opt_g", "s_opt_d", "t_opt_g", "t_opt_d")


def _optimizers(pair: Pair) -> dict[str, torch.optim.Optimizer]:
    return dict(zip(_OPTIMIZERS, (pair.student.opt_g, pair.student.opt_d,
                                  pair.teacher.opt_g, pair.teacher.opt_d), strict=True))


def save_state(run_dir: Path, pair: Pair, epoch: int, shuffle: torch.Generator,
               config_json: str, info: dict[str, Any]) -> None:
    """Per-epoch checkpoint. ``train_state`` (everything a resume needs) is written first, as in
    ``train``, so a kill between the writes never mixes epochs."""
    weights = _weights(pair)
    state = dict(weights)
    if pair.teacher_changed:
        state |= runs.flatten_state("teacher_discriminator",
                                    pair.teacher.model.discriminator.state_dict())
    meta = {"epoch": str(epoch), "teacher_changed": json.dumps(pair.teacher_changed),
            "extra": json.dumps(info | {"d_reinits": pair.student.d_reinits,
                                        "teacher_d_reinits": pair.teacher.d_reinits})}
    for name, opt in _optimizers(pair).items():
        tensors, groups = runs.optimizer_to_tensors(name, opt)
        state |= tensors
        meta[name] = json.dumps(groups)
    state |= {"rng.torch": torch.get_rng_state(), "rng.shuffle": shuffle.get_state()}
    runs.save_tensors(run_dir / runs.TRAIN_STATE, state, meta)
    runs.save_tensors(run_dir / runs.CHECKPOINT, weights, {"config": config_json, "epoch": str(epoch)})


def load_state(run_dir: Path, pair: Pair, shuffle: torch.Generator) -> tuple[int, dict[str, Any]]:
    """Restore the last completed epoch of an interrupted distillation."""
    path = run_dir / runs.TRAIN_STATE
    ts = runs.load_tensors(path)
    s, t = pair.student.model, pair.teacher.model
    runs.load_module_state(s.generator, runs.unflatten_state("generator", ts), path)
    runs.load_module_state(s.discriminator, runs.unflatten_state("discriminator", ts), path)
    runs.load_module_state(pair.projection, runs.unflatten_state("projection", ts), path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if json.loads(meta["teacher_changed"]):
            pair.teacher_changed = True
            runs.load_module_state(t.generator, runs.unflatten_state("teacher_generator", ts), path)
            runs.load_module_state(t.discriminator,
                                   runs.unflatten_state("teacher_discriminator", ts), path)
        for name, opt in _optimizers(pair).items():
            runs.optimizer_from_tensors(name, opt, ts, json.loads(meta[name]))
        torch.set_rng_state(ts["rng.torch"])
        shuffle.set_state(ts["rng.shuffle"])
        extra = json.loads(meta["extra"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: unusable distillation state ({type(e).__name__}: {e}); "
                        "delete it to restart") from None
    pair.student.d_reinits = int(extra.pop("d_reinits", 0))
    pair.teacher.d_reinits = int(extra.pop("teacher_d_reinits", 0))
    return int(meta["epoch"]), extra
