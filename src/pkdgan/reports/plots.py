"""Plots of a run folder: ROC, score histograms with the threshold, reconstructions, losses.

Written into ``RUN_DIR/plots/`` when a run finishes and by ``pkdgan plot``. Figures are built
with matplotlib's object API (no pyplot), so nothing depends on, or changes, a global backend.
Test labels only colour the figures; they choose nothing.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pkdgan.core import runs
from pkdgan.core.config import DataConfig, from_dict
from pkdgan.core.errors import DataError, PkdganError, UsageError
from pkdgan.data.datasets import one_class_split
from pkdgan.evaluation.metrics import has_both_labels
from pkdgan.inference.predict import to_uint8_image
from pkdgan.models.edegan import score_generator
from pkdgan.training.checkpoints import load_run_generator

PLOTS_DIR = "plots"
ROC = "roc.png"
HISTOGRAM = "score_histogram.png"
RECONSTRUCTIONS = "reconstructions.png"
LOSSES = "losses.png"
N_RECON = 8
NOT_LOSSES = {"epoch", "step", "structure", "seconds", "images_per_second", "d_reinits", "teacher_d_reinits"}


def _figure(width: float, height: float, **margins: float) -> Any:
    """Fixed margins instead of a layout engine: it would double the time of every run's plots."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(**({"left": 0.12, "right": 0.97, "top": 0.91, "bottom": 0.12} | margins))
    return fig


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a figure: the run folder's files and the HTML report embed the same images."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _save(fig: Any, path: Path) -> Path:
    runs.atomic_write_bytes(path, figure_png(fig))
    return path


def plot_roc(scores: dict[str, np.ndarray], labels: np.ndarray, path: Path) -> Path:
    return _save(roc_figure(scores, labels), path)


def roc_figure(scores: dict[str, np.ndarray], labels: np.ndarray) -> Any:
    """One ROC curve per score kind (the paper's point: latent beats reconstruction)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _figure(5, 4.6, left=0.13)
    ax = fig.add_subplot()
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} score (AUROC {roc_auc_score(labels, s):.4f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="chance")
    ax.set(xlabel="false-positive rate (normal flagged)", ylabel="true-positive rate (anomalies flagged)",
           xlim=(0, 1), ylim=(0, 1.01), title="ROC on the test set")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _bins(values: np.ndarray, n: int = 60) -> tuple[np.ndarray, bool]:
    """Log-spaced bins when scores span orders of magnitude (latent scores usually do)."""
    lo, hi = float(values.min()), float(values.max())
    if lo > 0 and hi / lo > 100:
        return np.geomspace(lo, hi, n + 1), True
    return np.linspace(lo, hi if hi > lo else lo + 1e-12, n + 1), False


def plot_histograms(scores: np.ndarray, labels: np.ndarray, path: Path, threshold: float | None = None,
                    holdout: np.ndarray | None = None, score_name: str = "latent") -> Path:
    return _save(histogram_figure(scores, labels, threshold, holdout, score_name), path)


def histogram_figure(scores: np.ndarray, labels: np.ndarray, threshold: float | None = None,
                     holdout: np.ndarray | None = None, score_name: str = "latent") -> Any:
    """Normal vs anomalous test scores, the held-out normal scores, and the fitted threshold."""
    labels = np.asarray(labels).astype(bool)
    groups = [(scores[~labels], "normal (test)", "tab:blue"), (scores[labels], "anomalous (test)", "tab:red")]
    every = [scores] + ([holdout] if holdout is not None and len(holdout) else [])
    bins, log = _bins(np.concatenate(every))
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for values, name, colour in groups:
        ax.hist(values, bins=bins, density=True, histtype="stepfilled", alpha=0.45, color=colour,
                label=f"{name}, n={len(values)}")
    if holdout is not None and len(holdout):
        ax.hist(holdout, bins=bins, density=True, histtype="step", color="k", lw=1.2,
                label=f"normal (held out from training), n={len(holdout)}")
    if threshold is not None:
        flagged = scores > threshold
        ax.axvline(threshold, color="k", ls="--", lw=1.2,
                   label=f"threshold {threshold:.4g}: test FPR {flagged[~labels].mean():.3f}, "
                         f"TPR {flagged[labels].mean():.3f}")
    if log:
        ax.set_xscale("log")
    ax.set(xlabel=f"{score_name} anomaly score", ylabel="density",
           title="Test scores; threshold from held-out normal images")
    ax.legend(fontsize=7)
    return fig


def difference_map(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean |x - x_hat| in [-1, 1] on a fixed scale (half the range = white), so maps
    of different images and models are comparable."""
    return (x - x_hat).abs().mean(1, keepdim=True).clamp(0, 1) * 2 - 1


def tile_rows(rows: list[torch.Tensor]) -> np.ndarray:
    """Image batches as rows of grey-bordered tiles, uint8 RGB (one row per batch)."""

    out = []
    for t in rows:
        tiles = [np.pad(to_uint8_image(img), ((1, 1), (1, 1), (0, 0)), constant_values=128) for img in t]
        out.append(np.concatenate(tiles, axis=1))
    return np.concatenate(out, axis=0)


def _grid(x: torch.Tensor, x_hat: torch.Tensor) -> np.ndarray:
    """Rows input / reconstruction / |difference|, uint8 RGB."""
    return tile_rows([x, x_hat, difference_map(x, x_hat)])


@torch.no_grad()
def plot_reconstructions(generator: nn.Module, images: torch.Tensor, labels: np.ndarray, path: Path,
                         score: str = "latent", scores: np.ndarray | None = None) -> Path:
    """The first normal and the first anomalous test images with reconstructions and errors.

    ``scores`` (of every test image, e.g. the run's saved ones) label the images; without them
    the raw ``score`` kind is computed.
    """

    labels = np.asarray(labels).astype(bool)
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    groups = [(np.flatnonzero(~labels)[:N_RECON], "normal"), (np.flatnonzero(labels)[:N_RECON], "anomalous")]
    groups = [(idx, name) for idx, name in groups if len(idx)]
    if not groups:
        raise DataError("no test images to reconstruct")
    fig = _figure(1.0 * N_RECON + 1.2, 3.1 * len(groups), left=0.13, right=0.99, top=0.95,
                  bottom=0.04, hspace=0.25)
    for k, (idx, name) in enumerate(groups):
        x = images[torch.as_tensor(idx)].float()
        _, x_hat, _ = generator(x.to(device))
        s = scores[idx] if scores is not None else score_generator(generator, x, score).numpy()
        ax = fig.add_subplot(len(groups), 1, k + 1)
        ax.imshow(_grid(x, x_hat.float().cpu()), interpolation="nearest")
        size = x.shape[-1] + 2
        ax.set_yticks([size * (i + 0.5) for i in range(3)], ["input", "reconstruction", "|difference|"])
        ax.set_xticks([size * (i + 0.5) for i in range(len(idx))], [f"{v:.3g}" for v in s], fontsize=7)
        ax.set_title(f"{name} test images ({score} score below each)", fontsize=9)
        ax.tick_params(length=0)
    generator.train(was_training)
    return _save(fig, path)


def plot_losses(history: list[dict[str, str]], path: Path) -> Path:
    return _save(losses_figure(history), path)


def losses_figure(history: list[dict[str, str]]) -> Any:
    """Every loss column of ``history.csv`` per epoch, one panel each (their scales differ)."""
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise DataError("empty training history")
    epochs = np.array([float(r["epoch"]) for r in history])
    columns = {}
    for key in history[0]:
        if key in NOT_LOSSES:
            continue
        values = np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in history])
        if np.isfinite(values).any() and np.nanmax(np.abs(values)) > 0:
            columns[key] = values
    if not columns:
        raise DataError("no loss columns in the training history")
    steps = [r.get("step") for r in history]
    boundaries = [epochs[i] + 0.5 for i in range(len(steps) - 1) if steps[i] != steps[i + 1]]
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = _figure(3.4 * ncols, 2.4 * nrows, left=0.08, right=0.98, top=1 - 0.35 / nrows,
                  bottom=0.2 / nrows, hspace=0.65, wspace=0.3)
    for i, (key, values) in enumerate(columns.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.plot(epochs, values, marker="o", ms=3, lw=1.4)
        if np.nanmin(values) > 0 and np.nanmax(values) / np.nanmin(values) > 20:
            ax.set_yscale("log")
        for b in boundaries:  # progressive distillation: where step 2 (joint) begins
            ax.axvline(b, color="grey", ls=":", lw=1)
        ax.set_xlim(epochs.min() - 0.3, epochs.max() + 0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    note = "; dotted: next distillation step" if boundaries else ""
    fig.suptitle(f"Training losses (epoch means{note})", fontsize=10)
    return fig


def write_run_plots(run_dir: Path, generator: nn.Module | None = None, images: torch.Tensor | None = None,
                    labels: np.ndarray | None = None) -> list[Path]:
    """Every plot the run folder's files allow; the reconstruction grid needs the test images."""
    run_dir = Path(run_dir)
    out = run_dir / PLOTS_DIR
    written: list[Path] = []
    calibration = runs.read_json(run_dir / runs.CALIBRATION) if (run_dir / runs.CALIBRATION).is_file() else {}
    score = calibration.get("score", "latent")
    z = runs.read_npz(run_dir / runs.SCORES) if (run_dir / runs.SCORES).is_file() else None
    if z is not None and has_both_labels(z["labels"]):  # no ROC without both kinds of image
        kinds = {k: z[k] for k in ("latent", "reconstruction", "combined") if k in z}
        written.append(plot_roc(kinds or {score: z["scores"]}, z["labels"], out / ROC))
        written.append(plot_histograms(z["scores"], z["labels"], out / HISTOGRAM,
                                       calibration.get("threshold"), z.get(f"holdout_{score}"), score))
    if generator is not None and images is not None and labels is not None and len(images):
        saved = z["scores"] if z is not None and len(z["scores"]) == len(images) else None
        written.append(plot_reconstructions(generator, images, labels, out / RECONSTRUCTIONS, score, saved))
    history = runs.read_history(run_dir / runs.HISTORY)
    if history:
        written.append(plot_losses(history, out / LOSSES))
    return written


def run_test_set(cfg: dict[str, Any], data_root: str | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """The test images and labels a run was scored on, re-read from its data config and split seed."""

    data = dict(cfg.get("data", {})) | ({"data_root": data_root} if data_root is not None else {})
    model = cfg["model"]
    try:
        data_cfg = from_dict(DataConfig, data)
    except UsageError as e:  # a bad value in a saved run is a broken file, not a bad argument
        raise DataError(f"the run's data config: {e}") from None
    split = one_class_split(data_cfg, model["image_size"], model["channels"],
                            int(cfg.get("split_seed", cfg.get("train", {}).get("seed", 0))))
    return split.test, split.test_labels


def replot_run(run_dir: Path, data_root: str | None = None, reconstructions: bool = True) -> list[Path]:
    """``pkdgan plot``: all plots again; the test images are re-read from the run's data config."""

    run_dir = runs.require_run(Path(run_dir))
    generator = images = labels = None
    if reconstructions:
        cfg, generator = load_run_generator(run_dir)
        try:
            images, labels = run_test_set(cfg, data_root)
        except PkdganError as e:
            warnings.warn(f"reconstruction grid skipped: the test images cannot be read ({e})", stacklevel=2)
    written = write_run_plots(run_dir, generator, images, labels)
    if not written:
        raise DataError(f"{run_dir}: nothing to plot (no {runs.SCORES}, no {runs.HISTORY})")
    return written
