"""Run-folder checkpoints: the one checkpoint writer and reader (``write_state`` /
``read_state``, every kind of run) and the one place that reads a scoring generator back."""

from __future__ import annotations

import json
from collections.abc import Callable
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

if TYPE_CHECKING:  # annotations only: train and distill import this module
    from pkdgan.training.averaging import TailAverage
    from pkdgan.training.distill import Pair
    from pkdgan.training.train import GanState


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


FORMAT = "1"  # training-state layout; files without the key are version 1 too


def write_state(run_dir: Path, epoch: int, weights: dict[str, torch.Tensor],
                optimizers: dict[str, torch.optim.Optimizer], shuffle: torch.Generator,
                extra: dict[str, Any], config_json: str, *,
                state_only: dict[str, torch.Tensor] | None = None,
                meta: dict[str, str] | None = None, average: TailAverage | None = None) -> None:
    """The one checkpoint writer, after a completed epoch of any run.

    ``train_state`` holds everything a resume needs (the live ``weights``, ``state_only``
    tensors, the running ``average``, optimiser states, the global and shuffle RNGs) and is
    written first, so a kill between the two writes can never pair weights and optimiser state
    of different epochs; ``checkpoint`` holds ``weights`` (with the average in place of the
    averaged modules' once it has begun) alone, what scoring reads.
    """
    state = dict(weights) | (state_only or {})
    head = {"format": FORMAT, "epoch": str(epoch), **(meta or {}), "extra": json.dumps(extra)}
    scoring = dict(weights)
    if average is not None:
        state |= average.tensors()
        head |= average.meta()
        scoring |= average.scoring()
    for name, opt in optimizers.items():
        tensors, groups = runs.optimizer_to_tensors(name, opt)
        state |= tensors
        head[name] = json.dumps(groups)
    state |= {"rng.torch": torch.get_rng_state(), "rng.shuffle": shuffle.get_state()}
    runs.save_tensors(run_dir / runs.TRAIN_STATE, state, head)
    runs.save_tensors(run_dir / runs.CHECKPOINT, scoring, {"config": config_json, "epoch": str(epoch)})


def read_state(run_dir: Path, modules: dict[str, nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], shuffle: torch.Generator, *,
               what: str = "training state",
               optional: Callable[[dict[str, str]], dict[str, nn.Module]] | None = None,
               average: TailAverage | None = None,
               ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The one checkpoint reader: restores ``modules`` (by prefix), ``optional(meta)``'s modules,
    the running ``average``, the optimisers and both RNGs; returns (epochs done, extra,
    metadata).

    Reads every state written so far (GAN and distillation runs, with or without ``format``),
    including the oldest GAN states whose weights were only in ``checkpoint``.
    """
    ts_path = run_dir / runs.TRAIN_STATE
    ts = runs.load_tensors(ts_path)
    first = next(iter(modules))
    path = ts_path if any(k.startswith(f"{first}.") for k in ts) else run_dir / runs.CHECKPOINT
    weights = ts if path == ts_path else runs.load_tensors(path)
    for prefix, module in modules.items():
        runs.load_module_state(module, runs.unflatten_state(prefix, weights), path)
    try:
        with safe_open(str(ts_path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format", FORMAT) != FORMAT:
            raise ValueError(f"format {meta['format']} is newer than this pkdgan reads ({FORMAT})")
        for prefix, module in (optional(meta) if optional is not None else {}).items():
            runs.load_module_state(module, runs.unflatten_state(prefix, ts), ts_path)
        if average is not None:
            average.load(ts, meta)
        for name, opt in optimizers.items():
            runs.optimizer_from_tensors(name, opt, ts, json.loads(meta[name]))
        torch.set_rng_state(ts["rng.torch"])
        shuffle.set_state(ts["rng.shuffle"])
        extra = json.loads(meta["extra"])
        return int(meta["epoch"]), extra, meta
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise DataError(f"{ts_path}: unusable {what} ({type(e).__name__}: {e}); "
                        "delete it to restart") from None


# --- the two kinds of training state ------------------------------------------------------------


def save_gan(run_dir: Path, state: GanState, epoch: int, shuffle: torch.Generator,
             config_json: str, info: dict[str, Any], average: TailAverage | None = None) -> None:
    weights = (runs.flatten_state("generator", state.model.generator.state_dict())
               | runs.flatten_state("discriminator", state.model.discriminator.state_dict()))
    write_state(run_dir, epoch, weights, {"opt_g": state.opt_g, "opt_d": state.opt_d}, shuffle,
                info | {"d_reinits": state.d_reinits}, config_json, average=average)


def load_gan(run_dir: Path, state: GanState, shuffle: torch.Generator,
             average: TailAverage | None = None) -> tuple[int, dict[str, Any]]:
    """Restore the last completed epoch of an EDE-GAN run; returns (epochs done, extra info)."""
    m = state.model
    epoch, extra, _ = read_state(run_dir, {"generator": m.generator, "discriminator": m.discriminator},
                                 {"opt_g": state.opt_g, "opt_d": state.opt_d}, shuffle,
                                 average=average)
    state.d_reinits = int(extra.get("d_reinits", 0))
    return epoch, extra


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
               config_json: str, info: dict[str, Any], average: TailAverage | None = None) -> None:
    """Per-epoch checkpoint of a distillation (the teacher's weights too once it has trained)."""
    state_only = {}
    if pair.teacher_changed:
        state_only = runs.flatten_state("teacher_discriminator",
                                        pair.teacher.model.discriminator.state_dict())
    write_state(run_dir, epoch, _weights(pair), _optimizers(pair), shuffle,
                info | {"d_reinits": pair.student.d_reinits,
                        "teacher_d_reinits": pair.teacher.d_reinits},
                config_json, state_only=state_only,
                meta={"teacher_changed": json.dumps(pair.teacher_changed)}, average=average)


def load_state(run_dir: Path, pair: Pair, shuffle: torch.Generator,
               average: TailAverage | None = None) -> tuple[int, dict[str, Any]]:
    """Restore the last completed epoch of an interrupted distillation."""
    s, t = pair.student.model, pair.teacher.model

    def teacher(meta: dict[str, str]) -> dict[str, nn.Module]:
        if not json.loads(meta["teacher_changed"]):
            return {}
        pair.teacher_changed = True
        return {"teacher_generator": t.generator, "teacher_discriminator": t.discriminator}

    epoch, extra, _ = read_state(
        run_dir, {"generator": s.generator, "discriminator": s.discriminator,
                  "projection": pair.projection},
        _optimizers(pair), shuffle, what="distillation state", optional=teacher, average=average)
    pair.student.d_reinits = int(extra.pop("d_reinits", 0))
    pair.teacher.d_reinits = int(extra.pop("teacher_d_reinits", 0))
    return epoch, extra
