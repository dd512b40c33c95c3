"""Figures shared by the notebooks: face grids, learning curves, confusion matrices."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .data.faceset import FaceSet
from .rundir import RunDir


def face_grid(fs: FaceSet, index, titles: list[str] | None = None, ncols: int = 8,
              landmarks: bool = False, size: float = 1.4):
    """Faces at `index` in a grid, with optional titles and landmark dots."""
    index = list(index)
    nrows = max(1, -(-len(index) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.25)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j, i in enumerate(index):
        ax = axes.flat[j]
        ax.imshow(fs.images[i].permute(1, 2, 0).numpy())
        if landmarks and fs.landmarks is not None:
            ax.scatter(*fs.landmarks[i].T.numpy(), s=6, c="lime")
        if titles:
            ax.set_title(titles[j], fontsize=7)
    fig.tight_layout()
    return fig


def learning_curves(runs: dict[str, RunDir], metrics=("test_acc", "train_acc")):
    """One panel per metric, one line per run, against the epoch."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, run in runs.items():
            m = run.metrics()
            ax.plot(m["epoch"], m[metric], marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion(cm, classes, title: str = "", ax=None):
    """Row-normalised confusion matrix (rows: label, columns: prediction) with counts in cells."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.2))
    sns.heatmap(norm, annot=cm, fmt="d", cmap="Blues", vmin=0, vmax=1, xticklabels=classes,
                yticklabels=classes, cbar=False, ax=ax, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


def save(fig, path: str | Path) -> Path:
    """Write `fig` as PNG at `path` (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
