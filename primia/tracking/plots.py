"""Figures that say more than numbers: confusion matrix, ROC curves, training curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from primia.training.metrics import confusion_matrix  # noqa: E402


def confusion_figure(labels: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...], title: str) -> Figure:
    cm = confusion_matrix(labels, probs.argmax(axis=1), len(class_names))
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xticklabels=class_names,
           yticklabels=class_names, xlabel="predicted", ylabel="true", title=title)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    fig.tight_layout()
    return fig


def roc_figure(labels: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...], title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    classes = [1] if len(class_names) == 2 else range(len(class_names))
    for k in classes:
        if (labels == k).any() and (labels != k).any():
            fpr, tpr, _ = roc_curve(labels == k, probs[:, k])
            ax.plot(fpr, tpr, label=class_names[k] if len(class_names) > 2 else "positive: " + class_names[k])
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def curves_figure(history: dict[str, list[float]], title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in history.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=name)
    ax.set(xlabel="round", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reconstruction_figure(rows: list[tuple[str, np.ndarray, np.ndarray]], prior: np.ndarray, title: str) -> Figure:
    """One row per attacked image: original | reconstruction | prior (the attacker's guess without the
    update). `rows`: (label, original, reconstruction), images (C, H, W) in [0, 1]."""
    fig, axes = plt.subplots(max(len(rows), 1), 3, figsize=(6, 2 * max(len(rows), 1)), squeeze=False)
    for r, (label, original, recon) in enumerate(rows):
        for c, (img, name) in enumerate(((original, "original"), (recon, f"reconstruction\n{label}"),
                                         (prior, "prior"))):
            axes[r, c].imshow(img[0], cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(name, fontsize=7)
            axes[r, c].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
