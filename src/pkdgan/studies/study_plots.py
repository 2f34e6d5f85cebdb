"""A study's figures: per-class AUROC bars, AUROC against batch size, ROC curves per class."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pkdgan.core import runs
from pkdgan.studies.specs import (
    RunSpec,
)
from pkdgan.studies.stats import Column, Locate, Table, class_stats, mean_stats


def plot_per_class(path: Path, table: Table, labels: list[str], classes: list[int]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(classes) + 2), 3.4))
    width = 0.8 / len(labels)
    for i, lab in enumerate(labels):
        st = [class_stats(table[lab], k) for k in classes]
        x = np.arange(len(classes)) + (i - (len(labels) - 1) / 2) * width
        ax.bar(x, [s[0] for s in st], width, yerr=[s[1] for s in st], label=lab, capsize=2)
    ax.set_xticks(np.arange(len(classes)), [str(k) for k in classes])
    ax.set_xlabel("normal class")
    ax.set_ylabel("AUROC (%)")
    lo = min((v for lab in labels for v in table[lab].values()), default=50.0)
    ax.set_ylim(max(0.0, lo - 5), 100)
    ax.legend(fontsize=7, ncol=min(4, len(labels)))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_batch_curve(path: Path, table: Table, labels: list[str], classes: list[int]) -> None:
    import matplotlib.pyplot as plt

    sizes = [int(lab.split("=")[1]) for lab in labels]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for k in classes:
        ax.plot(sizes, [class_stats(table[lab], k)[0] for lab in labels], alpha=0.35, lw=1,
                label=f"class {k}")
    st = [mean_stats(table[lab], classes) for lab in labels]
    ax.errorbar(sizes, [s[0] for s in st], yerr=[s[1] for s in st], color="k", lw=2, capsize=3,
                label="mean")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("AUROC (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_roc(path: Path, specs: list[RunSpec], locate: Locate, cols: list[Column],
             classes: list[int]) -> None:
    """ROC curves of each column for each class, from the lowest finished seed."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    ncol = min(5, len(classes))
    nrow = math.ceil(len(classes) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol, 2.3 * nrow), squeeze=False)
    for ax, k in zip(axes.flat, classes, strict=False):
        for c in cols:
            runs_k = sorted((s for s in specs if s.arm == c.arm and s.normal_class == k
                             and runs.is_finished(locate(s))), key=lambda s: s.seed)
            if not runs_k:
                continue
            z = runs.read_npz(locate(runs_k[0]) / runs.SCORES)
            fpr, tpr, _ = roc_curve(z["labels"], z[c.npz])
            ax.plot(fpr, tpr, lw=1, label=c.label)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_title(f"class {k}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(classes):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("ROC curves (lowest finished seed of each class)", fontsize=9)
    fig.supxlabel("false positive rate", fontsize=8)
    fig.supylabel("true positive rate", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
