"""Galleries for the HTML report: the test images a run gets most wrong or most sure, as tiles.

Which images is decided by the run's own recorded scores (``scores.npz``); the pictures need
the model (checkpoint) and the test images (re-read from the run's data config). Each image
becomes one small PNG: input / reconstruction / |difference| stacked, with one column per model
(teacher beside student for a distilled run), so the browser scales it without blurring.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pkdgan.core import runs
from pkdgan.core.errors import DataError, PkdganError
from pkdgan.reports.plots import difference_map, run_test_set, tile_rows
from pkdgan.training.checkpoints import load_run_generator

N_GALLERY = 8
DISPLAY_PX = 72  # about how wide one model's column is shown, in CSS pixels
KINDS = {
    "anomalous": "Most anomalous: the test images with the highest scores",
    "false_alarms": "False alarms: the normal test images with the highest scores",
    "misses": "Misses: the anomalous test images with the lowest scores",
}


@dataclass(frozen=True)
class Tile:
    """One gallery image: PNG bytes, the width to show it at, its test index, label and class,
    and (model, score) for each column."""

    png: bytes
    width: int
    index: int
    label: int
    cls: int
    scores: list[tuple[str, float]]
    group: str = ""  # MVTec-style runs: the image's defect type ("good" = normal)


@dataclass(frozen=True)
class Galleries:
    """Tiles per gallery kind; ``models`` names the tile columns (e.g. teacher, student)."""

    models: list[str]
    score: str
    tiles: dict[str, list[Tile]]
    note: str = ""
    rows: tuple[str, ...] = ("input", "reconstruction", "|difference|")


def pick(scores: np.ndarray, labels: np.ndarray, k: int = N_GALLERY) -> dict[str, np.ndarray]:
    """Test indices per gallery kind, most extreme first (stable sort: ties keep test order)."""
    labels = np.asarray(labels).astype(bool)
    desc = np.argsort(-scores, kind="stable")
    asc = np.argsort(scores, kind="stable")
    return {"anomalous": desc[:k], "false_alarms": desc[~labels[desc]][:k],
            "misses": asc[labels[asc]][:k]}


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@torch.no_grad()
def _reconstruct(generator: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    device = next(generator.parameters()).device
    return generator.eval()(x.to(device))[1].float().cpu()


Model = tuple[str, torch.nn.Module, np.ndarray]


def _teacher(cfg: dict[str, Any], run_dir: Path, n_test: int) -> tuple[Model | None, str]:
    """A distilled run's teacher (its own run folder: checkpoint and recorded scores on the same
    test set), or why it is not shown."""

    ref = cfg.get("teacher_run")
    if cfg.get("kind") != "distill" or not ref:
        return None, ""
    path = Path(ref) if Path(ref).is_absolute() else run_dir / ref
    try:
        generator = load_run_generator(path)[1]
        scores = runs.read_npz(path / runs.SCORES)["scores"]
    except (PkdganError, KeyError) as e:
        return None, f"teacher not shown: {e}"
    if len(scores) != n_test:
        return None, f"teacher not shown: {path} scored another test set ({len(scores)} images)"
    return ("teacher", generator, scores), ""


def build(run_dir: Path, cfg: dict[str, Any], z: dict[str, np.ndarray], score: str,
          data_root: str | None = None, k: int = N_GALLERY) -> Galleries:
    """Galleries of a finished run; raises ``PkdganError`` saying why they cannot be drawn."""

    _, student = load_run_generator(run_dir)
    images, labels = run_test_set(cfg, data_root)
    if len(images) != len(z["labels"]) or not np.array_equal(np.asarray(labels), z["labels"]):
        raise DataError(f"the test set read now ({len(images)} images) is not the one the run "
                        f"scored ({len(z['labels'])}); was the data changed?")
    teacher, note = _teacher(cfg, run_dir, len(z["labels"]))
    models: list[Model] = ([teacher, ("student", student, z["scores"])] if teacher is not None
                           else [("model", student, z["scores"])])
    classes = z.get("classes", z["labels"])
    located = runs.read_npz(run_dir / runs.MAPS) if (run_dir / runs.MAPS).is_file() else None
    tiles: dict[str, list[Tile]] = {}
    for kind, idx in pick(z["scores"], z["labels"], k).items():
        x = images[torch.as_tensor(idx, dtype=torch.long)].float()
        recons = [_reconstruct(g, x) for _, g, _ in models]
        tiles[kind] = []
        for j, i in enumerate(idx):
            xi = x[j : j + 1].repeat(len(models), 1, 1, 1)
            x_hat = torch.cat([r[j : j + 1] for r in recons])
            rows = [xi, x_hat, difference_map(xi, x_hat)]
            if located is not None:
                rows += _map_and_mask(xi, x_hat, located[f"mask_{i}"])
            arr = tile_rows(rows)
            width = arr.shape[1] * max(2, DISPLAY_PX // (x.shape[-1] + 2))  # whole-pixel zoom
            group = str(located["groups"][i]) if located is not None else ""
            tiles[kind].append(Tile(png_bytes(arr), width, int(i), int(z["labels"][i]), int(classes[i]),
                                    [(name, float(s[i])) for name, _, s in models], group))
    rows_named = Galleries.rows + (("anomaly map", "mask") if located is not None else ())
    return Galleries([name for name, _, _ in models], score, tiles, note, rows_named)


def _map_and_mask(x: torch.Tensor, x_hat: torch.Tensor, mask: np.ndarray) -> list[torch.Tensor]:
    """Rows of an MVTec-style tile: each model's anomaly map over the input (the run's map
    definition, at the model's size) and the ground-truth mask (white = defect)."""
    from pkdgan.evaluation.pixel import maps_from, overlay
    from pkdgan.inference.predict import to_uint8_image

    maps = maps_from(x, x_hat).numpy()
    heat = [overlay(to_uint8_image(xi), m) for xi, m in zip(x, maps, strict=True)]
    heat_t = torch.from_numpy(np.stack(heat)).permute(0, 3, 1, 2).float() / 127.5 - 1
    size = x.shape[-2:]
    m = torch.nn.functional.interpolate(torch.from_numpy(mask).float()[None, None], size=tuple(size),
                                        mode="nearest")
    return [heat_t, (m * 2 - 1).repeat(len(x), 1, 1, 1)]


def load(run_dir: Path, cfg: dict[str, Any], z: dict[str, np.ndarray], score: str,
         data_root: str | None = None) -> tuple[Galleries | None, str]:
    """(galleries, "") or (None, why not): a missing checkpoint or data leaves the page without them."""
    if not (run_dir / runs.CHECKPOINT).is_file():
        return None, f"no {runs.CHECKPOINT} in the run folder (checkpoint not kept)"
    try:
        return build(run_dir, cfg, z, score, data_root), ""
    except PkdganError as e:
        return None, str(e)
