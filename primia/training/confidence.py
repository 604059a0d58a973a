"""95% confidence intervals of test metrics: a paired percentile bootstrap over the test set.

The test set is the coordinator's held-out sample; resampling its images (labels and predictions
together) says how much a metric would move on another sample of the same size. SciPy's bootstrap
does the resampling; the statistics are ours (MCC and balanced accuracy from the confusion matrix,
ROC-AUC as in `classification_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.stats import bootstrap
from sklearn.metrics import roc_auc_score

from primia.training.metrics import balanced_accuracy_from_confusion, confusion_matrix, mcc_from_confusion

CI_METRICS = ("mcc", "roc_auc", "balanced_accuracy", "accuracy")


def _auc(y: np.ndarray, probs: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))


def _statistics(num_classes: int) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    def cm(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
        return confusion_matrix(y, probs.argmax(axis=1), num_classes)

    return {
        "mcc": lambda y, p: mcc_from_confusion(cm(y, p)),
        "roc_auc": _auc,
        "balanced_accuracy": lambda y, p: balanced_accuracy_from_confusion(cm(y, p)),
        "accuracy": lambda y, p: float(np.mean(p.argmax(axis=1) == y)),
    }


def bootstrap_ci(labels: np.ndarray, probs: np.ndarray, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """metric -> (estimate, low, high). NaN bounds where the test set is too small to resample."""
    labels, probs = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if len(labels) != len(probs):
        raise ValueError(f"bootstrap: {len(labels)} labels but {len(probs)} predictions")
    out: dict[str, tuple[float, float, float]] = {}
    index = np.arange(len(labels))
    for name, stat in _statistics(probs.shape[1]).items():
        estimate = stat(labels, probs)
        if len(labels) < 2 or math.isnan(estimate):
            out[name] = (estimate, float("nan"), float("nan"))
            continue
        res = bootstrap((index,), lambda i, s=stat: s(labels[i], probs[i]), n_resamples=resamples,  # type: ignore[misc]
                        vectorized=False, confidence_level=level, method="percentile",
                        rng=np.random.default_rng(seed))
        out[name] = (estimate, float(res.confidence_interval.low), float(res.confidence_interval.high))
    return out
