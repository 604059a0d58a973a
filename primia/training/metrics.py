"""Classification metrics: accuracy, balanced accuracy, MCC, ROC-AUC (one-vs-rest macro),
per-class sensitivity and specificity, and the confusion matrix.

MCC and balanced accuracy are computed from the confusion matrix, so they pool exactly across
hospitals by summing matrices (how federated validation is scored without sharing predictions).
ROC-AUC uses MONAI's implementation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import compute_roc_auc


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    idx = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mcc_from_confusion(cm: np.ndarray) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); 0 when undefined, as scikit-learn."""
    cm = np.asarray(cm, dtype=np.float64)
    t, p = cm.sum(axis=1), cm.sum(axis=0)
    c, s = np.trace(cm), cm.sum()
    denom = math.sqrt(s * s - p @ p) * math.sqrt(s * s - t @ t)
    return 0.0 if denom == 0 else float((c * s - t @ p) / denom)


def per_class_rates(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) per class, one-vs-rest; NaN where a class is absent."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fn, fp = cm.sum(axis=1) - tp, cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fn), tn / (tn + fp)


def balanced_accuracy_from_confusion(cm: np.ndarray) -> float:
    sens, _ = per_class_rates(cm)
    present = ~np.isnan(sens)
    return float(sens[present].mean()) if present.any() else 0.0


def roc_auc_ovr(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC-AUC; NaN when fewer than two classes are present."""
    num_classes = probs.shape[1]
    if len(np.unique(y_true)) < 2:
        return float("nan")
    if num_classes == 2:
        y = torch.as_tensor(y_true, dtype=torch.int64)
        return float(np.asarray(compute_roc_auc(torch.as_tensor(probs[:, 1]), y)))
    onehot = np.eye(num_classes, dtype=np.float32)[y_true]
    present = onehot.sum(axis=0) > 0  # an absent class has no ROC curve; score over the rest
    auc = compute_roc_auc(torch.as_tensor(probs[:, present]), torch.as_tensor(onehot[:, present]), average="macro")
    return float(np.asarray(auc))


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    """All scalar metrics for one evaluation, flat, ready for MLflow."""
    k = len(class_names)
    cm = confusion_matrix(y_true, probs.argmax(axis=1), k)
    sens, spec = per_class_rates(cm)
    out = {
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "balanced_accuracy": balanced_accuracy_from_confusion(cm),
        "mcc": mcc_from_confusion(cm),
        "roc_auc": roc_auc_ovr(y_true, probs),
    }
    for name, se, sp in zip(class_names, sens, spec, strict=True):
        out[f"sensitivity_{name}"] = float(se)
        out[f"specificity_{name}"] = float(sp)
    return out
