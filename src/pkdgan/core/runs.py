"""Run folders: atomic writes, state-dict checkpoints (safetensors), and loading them back.

Layout: ``config.json``, ``checkpoint.safetensors`` (+ ``train_state.safetensors`` while
training), ``history.csv``, ``calibration.json``, ``scores.npz``, ``metrics.json``. A run is
*finished* when ``metrics.json`` exists; it is written last, so a killed run never looks done.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from pkdgan.core.errors import DataError, UsageError
from pkdgan.core.files import atomic_write_bytes

CONFIG = "config.json"
CHECKPOINT = "checkpoint.safetensors"
TRAIN_STATE = "train_state.safetensors"
HISTORY = "history.csv"
METRICS = "metrics.json"
SCORES = "scores.npz"
MAPS = "maps.npz"  # MVTec-style runs with masks: anomaly map and mask of every test image
CALIBRATION = "calibration.json"
TEST_TRACE = "test_trace.csv"  # --trace-test: test AUROC after every epoch (a description only)

def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable JSON ({e})") from None


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except Exception as e:  # a truncated zip, a bare .npy or a bad header all land here
        raise DataError(f"{path}: unreadable npz ({type(e).__name__}: {e})") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """safetensors file written atomically; tensors are made contiguous CPU copies."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat, metadata=meta))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Never unpickles: safetensors holds raw tensors only."""
    if not path.is_file():
        raise DataError(f"missing checkpoint: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a valid safetensors checkpoint ({e})") from None


def flatten_state(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unflatten_state(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def load_module_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict`` with a one-line error when shapes or names do not match."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DataError(f"{path}: checkpoint holds NaN/Inf weights ({', '.join(bad[:3])})")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise DataError(
            f"{path}: checkpoint does not match the run's config ({detail[:200]})"
        ) from None


def optimizer_to_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Adam state -> (tensors, JSON-able param groups) so it fits in safetensors."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def optimizer_from_tensors(
    prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: dict
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    p = prefix + "."
    for k, v in tensors.items():
        if k.startswith(p):
            idx, key = k[len(p):].split(".", 1)
            state.setdefault(int(idx), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def append_history(path: Path, row: dict[str, Any]) -> None:
    """One CSV row per epoch; rewritten atomically so a kill never leaves half a line."""
    rows = read_history(path)
    rows = [r for r in rows if int(r["epoch"]) < int(row["epoch"])] + [
        {k: str(v) for k, v in row.items()}
    ]
    keys = list(row.keys())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_history(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def is_finished(run_dir: Path) -> bool:
    return (run_dir / METRICS).is_file()


def finished_metrics(run_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """A finished run's metrics when its config has ``config_hash``: what ``--resume`` returns
    instead of training again (EDE-GAN and distillation runs alike)."""
    if not is_finished(run_dir):
        return None
    saved = read_json(run_dir / CONFIG)
    if isinstance(saved, dict) and saved.get("config_hash") == config_hash:
        return read_json(run_dir / METRICS)
    return None


def prepare_folder(run_dir: Path, config: dict[str, Any], same: Callable[[dict[str, Any]], bool],
                   resume: bool) -> bool:
    """The one run-folder check before training: create ``run_dir`` or check that it holds the
    same run (``same(saved config)``), unfinished, and ``resume`` when it has a training state;
    then write ``config``. Returns True when an interrupted run should be resumed."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"{run_dir} is a file, not a folder; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_finished(run_dir):
        raise UsageError(f"{run_dir} already holds a finished run; choose another --out")
    cfg_path = run_dir / CONFIG
    has_state = (run_dir / TRAIN_STATE).is_file()
    if cfg_path.is_file():
        saved = read_json(cfg_path)
        if not (isinstance(saved, dict) and same(saved)):
            raise UsageError(f"{run_dir} holds a run with a different config; choose another --out")
        if has_state and not resume:
            raise UsageError(f"{run_dir} holds an unfinished run; pass --resume to continue it")
    write_json(cfg_path, config)
    return resume and has_state


def require_run(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder not found: {run_dir}")
    if not (run_dir / CONFIG).is_file():
        raise DataError(f"{run_dir}: not a run folder (no {CONFIG})")
    if not (run_dir / CHECKPOINT).is_file():
        raise DataError(f"{run_dir}: run folder has no {CHECKPOINT}")
    return run_dir
